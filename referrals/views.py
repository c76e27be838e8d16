"""Referral pages: the outgoing and incoming lists, the new-referral form, the case page with
its actions, the slip PDF, the desk's appointment calendar and the desk page.

Every page asks referrals.access who may see and do what, reads through referrals.selectors
and writes through referrals.services; no rule and no save lives here. The whole feature is
absent (404) where the institution's "referrals" module is off.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance import audit
from alliance.access import AccessDenied, Principal, principal_of
from alliance.forms import apply_service_errors, error_text
from imaging import films, worklist
from imaging.forms import ExamForm
from imaging.models import ScheduledStep
from imaging.routing import access as routing_access
from referrals import access, pdf, selectors, services
from referrals.forms import (
    ACTION_FORMS,
    AcceptForm,
    CalendarForm,
    DeskAddForm,
    ListFilterForm,
    MessageForm,
    ReferralForm,
)
from referrals.models import ACTION_LABELS, Direction, Referral

PAGE_SIZE = 25
SIDES = ("outgoing", "incoming")


def _principal(request: HttpRequest) -> Principal:
    """The signed-in doctor, if their institution has referrals switched on (else the pages are absent)."""
    principal = principal_of(request)
    if not access.may_use_referrals(principal):
        raise Http404("Referrals are not available.")
    return principal


def _field_messages(request: HttpRequest, form: Any) -> None:
    """A form's errors as page messages that name the field ("From date: Enter a valid date.")."""
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        for error in errors:
            messages.error(request, f"{label}: {error}" if label else error)


# --- lists -------------------------------------------------------------------------------------


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The desk starts on what it must answer; a referring doctor on what they sent."""
    principal = _principal(request)
    on_desk = access.is_desk_member(principal, principal.institution_id)
    return redirect("referrals:incoming" if on_desk else "referrals:outgoing")


@login_required
def outgoing(request: HttpRequest) -> HttpResponse:
    return _worklist(request, "outgoing")


@login_required
def incoming(request: HttpRequest) -> HttpResponse:
    return _worklist(request, "incoming")


def _worklist(request: HttpRequest, side: str) -> HttpResponse:
    principal = _principal(request)
    form = ListFilterForm(request.GET or None, principal=principal)
    if form.is_bound and not form.is_valid():
        _field_messages(request, form)
    tabs_of = selectors.outgoing_tabs if side == "outgoing" else selectors.incoming_tabs
    filters = {**form.filters(), "tab": request.GET.get("tab", "")}
    counts, rows = tabs_of(principal, filters)
    tab = selectors.current_tab(side, filters)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    shown = selectors.hydrate(page.object_list)
    audit.record_many(
        read=True,
        actor=audit.actor_of(request),
        action="referral.list",
        object_type="referral",
        items=[(str(r.pk), str(r.patient_id), r.basis) for r in shown],
        source=audit.source_of(request),
    )
    context = {
        "side": side,
        "tabs": [(name, selectors.TAB_LABELS[name], count) for name, count in counts.items()],
        "tab": tab,
        "page": page,
        "rows": shown,
        "form": form,
        "query": form.query_string(),
        "referrals_root": reverse("referrals:index"),  # rows link to root + pk + "/": one reverse, not two a row
        "may_refer": access.may_refer(principal),
        "on_desk": access.is_desk_member(principal, principal.institution_id),
    }
    return render(request, "referrals/list.html", context)


# --- new referral ------------------------------------------------------------------------------


def _prefill(request: HttpRequest, principal: Principal) -> dict[str, Any]:
    """What the form starts from: a signed consult ("refer this patient"), a positive screening
    result, or a completed up referral ("refer back down"); recomputed on POST, never taken
    from hidden fields."""
    consult_id, based_on_id = request.GET.get("consult", ""), request.GET.get("based_on", "")
    if request.GET.get("screening", ""):
        reading = access.get_screening_result_to_refer(principal, request.GET["screening"])
        return dict(services.from_screening_initial(reading))
    if consult_id:
        consult = access.get_consult_to_refer(principal, consult_id)
        return dict(services.from_consult_initial(consult))
    if based_on_id:
        earlier = access.get_referral_for(principal, based_on_id)
        if not access.may_refer_back(principal, earlier):
            raise Http404("This referral cannot be referred back.")
        return dict(services.refer_back_initial(earlier))
    return {}


def _initial_of(prefill: dict[str, Any]) -> dict[str, Any]:
    initial: dict[str, Any] = {k: prefill[k] for k in ("reason", "summary", "direction") if prefill.get(k)}
    if prefill.get("to_institution") is not None:
        initial["to_institution"] = prefill["to_institution"].pk
    if prefill.get("based_on") is not None:
        initial.setdefault("direction", Direction.DOWN)
    return initial


@login_required
def new(request: HttpRequest) -> HttpResponse:
    principal = _principal(request)
    if not access.may_refer(principal):
        raise PermissionDenied(_("Only a clinical doctor may refer a patient."))
    prefill = _prefill(request, principal)
    fixed = [s.pk for s in prefill.get("studies", [])]
    form = ReferralForm(
        request.POST or None,
        principal=principal,
        preselected=request.GET.getlist("study"),
        fixed_studies=fixed,
        patient=prefill.get("patient"),
        initial=_initial_of(prefill),
    )
    if request.method == "POST" and form.is_valid():
        kwargs = form.service_kwargs()
        if not kwargs["studies"] and kwargs["patient_data"] is None and prefill.get("patient") is not None:
            kwargs["patient"] = prefill["patient"]
        try:
            referral = services.referral_create(
                by=principal,
                based_on=prefill.get("based_on"),
                consult=prefill.get("consult"),
                send="send" in request.POST,
                **kwargs,
            )
        except ValidationError as exc:
            apply_service_errors(form, exc)
        except AccessDenied as exc:
            form.add_error(None, str(exc))
        else:
            sent = referral.status != "draft"
            text = _("Referral #%(id)s sent.") if sent else _("Draft #%(id)s saved.")
            messages.success(request, text % {"id": referral.pk})
            return redirect("referrals:detail", pk=referral.pk)
    context = {"form": form, "prefill": prefill, "query": request.GET.urlencode()}
    return render(request, "referrals/new.html", context)


# --- the case page -----------------------------------------------------------------------------


def _action_forms(principal: Principal, referral: Referral, actions: list[str]) -> list[tuple[str, Any]]:
    forms: list[tuple[str, Any]] = []
    for action in actions:
        form_class = ACTION_FORMS[action]
        if form_class is AcceptForm:
            forms.append((action, AcceptForm(doctors=access.appointment_doctors_for(principal, referral))))
        else:
            forms.append((action, form_class()))
    return forms


@login_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    principal = _principal(request)
    referral = access.get_referral_for(principal, pk)
    services.audit_read(request, referral, "referral.view")
    unread = selectors.notifications_of(request.user).filter(referral=referral, read_at__isnull=True)
    services.notifications_mark_read(user=request.user, ids=unread.values_list("pk", flat=True))
    actions = [a for a in access.actions_for(principal, referral) if a in ACTION_FORMS]
    case = selectors.case_detail(principal, referral)
    context = {
        "referral": referral,
        "action_forms": _action_forms(principal, referral, actions),
        "may_message": access.may_post_message(principal, referral),
        "message_form": MessageForm(),
        "may_refer_back": access.may_refer_back(principal, referral),
        "may_schedule_exam": access.may_schedule_exam(principal, referral),
        "exams": worklist.steps_for(principal, status="all").filter(referral_id=referral.pk),
        "now": timezone.now(),
        "route_destinations": routing_access.case_destinations_for(principal)
        if access.may_route_referral(principal, referral)
        else [],
        **_film_context(principal, referral),
        **case,
    }
    return render(request, "referrals/detail.html", context)


def _film_context(principal: Principal, referral: Referral) -> dict[str, Any]:
    """The patient's film links of a completed referral, for either side."""
    if not access.may_give_film(principal, referral):
        return {}
    links = list(films.links_visible_to(principal).filter(case=referral.basis))
    return {"film_links": links, "may_make_film": True}


def _call(action: str, referral: Referral, by: Principal, data: dict[str, Any]) -> Any:
    calls: dict[str, Callable[[], Any]] = {
        "request": lambda: services.referral_request(referral=referral, by=by),
        "accept": lambda: services.referral_accept(
            referral=referral,
            by=by,
            appointment_at=data["appointment_at"],
            department=data["department"],
            doctor=data.get("doctor"),
        ),
        "propose": lambda: services.referral_propose(
            referral=referral, by=by, date=data["date"], note=data.get("note", "")
        ),
        "agree": lambda: services.referral_agree(referral=referral, by=by),
        "reject": lambda: services.referral_reject(referral=referral, by=by, reason=data["reason"]),
        "arrive": lambda: services.referral_arrive(referral=referral, by=by, patient_id=data.get("patient_id", "")),
        "no_show": lambda: services.referral_no_show(referral=referral, by=by, reason=data["reason"]),
        "complete": lambda: services.referral_complete(referral=referral, by=by, summary=data["summary"]),
        "cancel": lambda: services.referral_cancel(referral=referral, by=by, reason=data["reason"]),
    }
    return calls[action]()


@login_required
@require_POST
def act(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    principal = _principal(request)
    referral = access.get_referral_for(principal, pk)
    if action not in ACTION_FORMS:
        raise Http404("No such action.")
    form_class = ACTION_FORMS[action]
    if form_class is AcceptForm:
        form: Any = AcceptForm(request.POST, doctors=access.appointment_doctors_for(principal, referral))
    else:
        form = form_class(request.POST)
    if not form.is_valid():
        _field_messages(request, form)
        return redirect("referrals:detail", pk=referral.pk)
    try:
        _call(action, referral, principal, form.cleaned_data)
    except (ValidationError, AccessDenied, services.IllegalTransition) as exc:
        messages.error(request, error_text(exc))
        return redirect("referrals:detail", pk=referral.pk)
    messages.success(request, str(ACTION_LABELS[action]))
    if not access.referrals_visible_to(principal).filter(pk=referral.pk).exists():
        return redirect("referrals:index")
    return redirect("referrals:detail", pk=referral.pk)


@login_required
@require_POST
def post_message(request: HttpRequest, pk: int) -> HttpResponse:
    principal = _principal(request)
    referral = access.get_referral_for(principal, pk)
    form = MessageForm(request.POST)
    if not form.is_valid():
        _field_messages(request, form)
        return redirect("referrals:detail", pk=referral.pk)
    try:
        services.referral_message(referral=referral, by=principal, body=form.cleaned_data["body"])
    except (ValidationError, AccessDenied, services.IllegalTransition) as exc:
        messages.error(request, error_text(exc))
    return redirect(f"{referral_url(referral)}#thread")


@login_required
def schedule_exam(request: HttpRequest, pk: int) -> HttpResponse:
    """The receiving side schedules an exam of the referred patient on its modality worklist:
    under its own Patient ID when it recorded one on arrival, else the referrer's."""
    principal = _principal(request)
    referral = access.get_referral_for(principal, pk)
    if not access.may_schedule_exam(principal, referral):
        raise PermissionDenied(_("The receiving side schedules exams once it has accepted the referral."))
    institution = referral.to_institution
    initial = {"scheduled_at": referral.appointment_at}
    form = ExamForm(request.POST or None, institution=institution, initial=initial)
    if request.method == "POST" and form.is_valid():
        data: dict[str, Any] = dict(form.cleaned_data)
        data["accession_number"] = data["accession_number"] or worklist.new_accession_number()
        patient = referral.receiving_patient or referral.patient
        try:
            step = worklist.schedule_for_patient(
                by=principal.actor,
                institution=institution,
                patient=patient,
                source=ScheduledStep.Source.REFERRAL,
                referral_id=referral.pk,
                **data,
            )
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(
                request, _("Exam scheduled: accession number %(accession)s.") % {"accession": step.accession_number}
            )
            return redirect("referrals:detail", pk=referral.pk)
    services.audit_read(request, referral, "referral.view")
    return render(request, "referrals/schedule_exam.html", {"referral": referral, "form": form})


def referral_url(referral: Referral) -> str:
    return reverse("referrals:detail", args=[referral.pk])


@login_required
def slip_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    principal = _principal(request)
    referral = access.get_referral_for(principal, pk)
    services.audit_read(request, referral, "referral.slip_pdf")
    body = pdf.render_slip(referral, selectors.case_detail(principal, referral), request=request)
    response = HttpResponse(body, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="referral-{referral.pk}-slip.pdf"'
    return response


# --- notifications ------------------------------------------------------------------------------


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    _principal(request)
    page = Paginator(selectors.notifications_of(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "referrals/notifications.html", {"page": page})


@login_required
def notification_open(request: HttpRequest, pk: int) -> HttpResponse:
    _principal(request)
    notice = selectors.notifications_of(request.user).filter(pk=pk).first()
    if notice is None:
        raise Http404("No such notification.")
    services.notifications_mark_read(user=request.user, ids=[notice.pk])
    return redirect("referrals:detail", pk=notice.referral_id)


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    _principal(request)
    services.notifications_mark_read(user=request.user)
    return redirect("referrals:notifications")


# --- the desk ---------------------------------------------------------------------------------


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


@login_required
def calendar(request: HttpRequest) -> HttpResponse:
    """The desk's appointments, by day or by week (Monday to Sunday), in local time."""
    principal = _principal(request)
    if not access.is_desk_member(principal, principal.institution_id):
        raise PermissionDenied(_("The appointment calendar is for the referral desk."))
    form = CalendarForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        _field_messages(request, form)
    data = form.cleaned_data if form.is_bound and form.is_valid() else {}
    view = data.get("view") or "week"
    day = data.get("date") or timezone.localdate()
    first = _week_start(day) if view == "week" else day
    days = [first + timedelta(days=n) for n in range(7 if view == "week" else 1)]
    zone = timezone.get_current_timezone()
    start = datetime.combine(days[0], time.min, tzinfo=zone)
    end = datetime.combine(days[-1] + timedelta(days=1), time.min, tzinfo=zone)
    rows = list(selectors.appointments_between(principal, start, end))
    audit.record_many(
        read=True,
        actor=audit.actor_of(request),
        action="referral.list",
        object_type="referral",
        items=[(str(r.pk), str(r.patient_id), r.basis) for r in rows],
        source=audit.source_of(request),
    )
    by_day = {d: [r for r in rows if timezone.localtime(r.appointment_at).date() == d] for d in days}
    step = timedelta(days=7 if view == "week" else 1)
    context = {
        "view": view,
        "day": day,
        "days": [(d, by_day[d]) for d in days],
        "previous": first - step,
        "next": first + step,
        "today": timezone.localdate(),
        "count": len(rows),
    }
    return render(request, "referrals/calendar.html", context)


@login_required
def desk(request: HttpRequest) -> HttpResponse:
    """The institution admin names the doctors of the referral desk."""
    principal = _principal(request)
    institution = principal.institution
    if institution is None or not access.may_manage_desk(principal, institution):
        raise PermissionDenied(_("Only the institution admin names the referral desk."))
    form = DeskAddForm(request.POST or None, candidates=access.desk_candidates_for(principal, institution))
    if request.method == "POST" and form.is_valid():
        try:
            services.desk_add(institution=institution, doctor=form.cleaned_data["doctor"], by=principal)
        except (ValidationError, AccessDenied) as exc:
            messages.error(request, error_text(exc))
        else:
            name = form.cleaned_data["doctor"].display_name
            messages.success(request, _("%(name)s is on the referral desk.") % {"name": name})
            return redirect("referrals:desk")
    context = {"institution": institution, "form": form, **selectors.desk_of(institution)}
    return render(request, "referrals/desk.html", context)


@login_required
@require_POST
def desk_remove(request: HttpRequest, doctor_pk: int) -> HttpResponse:
    principal = _principal(request)
    institution = principal.institution
    if institution is None or not access.may_manage_desk(principal, institution):
        raise PermissionDenied(_("Only the institution admin names the referral desk."))
    members = selectors.desk_of(institution)["members"]
    doctor = next((m.doctor for m in members if m.doctor_id == doctor_pk), None)
    if doctor is None:
        raise Http404("No such doctor.")
    try:
        services.desk_remove(institution=institution, doctor=doctor, by=principal)
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, _("%(name)s is no longer on the referral desk.") % {"name": doctor.display_name})
    return redirect("referrals:desk")


@login_required
@require_POST
def route(request: HttpRequest, pk: int) -> HttpResponse:
    """The receiving side sends the referral's studies to its PACS (imaging.routing)."""
    principal = _principal(request)
    referral = access.get_referral_for(principal, pk)
    destination = (
        routing_access.case_destinations_for(principal).filter(pk=request.POST.get("destination") or 0).first()
    )
    if destination is None:
        messages.error(request, _("Choose one of your institution's destinations."))
        return redirect("referrals:detail", pk=referral.pk)
    try:
        queued = services.referral_route(referral=referral, by=principal, destination=destination)
    except AccessDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(n)d studies queued for %(name)s.") % {"n": queued, "name": destination.name})
    return redirect("referrals:detail", pk=referral.pk)

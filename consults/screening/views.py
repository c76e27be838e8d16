"""Screening pages: programmes, enrolment, invitation and overdue lists, a participant's
rounds, the reader's structured form and signature, the programme's figures.

Every page asks consults.screening.access who may see what, audits what it shows of
participants, and calls consults.screening.services to write.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance import audit, charts
from alliance.access import AccessDenied, Principal, institutions_visible_to, pools_visible_to, principal_of
from alliance.figures import Chart, Series
from alliance.reauth import IdentityNotConfirmed
from consults.screening import access, lungrads, selectors, services
from consults.screening.forms import (
    EnrolForm,
    InviteForm,
    NoduleFormSet,
    NoduleFormSetWithBlank,
    ProgrammeForm,
    ReadingForm,
    WithdrawForm,
    kept_forms,
    local_now,
    nodule_initial,
    reading_input,
)
from consults.screening.models import Participant, Programme, Round
from imaging import access as imaging_access

PAGE_SIZE = 100


def _audit_participants(request: HttpRequest, principal: Principal, shown: list[Participant], action: str) -> None:
    unique = list({p.pk: p for p in shown}.values())
    audit.read_many(request, unique, action, {p.pk: access.basis_for(principal, p) for p in unique})


def _errors(form: Any, exc: ValidationError) -> None:
    """A service's ValidationError onto the form: on its field when the form has it."""
    for field, problems in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, problems)


# --- programmes ---------------------------------------------------------------------------------


@login_required
def index(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    if not access.may_use_screening(principal):
        return HttpResponseForbidden(_("Screening programmes are for the doctors of their clinics and readers."))
    programmes = list(access.programmes_visible_to(principal).prefetch_related("institutions"))
    to_read = list(selectors.reading_worklist(principal)[:PAGE_SIZE])
    _audit_participants(request, principal, [r.participant for r in to_read], "screening.worklist")
    context = {
        "programmes": programmes,
        "to_read": to_read,
        "may_manage": access.may_manage_programmes(principal),
        "notifications": selectors.notifications_of(principal.user, limit=10),
    }
    return render(request, "screening/index.html", context)


def _programme_form(request: HttpRequest, principal: Principal, initial: dict[str, Any]) -> ProgrammeForm:
    pools = pools_visible_to(principal).filter(active=True).select_related("institution")
    clinics = institutions_visible_to(principal).filter(active=True).order_by("name")
    return ProgrammeForm(request.POST or None, pools=pools, institutions=clinics, initial=initial)


@login_required
def programme_new(request: HttpRequest) -> HttpResponse:
    return _programme_edit(request, None)


@login_required
def programme_edit(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    programme = access.programmes_managed_by(principal).filter(pk=pk).first()
    if programme is None:
        raise Http404("No such programme.")
    return _programme_edit(request, programme)


def _programme_edit(request: HttpRequest, programme: Programme | None) -> HttpResponse:
    principal = principal_of(request)
    if not access.may_manage_programmes(principal):
        return HttpResponseForbidden(_("Only the alliance admin keeps screening programmes."))
    initial: dict[str, Any] = {"window_days": 30, "active": True}
    if programme is not None:
        initial = {
            "name": programme.name,
            "description": programme.description,
            "reading_pool": programme.reading_pool_id,
            "institutions": list(programme.institutions.values_list("pk", flat=True)),
            "window_days": programme.window_days,
            "active": programme.active,
        }
    form = _programme_form(request, principal, initial)
    if request.method == "POST" and form.is_valid():
        try:
            if programme is None:
                programme = services.programme_create(by=principal, **form.cleaned_data)
            else:
                programme = services.programme_update(programme=programme, by=principal, **form.cleaned_data)
        except ValidationError as exc:
            _errors(form, exc)
        else:
            messages.success(request, _("Programme saved."))
            return redirect("screening:programme", pk=programme.pk)
    return render(request, "screening/programme_form.html", {"form": form, "programme": programme})


@login_required
def programme(request: HttpRequest, pk: int) -> HttpResponse:
    """The clinic's invitation list; the reader's scans to read; for the admin, the clinics."""
    principal = principal_of(request)
    the_programme = access.get_programme_for(principal, pk)
    participating = access.is_participating(principal, the_programme)
    rounds = list(selectors.open_rounds(principal, the_programme)[:PAGE_SIZE]) if participating else []
    to_read = list(selectors.reading_worklist(principal, the_programme)[:PAGE_SIZE])
    participants = list(selectors.participants_of(principal, the_programme)[:PAGE_SIZE]) if participating else []
    shown = [r.participant for r in rounds] + [r.participant for r in to_read] + participants
    _audit_participants(request, principal, shown, "screening.invitations")
    context = {
        "programme": the_programme,
        "participating": participating,
        "rows": [(r, selectors.due_of(r, the_programme.window_days)) for r in rounds],
        "to_read": to_read,
        "participants": participants,
        "may_enrol": access.may_enrol(principal, the_programme),
        "may_edit": access.programmes_managed_by(principal).filter(pk=the_programme.pk).exists(),
        "may_see_figures": access.may_see_figures(principal, the_programme),
        "institutions": the_programme.institutions.order_by("name"),
    }
    return render(request, "screening/programme.html", context)


@login_required
def overdue(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    the_programme = access.get_programme_for(principal, pk)
    if not access.is_participating(principal, the_programme):
        raise Http404("No such list.")
    rounds = list(selectors.overdue_rounds(principal, the_programme)[:PAGE_SIZE])
    _audit_participants(request, principal, [r.participant for r in rounds], "screening.overdue")
    rows = [(r, selectors.due_of(r, the_programme.window_days)) for r in rounds]
    return render(request, "screening/overdue.html", {"programme": the_programme, "rows": rows})


@login_required
def figures(request: HttpRequest, pk: int) -> HttpResponse:
    """Counts only: no participant is named on this page."""
    principal = principal_of(request)
    the_programme = access.get_programme_for(principal, pk)
    institutions = access.figures_institutions_for(principal, the_programme)
    if not institutions.exists():
        raise Http404("No figures for you here.")
    found = selectors.figures(the_programme, institutions)
    categories = Chart(
        "bars",
        [label for _c, label, _n in found.categories],
        [Series(_("Readings"), [n for *_x, n in found.categories])],
    )
    adherence = Chart(
        "bars",
        [_("On time"), _("Late"), _("Overdue")],
        [Series(_("Follow-up CTs"), [found.on_time, found.late, found.overdue])],
    )
    context = {
        "programme": the_programme,
        "figures": found,
        "category_chart": charts.render(categories, _("Lung-RADS categories of the signed readings")),
        "adherence_chart": charts.render(adherence, _("Follow-up adherence")),
        "whole": institutions.count() == the_programme.institutions.count(),
    }
    return render(request, "screening/figures.html", context)


# --- enrolment and the participant ---------------------------------------------------------------


@login_required
def enrol(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    the_programme = access.get_programme_for(principal, pk)
    if not access.may_enrol(principal, the_programme):
        return HttpResponseForbidden(_("Only a doctor of a participating clinic enrols, while the programme is open."))
    form = EnrolForm(request.POST or None, initial={"consent_at": local_now(), "consent_method": "written"})
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        known = selectors.enrollable_patient(principal, d["patient_id"])
        try:
            participant = services.participant_enrol(
                by=principal,
                programme=the_programme,
                patient=known,
                patient_data=None if known is not None else form.patient_data(),
                consent_by=d["consent_by"],
                consent_at=d["consent_at"],
                consent_method=d["consent_method"],
                consent_note=d["consent_note"],
                baseline_due=d["baseline_due"],
            )
        except ValidationError as exc:
            _errors(form, exc)
        else:
            messages.success(request, _("Enrolled. The baseline CT is on the invitation list."))
            return redirect("screening:participant", pk=participant.pk)
    return render(request, "screening/enrol.html", {"programme": the_programme, "form": form})


@login_required
def participant(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    found = access.get_participant_for(principal, pk)
    audit.read(request, found, "screening.participant.view", access.basis_for(principal, found))
    follows = access.may_follow_up(principal, found)
    rounds = selectors.rounds_of(found)
    open_round = next((v.round for v in rounds if v.round.is_open), None)
    context = {
        "participant": found,
        "programme": found.programme,
        "rounds": rounds,
        "open_round": open_round,
        "due": selectors.due_of(open_round, found.programme.window_days) if open_round else None,
        "follows": follows and found.state == Participant.State.ACTIVE,
        "candidates": list(selectors.candidate_studies_for(principal, open_round)[:20])
        if follows and open_round
        else [],
        "may_read": {v.round.pk for v in rounds if v.round.study_id and access.may_read(principal, v.round)},
        "referable": {
            v.reading.pk for v in rounds if v.reading is not None and access.may_refer_from(principal, v.reading)
        },
        "invite_form": InviteForm(),
        "withdraw_form": WithdrawForm(),
        "category_labels": lungrads.CATEGORY_LABELS,
    }
    return render(request, "screening/participant.html", context)


def _participant_round(principal: Principal, pk: int) -> Round:
    """A round of a participant the principal may see (the same 404 otherwise)."""
    round_ = Round.objects.select_related("participant").filter(pk=pk).first()
    if round_ is None:
        raise Http404("No such round.")
    access.get_participant_for(principal, round_.participant_id)
    return round_


@login_required
@require_POST
def invite(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    round_ = _participant_round(principal, pk)
    form = InviteForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(form.errors)
        services.round_invite(round_=round_, by=principal, note=form.cleaned_data["note"])
        messages.success(request, _("Invitation recorded."))
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _text(exc))
    return redirect("screening:participant", pk=round_.participant_id)


@login_required
@require_POST
def tag(request: HttpRequest, pk: int) -> HttpResponse:
    """Tag one of the clinic's studies as the round's scan."""
    principal = principal_of(request)
    round_ = _participant_round(principal, pk)
    study = imaging_access.get_study_for(principal, request.POST.get("study", ""))
    try:
        services.round_tag(round_=round_, study=study, by=principal)
        messages.success(request, _("The study is the screening CT now; the reading pool may read it."))
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _text(exc))
    return redirect("screening:participant", pk=round_.participant_id)


@login_required
def tag_study(request: HttpRequest, study_uid: str) -> HttpResponse:
    """From the study page: choose the participant's open CT this study is."""
    principal = principal_of(request)
    study = imaging_access.get_study_for(principal, study_uid)
    rounds = selectors.open_round_for_study(principal, study)
    if not rounds:
        raise Http404("The study's patient has no open screening CT at your clinic.")
    audit.read(request, study, "screening.tag.view", imaging_access.basis_for(principal, study))
    _audit_participants(request, principal, [r.participant for r in rounds], "screening.tag.view")
    return render(request, "screening/tag_study.html", {"study": study, "rounds": rounds})


@login_required
def withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    found = access.get_participant_for(principal, pk)
    if not access.may_follow_up(principal, found):
        raise Http404("No such participant.")
    form = WithdrawForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.participant_withdraw(participant=found, by=principal, reason=form.cleaned_data["reason"])
        except ValidationError as exc:
            _errors(form, exc)
        else:
            messages.success(request, _("The participant left the programme."))
            return redirect("screening:participant", pk=found.pk)
    audit.read(request, found, "screening.participant.view", access.basis_for(principal, found))
    return render(request, "screening/withdraw.html", {"participant": found, "form": form})


def _text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(m for problems in exc.message_dict.values() for m in problems)
    return str(exc)


# --- reading -----------------------------------------------------------------------------------


def _round_to_read(principal: Principal, pk: int) -> Round:
    round_ = (
        Round.objects.select_related("participant__programme", "participant__patient", "study").filter(pk=pk).first()
    )
    if round_ is None or round_.study is None or not access.may_read(principal, round_):
        if round_ is not None:
            audit.denied(
                principal.actor, Participant.audit_type, round_.participant_id, str(round_.participant.patient_id)
            )
        raise Http404("No such scan to read.")
    return round_


def _forms(request: HttpRequest, round_: Round, principal: Principal, adding: bool) -> tuple[Any, Any, Any]:
    reading = getattr(round_, "reading", None)
    previous = services.previous_reading(round_)
    priors = selectors.nodules_of(previous) if previous is not None else []
    measured = selectors.measurements_for(round_.study, principal.user.pk) if round_.study is not None else []
    if reading is not None:
        initial = nodule_initial(selectors.nodules_of(reading), carried=False)
        head = {k: getattr(reading, k) for k in ("incomplete", "other_findings", "significant", "significant_text")}
    else:
        initial, head = nodule_initial(priors, carried=True), {}
    data = request.POST if request.method == "POST" else None
    form = ReadingForm(data, initial=head)
    extra = {"measured": measured, "priors": priors}
    factory = NoduleFormSet if initial else NoduleFormSetWithBlank
    formset = factory(data, initial=initial, prefix="nodules", form_kwargs=extra)
    if adding and formset.is_valid():
        rows = [f.cleaned_data for f in formset.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        formset = NoduleFormSetWithBlank(initial=_as_initial(rows), prefix="nodules", form_kwargs=extra)
    return form, formset, previous


def _as_initial(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "DELETE" and v not in (None, "")} for row in rows if row.get("lobe")]


@login_required
def read(request: HttpRequest, pk: int) -> HttpResponse:
    """The structured form: nodules (typed or from viewer measurements), other findings, S."""
    principal = principal_of(request)
    round_ = _round_to_read(principal, pk)
    participant_ = round_.participant
    adding = request.method == "POST" and "add" in request.POST
    form, formset, previous = _forms(request, round_, principal, adding)
    if request.method == "POST" and not adding and form.is_valid() and formset.is_valid():
        kept = kept_forms(formset)
        try:
            services.reading_save(round_=round_, by=principal, data=reading_input(form, kept))
        except ValidationError as exc:
            _nodule_errors(form, kept, exc)
        except AccessDenied as exc:
            messages.error(request, str(exc))
            return redirect("screening:participant", pk=participant_.pk)
        else:
            messages.success(request, _("Findings saved; the category is computed below."))
            target = "screening:sign" if "sign" in request.POST else "screening:read"
            return redirect(target, pk=round_.pk)
    audit.read(request, participant_, "screening.reading.view", participant_.basis)
    reading = getattr(round_, "reading", None)
    context = {
        "round": round_,
        "participant": participant_,
        "reading": reading,
        "form": form,
        "formset": formset,
        "previous": previous,
        "previous_rows": selectors.nodule_rows(previous),
        "viewer_url": _viewer_url(round_),
        "lungrads_version": lungrads.VERSION,
    }
    return render(request, "screening/read.html", context)


def _viewer_url(round_: Round) -> str:
    if round_.study is None:
        return ""
    try:
        return reverse("viewer:study", args=[round_.study.study_uid])
    except NoReverseMatch:  # the viewer is not mounted: no link
        return ""


def _nodule_errors(form: ReadingForm, kept: list[Any], exc: ValidationError) -> None:
    """Service errors onto the fields: "nodules-<i>-<field>" names the i-th nodule kept."""
    for key, problems in exc.message_dict.items():
        prefix, _sep, rest = key.partition("-")
        if prefix == "nodules" and rest:
            index, _sep2, name = rest.partition("-")
            target = kept[int(index)] if index.isdigit() and int(index) < len(kept) else None
            if target is not None:
                target.add_error(name if name in target.fields else None, problems)
                continue
        form.add_error(key if key in form.fields else None, problems)


@login_required
def sign(request: HttpRequest, pk: int) -> HttpResponse:
    """The reading as it will be signed, its category and next due date; the password again."""
    principal = principal_of(request)
    round_ = _round_to_read(principal, pk)
    reading = getattr(round_, "reading", None)
    if reading is None or not access.may_sign(principal, reading):
        messages.error(request, _("Save the findings before signing."))
        return redirect("screening:read", pk=round_.pk)
    error = ""
    if request.method == "POST":
        try:
            services.reading_sign_confirmed(
                request=request, reading=reading, by=principal, secret=request.POST.get("password", "")
            )
        except IdentityNotConfirmed as exc:
            error = _("That was not your password.") if exc.reason == "wrong" else _("Type your password to sign.")
            if exc.reason == "locked":
                error = _("Too many wrong passwords: signing is locked for a while.")
        except (ValidationError, AccessDenied) as exc:
            error = _text(exc)
        else:
            messages.success(request, _("Reading signed."))
            return redirect("screening:participant", pk=round_.participant_id)
    audit.read(request, round_.participant, "screening.reading.view", round_.participant.basis)
    scanned = round_.scanned_on
    context = {
        "round": round_,
        "participant": round_.participant,
        "reading": reading,
        "rows": selectors.nodule_rows(reading),
        "next_due": lungrads.due_after(scanned, reading.category) if scanned and reading.category else None,
        "error": error,
        "signer": principal.doctor,
    }
    return render(request, "screening/sign.html", context)


# --- notices ---------------------------------------------------------------------------------------


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    if not access.may_use_screening(principal):
        return HttpResponseForbidden(_("Screening programmes are for the doctors of their clinics and readers."))
    rows = selectors.notifications_of(principal.user, limit=PAGE_SIZE)
    visible = set(
        access.participants_visible_to(principal)
        .filter(pk__in=[n.participant_id for n in rows])
        .values_list("pk", flat=True)
    )
    shown = [n for n in rows if n.participant_id in visible]
    _audit_participants(request, principal, [n.participant for n in shown], "screening.notifications")
    services.notifications_mark_read(user=principal.user, ids=[n.pk for n in shown])
    return render(request, "screening/notifications.html", {"rows": shown})

"""Consult pages: worklists, the request form, the case page, the report editor, the PDF.

Every page asks consults.access who may see what and calls consults.services to write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from alliance import audit, reauth
from alliance.access import AccessDenied, Principal, principal_of
from alliance.forms import apply_service_errors, error_text
from alliance.reauth import IdentityNotConfirmed
from consults import access, clock, pdf, priorities, selectors, services
from consults.forms import (
    ConsultExamForm,
    ConsultRequestForm,
    PolicyForm,
    ReportForm,
    ReportTemplateForm,
    SecondOpinionForm,
    StudyPickForm,
    study_label,
)
from consults.models import Consult, Notification
from imaging import access as imaging_access
from imaging import films
from imaging import selectors as imaging_selectors
from imaging.routing import access as routing_access

PAGE_SIZE = 25


@login_required
def worklist(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    counts = selectors.worklist_counts(principal)
    if not counts:
        return HttpResponseForbidden(_("Consults are for doctors with a clinical role."))
    tab = request.GET.get("tab") or selectors.default_tab(counts)
    if tab not in counts:
        raise Http404("No such tab.")
    page = Paginator(selectors.worklist(principal, tab), PAGE_SIZE).get_page(request.GET.get("page"))
    now = clock.now()
    rows = [(c, selectors.deadline_of(c, now)) for c in selectors.hydrate(page.object_list)]
    audit.record_many(
        read=True,
        actor=audit.actor_of(request),
        action="consult.list",
        object_type="consult",
        items=[(str(c.pk), c.audit_patient, c.basis) for c, _d in rows],
        source=audit.source_of(request),
    )
    tabs = selectors.shown_tabs(counts, tab)
    return render(
        request,
        "consults/worklist.html",
        {
            "tabs": tabs,
            "tab": tab,
            "page": page,
            "rows": rows,
            "may_request": access.may_request_consult(principal),
        },
    )


@login_required
def new(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    if not access.may_request_consult(principal):
        return HttpResponseForbidden(_("Only a clinician may request a consult."))
    form = ConsultRequestForm(request.POST or None, principal=principal, preselected=request.GET.getlist("study"))
    if request.method == "POST" and form.is_valid():
        try:
            consult = services.consult_create(by=principal, **form.cleaned_data)
            if "send" in request.POST:
                services.consult_request(consult=consult, by=principal)
                messages.success(request, _("Consult #%(id)s sent.") % {"id": consult.pk})
            else:
                messages.success(request, _("Draft #%(id)s saved.") % {"id": consult.pk})
            return redirect("consults:detail", pk=consult.pk)
        except ValidationError as exc:
            apply_service_errors(form, exc)
    picker = StudyPickForm(request.GET if "find" in request.GET else None)
    found = _pick_studies(request, principal, picker)
    context = {
        "form": form,
        "picker": picker,
        "picked": form.picked_studies(),
        "found": found,
        "deadlines": priorities.priority_deadlines(principal.alliance),
    }
    return render(request, "consults/new.html", context)


def _pick_studies(request: HttpRequest, principal: Principal, picker: StudyPickForm) -> list[Any]:
    """The picker's search (only when one was made): the studies shown, audited as read."""
    if not picker.is_bound or not picker.is_valid():
        return []
    found = selectors.studies_to_pick(principal, picker.to_query())
    audit.read_many(request, found, "study.list", imaging_access.bases_for(principal, found), via="consult-picker")
    return found


@login_required
@require_GET
def study_search(request: HttpRequest) -> HttpResponse:
    """The consult form's study picker as JSON: studies the user may attach that match a
    patient's name or ID, a study date and a modality; names as the site shows them."""
    principal = principal_of(request)
    if not access.may_request_consult(principal):
        return JsonResponse({"error": _("Only a clinician may request a consult.")}, status=403)
    picker = StudyPickForm(request.GET)
    if not picker.is_valid():
        return JsonResponse({"errors": {k: [str(e) for e in v] for k, v in picker.errors.items()}}, status=400)
    found = _pick_studies(request, principal, picker)
    return JsonResponse({"studies": [_picked_json(s) for s in found], "limit": selectors.PICK_LIMIT})


def _picked_json(study: Any) -> dict[str, Any]:
    return {
        "id": study.pk,
        "study_uid": study.study_uid,
        "label": study_label(study),
        "patient": study.patient.display_name,
        "patient_id": study.patient.patient_id,
        "study_date": study.study_date.isoformat() if study.study_date else "",
        "modalities": study.modality_list,
        "description": study.description,
    }


@login_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    services.audit_read(request, consult, "consult.view")
    actions = access.actions_for(principal, consult)
    context = {
        "consult": consult,
        "deadline": selectors.deadline_of(consult),
        "actions": [a for a in actions if a not in {"save_draft", "sign", "sign_preliminary", "second_opinion"}],
        "reauth_with_code": "verify" in actions and reauth.asks_for_code(request.user),
        "may_report": "save_draft" in actions or "start_report" in actions,
        "may_second_opinion": "second_opinion" in actions,
        "may_message": access.may_post_message(principal, consult),
        "may_order_exam": access.may_order_exam(principal, consult),
        "exams": list(access.exams_of(principal, consult)),
        **_film_context(principal, consult),
        "access_now": imaging_selectors.access_of_basis(consult.basis),
        "route_destinations": routing_access.case_destinations_for(principal)
        if access.may_route_consult(principal, consult)
        else [],
        **selectors.case_detail(consult),
    }
    context["case_study_ids"] = {s.pk for s in context["studies"]}
    if not context["may_report"]:
        context["returned"] = None  # the reviewer's comments are for the reader who fixes the report
    return render(request, "consults/detail.html", context)


def _film_context(principal: Principal, consult: Consult) -> dict[str, Any]:
    """The patient's film links of a finished case, for the requesting institution."""
    if not access.may_give_film(principal, consult):
        return {}
    links = list(films.links_visible_to(principal).filter(case=consult.basis))
    return {"film_links": links, "may_make_film": True}


def _call(action: str, consult: Consult, by: Principal, data: Any, request: HttpRequest) -> Any:
    calls: dict[str, Callable[[], Any]] = {
        "request": lambda: services.consult_request(consult=consult, by=by),
        "claim": lambda: services.consult_claim(consult=consult, by=by),
        "reject": lambda: services.consult_reject(consult=consult, by=by, reason=data.get("reason", "")),
        "release": lambda: services.consult_release(consult=consult, by=by, reason=data.get("reason", "")),
        "start_report": lambda: services.consult_start_report(consult=consult, by=by),
        "hold": lambda: services.consult_hold(consult=consult, by=by, question=data.get("question", "")),
        "answer": lambda: services.consult_answer(consult=consult, by=by, answer=data.get("answer", "")),
        "addendum": lambda: services.consult_addendum(consult=consult, by=by, text=data.get("addendum", "")),
        "cancel": lambda: services.consult_cancel(consult=consult, by=by, reason=data.get("reason", "")),
        "fail": lambda: services.consult_fail(consult=consult, by=by, reason=data.get("reason", "")),
        "verify": lambda: services.consult_verify_confirmed(
            request=request, consult=consult, by=by, secret=data.get("password", "")
        ),
        "return_report": lambda: services.consult_return_report(
            consult=consult, by=by, comments=data.get("comments", "")
        ),
    }
    if action not in calls:
        raise Http404("No such action.")
    return calls[action]()


@login_required
@require_POST
def act(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    principal = principal_of(request)
    if action == "claim":
        consult = access.get_consult_to_claim(principal, pk)
    else:
        consult = access.get_consult_for(principal, pk)
    try:
        _call(action, consult, principal, request.POST, request)
    except IdentityNotConfirmed as exc:
        messages.error(request, services.refusal_text(exc))
        return redirect("consults:detail", pk=consult.pk)
    except (ValidationError, AccessDenied, services.IllegalTransition) as exc:
        messages.error(request, error_text(exc))
        if not access.consults_visible_to(principal).filter(pk=consult.pk).exists():
            return redirect("consults:worklist")  # a claim lost to another reader: the case left our view
        return redirect("consults:detail", pk=consult.pk)
    if action == "start_report":
        return redirect("consults:report", pk=consult.pk)
    if not access.consults_visible_to(principal).filter(pk=consult.pk).exists():
        messages.success(request, _("Consult #%(id)s is closed.") % {"id": consult.pk})
        return redirect("consults:worklist")
    return redirect("consults:detail", pk=consult.pk)


@login_required
@require_POST
def post_message(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    try:
        services.consult_post_message(consult=consult, by=principal, body=request.POST.get("body", ""))
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, error_text(exc))
    return redirect("consults:detail", pk=consult.pk)


@login_required
def report(request: HttpRequest, pk: int) -> HttpResponse:
    """The report editor of the owner: draft (autosaved by static/consults/report.js) and sign."""
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    if not access.may_act(principal, consult, "save_draft"):
        messages.error(request, _("Only the owner edits the report of a case in progress."))
        return redirect("consults:detail", pk=consult.pk)
    case = selectors.case_detail(consult)
    draft = case["draft"]
    form = ReportForm(request.POST or None, initial=_initial(request, consult, draft))
    if request.method == "POST" and form.is_valid():
        try:
            services.consult_save_draft(consult=consult, by=principal, **form.cleaned_data)
            if "sign" in request.POST:  # signing is confirmed on its own page, with the password
                services.check_signable(impression=form.cleaned_data["impression"])
                return redirect("consults:sign", pk=consult.pk)
            messages.success(request, _("Draft saved."))
            return redirect("consults:report", pk=consult.pk)
        except (ValidationError, AccessDenied, services.IllegalTransition) as exc:
            if isinstance(exc, ValidationError):
                apply_service_errors(form, exc)
            else:
                messages.error(request, str(exc))
    services.audit_read(request, consult, "consult.view")  # the case and its draft, to its reader
    context = {"consult": consult, "form": form, "draft": draft, "templates": selectors.templates_for(consult), **case}
    return render(request, "consults/report.html", context)


@login_required
def sign(request: HttpRequest, pk: int) -> HttpResponse:
    """The confirmation of a signature: the report as it will be signed, and the password again."""
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    if not access.may_sign(principal, consult):
        messages.error(request, _("Only the owner signs the report of a case in progress."))
        return redirect("consults:detail", pk=consult.pk)
    case = selectors.case_detail(consult)
    if case["draft"] is None:
        raise Http404("No report draft.")
    error = ""
    if request.method == "POST":
        try:
            version = services.consult_sign_confirmed(
                request=request, consult=consult, by=principal, secret=request.POST.get("password", "")
            )
            done = (
                _("Preliminary report signed; it waits for a reviewer.") if version.preliminary else _("Report signed.")
            )
            messages.success(request, done)
            return redirect("consults:detail", pk=consult.pk)
        except IdentityNotConfirmed as exc:
            error = services.refusal_text(exc)
        except (ValidationError, AccessDenied, services.IllegalTransition) as exc:
            error = error_text(exc)
    services.audit_read(request, consult, "consult.view")  # the report to sign, shown again
    context = {
        "consult": consult,
        "draft": case["draft"],
        "error": error,
        "preliminary": access.needs_review(consult),
        "signer": principal.doctor,
        "now": clock.now(),
        "reauth_with_code": reauth.asks_for_code(request.user),
    }
    return render(request, "consults/sign.html", context)


def _initial(request: HttpRequest, consult: Consult, draft: Any) -> dict[str, str]:
    template_id = request.GET.get("template", "")
    if template_id.isdigit():
        template = selectors.templates_for(consult).filter(pk=int(template_id)).first()
        if template is not None:
            return {
                "findings": template.findings,
                "impression": template.impression,
                "recommendation": template.recommendation,
            }
    if draft is None:
        return {}
    return {"findings": draft.findings, "impression": draft.impression, "recommendation": draft.recommendation}


@login_required
def second_opinion(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    if not access.may_act(principal, consult, "second_opinion"):
        raise Http404("No such consult.")
    form = SecondOpinionForm(
        request.POST or None, principal=principal, consult=consult, initial={"priority": consult.priority}
    )
    if request.method == "POST" and form.is_valid():
        try:
            new = services.consult_second_opinion(consult=consult, by=principal, **form.cleaned_data)
            messages.success(request, _("Second opinion #%(id)s requested.") % {"id": new.pk})
            return redirect("consults:detail", pk=new.pk)
        except (ValidationError, AccessDenied, services.IllegalTransition) as exc:
            if isinstance(exc, ValidationError):
                apply_service_errors(form, exc)
            else:
                messages.error(request, str(exc))
    return render(request, "consults/second_opinion.html", {"consult": consult, "form": form})


@login_required
def report_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    consult = access.get_consult_for(principal_of(request), pk)
    case = selectors.case_detail(consult)
    if not case["signed_versions"]:
        raise Http404("No signed report.")
    services.audit_read(request, consult, "consult.report_pdf")
    body = pdf.render_report(consult, case, request=request)
    response = HttpResponse(body, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="consult-{consult.pk}-report.pdf"'
    return response


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    """The bell's list: for each notification the patient, the case and what happened; each
    opens the case. Only the cases the user still sees name their patient and open; those
    patients are audited as a list of their consults."""
    notices = selectors.notifications_of(principal_of(request))
    page = Paginator(notices, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = selectors.notification_rows(page.object_list)
    consults = {n.consult.pk: n.consult for n in rows if n.visible}.values()  # type: ignore[attr-defined]
    audit.record_many(
        read=True,
        actor=audit.actor_of(request),
        action="consult.list",
        object_type="consult",
        items=[(str(c.pk), c.audit_patient, c.basis) for c in consults],
        source=audit.source_of(request),
        detail={"via": "notifications"},
    )
    return render(request, "consults/notifications.html", {"page": page, "rows": rows})


@login_required
def notification_open(request: HttpRequest, pk: int) -> HttpResponse:
    notification = get_object_or_404(Notification, pk=pk, user=request.user)
    services.notifications_mark_read(user=request.user, ids=[notification.pk])
    return redirect("consults:detail", pk=notification.consult_id)


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    services.notifications_mark_read(user=request.user)
    return redirect("consults:notifications")


@login_required
def policy(request: HttpRequest) -> HttpResponse:
    """The alliance admin's turnaround policy: deadline and claim timeout per priority."""
    principal = principal_of(request)
    if not access.may_set_consult_policy(principal):
        return HttpResponseForbidden(_("Only an alliance admin sets the turnaround policy."))
    table = priorities.policy_table(principal.alliance)
    form = PolicyForm(request.POST or None, table=table)
    if request.method == "POST" and form.is_valid():
        try:
            changed = services.policies_set(by=principal, rows=form.policy_rows())
            messages.success(request, _("Turnaround policy saved (%(n)s priorities changed).") % {"n": len(changed)})
            return redirect("consults:policy")
        except ValidationError as exc:
            apply_service_errors(form, exc)
    return render(request, "consults/policy.html", {"form": form, "rows": form.bound_rows()})


@login_required
def templates(request: HttpRequest) -> HttpResponse:
    """The alliance's report templates (the starting text of a report, by modality and body part)."""
    principal = principal_of(request)
    if not access.may_manage_report_templates(principal):
        return HttpResponseForbidden(_("Only an alliance admin keeps the report templates."))
    rows = access.report_templates_managed_by(principal).order_by("modality", "body_part", "name")
    return render(request, "consults/templates.html", {"templates": rows})


@login_required
def template_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    principal = principal_of(request)
    if not access.may_manage_report_templates(principal):
        return HttpResponseForbidden(_("Only an alliance admin keeps the report templates."))
    template = None
    if pk is not None:
        template = get_object_or_404(access.report_templates_managed_by(principal), pk=pk)
    initial = {f: getattr(template, f) for f in ReportTemplateForm.base_fields} if template else None
    form = ReportTemplateForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.report_template_save(by=principal, template=template, **form.cleaned_data)
            messages.success(request, _("Template %(name)s saved.") % {"name": saved.name})
            return redirect("consults:templates")
        except ValidationError as exc:
            apply_service_errors(form, exc)
    return render(
        request,
        "consults/list_entry_form.html",
        {
            "form": form,
            "heading": template.name if template else _("Add a template"),
            "back_url": reverse("consults:templates"),
            "back_label": _("Report templates"),
            "submit_label": _("Save template"),
        },
    )


@login_required
@require_POST
def route(request: HttpRequest, pk: int) -> HttpResponse:
    """The receiving side sends the case's studies to its PACS (imaging.routing)."""
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    destination = (
        routing_access.case_destinations_for(principal).filter(pk=request.POST.get("destination") or 0).first()
    )
    if destination is None:
        messages.error(request, _("Choose one of your institution's destinations."))
        return redirect("consults:detail", pk=consult.pk)
    try:
        queued = services.consult_route(consult=consult, by=principal, destination=destination)
    except AccessDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(n)d studies queued for %(name)s.") % {"n": queued, "name": destination.name})
    return redirect("consults:detail", pk=consult.pk)


@login_required
def order_exam(request: HttpRequest, pk: int) -> HttpResponse:
    """The reader (or the requester) asks the requesting institution to perform an exam of the
    patient: it goes on that institution's modality worklist, linked to the case."""
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    if not access.may_order_exam(principal, consult):
        raise PermissionDenied(_("The reader or the requester of an open case asks for an exam."))
    form = ConsultExamForm(request.POST or None, institution=consult.requesting_institution)
    if request.method == "POST" and form.is_valid():
        try:
            step = services.consult_order_exam(consult=consult, by=principal, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        except AccessDenied as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                _("Exam asked of %(name)s: accession number %(accession)s.")
                % {"name": consult.requesting_institution.name, "accession": step.accession_number},
            )
            return redirect(f"{reverse('consults:detail', args=[consult.pk])}#exams")
    services.audit_read(request, consult, "consult.view")
    return render(request, "consults/order_exam.html", {"consult": consult, "form": form})

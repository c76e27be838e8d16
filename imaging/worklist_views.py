"""The worklist page of an institution: the exams its modalities will find (MWL), scheduled
here, from a referral, the API or an order; schedule one, take one off (imaging.worklist)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import Principal, principal_of
from imaging import access, worklist
from imaging.forms import ScheduledStepForm, WorklistFilterForm
from imaging.models import ScheduledStep

PAGE_SIZE = 50


def _keeper(request: HttpRequest) -> Principal:
    principal = principal_of(request)
    if not access.may_schedule(principal):
        raise PermissionDenied(_("Clinicians of the institution keep its worklist."))
    return principal


@login_required
def worklist_page(request: HttpRequest) -> HttpResponse:
    principal = _keeper(request)
    data = request.GET if "day" in request.GET else {**request.GET.dict(), "day": timezone.localdate().isoformat()}
    form = WorklistFilterForm(data)
    steps = ScheduledStep.objects.none()
    if form.is_valid():
        filters = form.cleaned_data
        steps = worklist.steps_for(
            principal, day=filters.get("day"), status=filters.get("status", ""), modality=filters.get("modality", "")
        )
    page = Paginator(steps, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    audit.read_many(request, rows, "worklist.list", {s.pk: access.OWN_INSTITUTION for s in rows})
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "rows": rows, "query_string": query.urlencode()}
    return render(request, "imaging/worklist.html", context)


@login_required
def worklist_new(request: HttpRequest) -> HttpResponse:
    principal = _keeper(request)
    institution = principal.institution
    assert institution is not None  # may_schedule: a doctor of an institution
    form = ScheduledStepForm(request.POST or None, institution=institution)
    if request.method == "POST" and form.is_valid():
        data: dict[str, Any] = dict(form.cleaned_data)
        data["accession_number"] = data["accession_number"] or worklist.new_accession_number()
        try:
            step = worklist.schedule_step(
                by=principal.actor, institution=institution, issuer=institution, source=ScheduledStep.Source.WEB, **data
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(
                request,
                _("Scheduled: accession number %(accession)s. The modality finds it on its worklist.")
                % {"accession": step.accession_number},
            )
            return redirect("imaging:worklist")
    return render(request, "imaging/worklist_new.html", {"form": form})


@login_required
def worklist_discontinue(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm, then take the exam off the worklist (kept as discontinued, with the reason)."""
    principal = _keeper(request)
    step = access.get_step_for(principal, pk)
    if request.method == "POST" and request.POST.get("confirm") == "1":
        try:
            worklist.discontinue_step(by=principal.actor, step=step, reason=request.POST.get("reason", "")[:200])
        except ValidationError:
            messages.error(request, _("This exam is no longer on the worklist."))
        else:
            messages.success(request, _("The exam is taken off the worklist."))
        return redirect("imaging:worklist")
    audit.read(request, step, "worklist.view", access.OWN_INSTITUTION)
    return render(request, "imaging/worklist_discontinue.html", {"step": step})

"""Pages of critical results (危急值): flag, read back, and the alliance's list of findings.

The rules are consults.access's; the writes are consults.critical's services.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from alliance.access import AccessDenied, principal_of
from alliance.forms import apply_service_errors, error_text
from consults import access, critical
from consults.models import CriticalResult
from consults.services import IllegalTransition


class CriticalFindingForm(forms.Form):
    modality = forms.CharField(
        label=gettext_lazy("Modality"), max_length=16, help_text=gettext_lazy("DICOM modality: CT, CR, DX, MR, US...")
    )
    name = forms.CharField(label=gettext_lazy("Finding"), max_length=200)
    active = forms.BooleanField(
        label=gettext_lazy("In use"),
        required=False,
        initial=True,
        help_text=gettext_lazy("A finding no longer in use is not offered to readers; past flags keep it."),
    )


def _back(request: HttpRequest, pk: int) -> HttpResponse:
    if request.POST.get("back") == "report":
        return redirect("consults:report", pk=pk)
    return redirect("consults:detail", pk=pk)


@login_required
@require_POST
def flag(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    if not request.POST.get("confirm"):
        messages.error(request, _("Tick the box to confirm that the requesting institution is notified now."))
        return _back(request, consult.pk)
    chosen = request.POST.get("finding", "")
    finding = access.critical_findings_for(consult).filter(pk=int(chosen)).first() if chosen.isdigit() else None
    if chosen and finding is None:
        messages.error(request, _("This finding is not on the list for %(modality)s.") % {"modality": consult.modality})
        return _back(request, consult.pk)
    try:
        critical.critical_flag(consult=consult, by=principal, finding=finding, text=request.POST.get("text", ""))
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, error_text(exc))
        return _back(request, consult.pk)
    messages.success(request, _("Critical result flagged; the requesting institution is notified."))
    return _back(request, consult.pk)


@login_required
@require_POST
def acknowledge(request: HttpRequest, pk: int, result_pk: int) -> HttpResponse:
    principal = principal_of(request)
    consult = access.get_consult_for(principal, pk)
    result = get_object_or_404(CriticalResult, pk=result_pk, consult=consult)
    try:
        critical.critical_acknowledge(result=result, by=principal, read_back=request.POST.get("read_back", ""))
    except (ValidationError, AccessDenied, IllegalTransition) as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, _("Critical result acknowledged."))
    return redirect("consults:detail", pk=consult.pk)


@login_required
def findings(request: HttpRequest) -> HttpResponse:
    """The alliance's list of critical findings per modality, kept by its admin."""
    principal = principal_of(request)
    if not access.may_manage_critical_findings(principal):
        return HttpResponseForbidden(_("Only an alliance admin keeps the list of critical findings."))
    rows = access.critical_findings_managed_by(principal).order_by("-active", "modality", "name")
    return render(request, "consults/critical_findings.html", {"findings": rows})


@login_required
def finding_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    principal = principal_of(request)
    if not access.may_manage_critical_findings(principal):
        return HttpResponseForbidden(_("Only an alliance admin keeps the list of critical findings."))
    finding = get_object_or_404(access.critical_findings_managed_by(principal), pk=pk) if pk is not None else None
    initial = {"modality": finding.modality, "name": finding.name, "active": finding.active} if finding else None
    form = CriticalFindingForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            saved = critical.critical_finding_save(by=principal, finding=finding, **form.cleaned_data)
            messages.success(request, _("Critical finding %(name)s saved.") % {"name": saved.name})
            return redirect("consults:critical_findings")
        except ValidationError as exc:
            apply_service_errors(form, exc)
    return render(
        request,
        "consults/list_entry_form.html",
        {
            "form": form,
            "heading": finding.name if finding else _("Add a finding"),
            "back_url": reverse("consults:critical_findings"),
            "back_label": _("Critical findings"),
            "submit_label": _("Save"),
        },
    )

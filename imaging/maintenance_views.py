"""The study-maintenance pages of an institution admin (imaging.maintenance does the writes)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance import audit
from alliance.access import principal_of
from alliance.forms import apply_service_errors
from imaging import access, maintenance
from imaging.forms import PatientCorrectionForm, SeriesMoveForm
from imaging.models import Patient


@login_required
def patient_correct(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    patient = get_object_or_404(Patient.objects.select_related("issuer"), pk=pk)
    if not access.may_correct_patient(principal, patient):
        raise PermissionDenied(_("Only an admin of the institution that issued the Patient ID corrects the patient."))
    initial = {"name": patient.name, "birth_date": patient.birth_date, "sex": patient.sex}
    form = PatientCorrectionForm(request.POST or None, initial=initial)
    study = patient.studies.order_by("-pk").first()
    if request.method == "POST" and form.is_valid():
        try:
            maintenance.patient_correct(by=principal, patient=patient, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, _("The patient's details are corrected."))
            if study is not None:
                return redirect("imaging:study_detail", study_uid=study.study_uid)
            return redirect("imaging:study_list")
    audit.record(
        actor=principal.actor,
        action="patient.view",
        object_type="patient",
        object_id=patient.patient_id,
        patient=str(patient.pk),
        basis=access.OWN_INSTITUTION,
        source=audit.source_of(request),
    )
    return render(request, "imaging/patient_correct.html", {"form": form, "patient": patient, "study": study})


@require_POST
@login_required
def study_delete(request: HttpRequest, study_uid: str) -> HttpResponse:
    principal = principal_of(request)
    study = access.get_study_for(principal, study_uid)
    if not access.may_delete_study(principal, study):
        raise PermissionDenied(_("Only an admin of the institution that owns the study deletes it."))
    try:
        maintenance.study_delete(by=principal, study=study, reason=request.POST.get("reason", ""))
    except ValidationError:
        messages.error(request, _("Say why the study is deleted."))
        return redirect("imaging:study_detail", study_uid=study.study_uid)
    days = maintenance.RETENTION_DAYS
    messages.success(request, _("The study is deleted; its files are removed after %(days)d days.") % {"days": days})
    return redirect("imaging:study_list")


@login_required
def series_move(request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponse:
    """Move a misfiled series to another study of the patient: choose, confirm, move."""
    principal = principal_of(request)
    study = access.get_study_for(principal, study_uid)
    if not access.may_move_series(principal, study):
        raise PermissionDenied(_("Only an admin of the institution that owns the study moves its series."))
    series = get_object_or_404(study.series.all(), series_uid=series_uid)
    form = SeriesMoveForm(request.POST or None, targets=maintenance.move_targets(study))
    confirming = False
    if request.method == "POST" and form.is_valid():
        if request.POST.get("confirm") != "1":
            confirming = True
        else:
            target = form.cleaned_data["target"]
            try:
                maintenance.series_move(by=principal, series=series, target=target, reason=form.cleaned_data["reason"])
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, _("The series is moved; its images now belong to this study."))
                return redirect("imaging:study_detail", study_uid=target.study_uid)
    audit.read(request, study, "series.move.view", access.OWN_INSTITUTION)
    context = {"form": form, "study": study, "series": series, "confirming": confirming}
    return render(request, "imaging/series_move.html", context)

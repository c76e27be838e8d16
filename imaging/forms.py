"""The study search form, shared by the study list page and the REST API's filters."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from alliance import access
from alliance.access import Principal
from alliance.models import Institution
from imaging.models import ScheduledStep, Study
from imaging.selectors import StudyQuery

MODALITIES = ["CT", "MR", "CR", "DX", "DR", "US", "MG", "PT", "NM", "XA", "RF", "ES", "OT", "SR"]


class StudySearchForm(forms.Form):
    patient_name = forms.CharField(label=_("Patient name"), max_length=64, required=False)
    patient_id = forms.CharField(label=_("Patient ID"), max_length=64, required=False)
    date_from = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    date_to = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    modality = forms.ChoiceField(
        label=_("Modality"), required=False, choices=[("", _("Any"))] + [(m, m) for m in MODALITIES]
    )
    accession = forms.CharField(label=_("Accession number"), max_length=16, required=False)
    institution: forms.ModelChoiceField[Institution] = forms.ModelChoiceField(
        label=_("Institution"), required=False, queryset=Institution.objects.none(), empty_label=_("Any")
    )

    # Set by an EMR launch (imaging.launch): the issuer of the Patient ID; not shown as a field.
    issuer: forms.ModelChoiceField[Institution] = forms.ModelChoiceField(
        required=False, queryset=Institution.objects.none(), widget=forms.HiddenInput
    )
    sort = forms.ChoiceField(
        label=_("Order"),
        required=False,
        choices=[("newest", _("Newest first")), ("oldest", _("Oldest first"))],
    )

    def __init__(self, *args: Any, principal: Principal, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        institution = self.fields["institution"]
        assert isinstance(institution, forms.ModelChoiceField)
        institution.queryset = access.institutions_visible_to(principal)
        issuer = self.fields["issuer"]
        assert isinstance(issuer, forms.ModelChoiceField)
        issuer.queryset = access.institutions_visible_to(principal)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("The end date is before the start date."))
        return data

    def to_query(self) -> StudyQuery:
        """The criteria of a valid form (call is_valid first)."""
        data = self.cleaned_data
        institution = data.get("institution")
        return StudyQuery(
            patient_name=data.get("patient_name", ""),
            patient_id=data.get("patient_id", ""),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            modality=data.get("modality", ""),
            accession=data.get("accession", ""),
            institution_id=institution.pk if institution else None,
            issuer_id=data["issuer"].pk if data.get("issuer") else None,
            oldest_first=data.get("sort") == "oldest",
        )


class BreakGlassForm(forms.Form):
    """Emergency access: which study (its UID or accession number) and why."""

    study = forms.CharField(
        label=_("Study Instance UID or accession number"),
        max_length=64,
        help_text=_("A study of another member of the alliance, as the patient's papers or the other doctor give it."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        min_length=10,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Why you must see these images now, outside the usual sharing (at least 10 characters)."),
    )

    def matches(self, studies: Any) -> list[Any]:
        key = self.cleaned_data["study"].strip()
        found = studies.filter(Q(study_uid=key) | Q(accession_number=key)).select_related("institution")
        return list(found.order_by("-study_date", "pk")[:20])


class BreakGlassReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", _("Approve")), ("flag", _("Flag"))])
    comment = forms.CharField(
        label=_("Comment"), max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


class PatientCorrectionForm(forms.Form):
    name = forms.CharField(
        label=_("Patient name"),
        max_length=324,
        required=False,
        help_text=_("As DICOM writes it: family^given, then = and the Chinese characters, e.g. WANG^FANG=王^芳"),
    )
    birth_date = forms.DateField(
        label=_("Birth date"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    sex = forms.ChoiceField(
        label=_("Sex"),
        required=False,
        choices=[("", _("Unknown")), ("M", _("male")), ("F", _("female")), ("O", _("other"))],
    )
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 2}))


class SeriesMoveForm(forms.Form):
    """Where a misfiled series goes: another study of the same patient and institution."""

    target = forms.ModelChoiceField(
        label=_("Move to study"),
        queryset=Study.objects.none(),
        empty_label=None,
        error_messages={"invalid_choice": _("Move to study: choose another study of this patient.")},
    )
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, targets: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = targets  # type: ignore[attr-defined]
        self.fields["target"].label_from_instance = _target_label  # type: ignore[attr-defined]


def _target_label(study: Any) -> str:
    date = study.study_date.strftime("%Y-%m-%d") if study.study_date else "—"
    parts = [date, study.description or "", study.accession_number or "", study.study_uid]
    return " · ".join(p for p in parts if p)


# --- the modality worklist ----------------------------------------------------------------

SEXES = [("", _("Unknown")), ("F", _("Female")), ("M", _("Male")), ("O", _("Other"))]
EXAM_MODALITIES = [m for m in MODALITIES if m not in ("SR", "OT")]


class ExamForm(forms.Form):
    """An exam to put on an institution's worklist, its patient aside (the worklist page's form
    adds the patient; a referral's page takes the referral's)."""

    modality = forms.ChoiceField(label=_("Modality"), choices=[(m, m) for m in EXAM_MODALITIES])
    scheduled_at = forms.DateTimeField(
        label=_("Scheduled start"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"],
    )
    station_ae = forms.ChoiceField(
        label=_("Station"),
        required=False,
        help_text=_("The device that performs it; any station of the modality when none is chosen."),
    )
    procedure_description = forms.CharField(label=_("Procedure"), max_length=64, required=False)
    accession_number = forms.CharField(
        label=_("Accession number"), max_length=16, required=False, help_text=_("Left blank, one is made.")
    )
    performing_physician = forms.CharField(label=_("Performing physician"), max_length=64, required=False)

    def __init__(self, *args: Any, institution: Institution, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stations = institution.devices.filter(active=True).order_by("ae_title").values_list("ae_title", "description")
        station = self.fields["station_ae"]
        assert isinstance(station, forms.ChoiceField)
        station.choices = [("", _("Any station"))] + [(ae, f"{ae} {desc}".strip()) for ae, desc in stations]


class ScheduledStepForm(ExamForm):
    """An exam and its patient, who is known by the institution's own Patient ID."""

    patient_id = forms.CharField(label=_("Patient ID"), max_length=64)
    patient_name = forms.CharField(
        label=_("Patient name"), max_length=64, help_text=_("As DICOM writes it, e.g. Wang^Fang or 王^芳.")
    )
    birth_date = forms.DateField(
        label=_("Birth date"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    sex = forms.ChoiceField(label=_("Sex"), choices=SEXES, required=False)

    field_order = ["patient_id", "patient_name", "birth_date", "sex"]


class WorklistFilterForm(forms.Form):
    day = forms.DateField(
        label=_("Day"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[("", _("To do (scheduled or in progress)")), ("all", _("All"))]
        + [(v, label) for v, label in ScheduledStep.Status.choices],
    )
    modality = forms.ChoiceField(
        label=_("Modality"), required=False, choices=[("", _("Any"))] + [(m, m) for m in EXAM_MODALITIES]
    )

"""Web forms of the consults. They only parse input; the services decide and write."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from alliance.access import NOBODY, Principal
from consults import access, priorities
from consults.models import Priority
from imaging.forms import MODALITIES, ExamForm
from imaging.models import Study
from imaging.selectors import StudyQuery


def study_label(study: Study) -> str:
    """A study as the picker shows it, the name as the rest of the site shows it (never a raw PN)."""
    patient = study.patient
    parts = [f"{patient.display_name or _('(no name)')} · {patient.patient_id}", study.modalities, study.description]
    parts.append(study.study_date.isoformat() if study.study_date else "")
    return " · ".join(str(p) for p in parts if p)


class StudyChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return study_label(obj)


class StudyPickForm(forms.Form):
    """The consult form's study search: a patient's name or ID, a study date, a modality."""

    q = forms.CharField(label=_("Patient name or ID"), max_length=64, required=False)
    date = forms.DateField(label=_("Study date"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    modality = forms.ChoiceField(
        label=_("Modality"), required=False, choices=[("", _("Any"))] + [(m, m) for m in MODALITIES]
    )

    def to_query(self) -> StudyQuery:
        """The criteria of a valid form (call is_valid first)."""
        data = self.cleaned_data
        return StudyQuery(
            patient=data.get("q", ""),
            date_from=data.get("date"),
            date_to=data.get("date"),
            modality=data.get("modality", ""),
        )


class TargetDoctorField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.display_name} · {obj.institution.name}"


class TargetForm(forms.Form):
    def _priority_choices(self, principal: Principal) -> None:
        """Most urgent first, each with the deadline the alliance gives it ("紧急 · 2 小时内")."""
        field = self.fields["priority"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = priorities.priority_choices(principal.alliance)

    def _choices_field(self, name: str) -> forms.ModelChoiceField:
        field = self.fields[name]
        assert isinstance(field, forms.ModelChoiceField)
        return field


class ConsultRequestForm(TargetForm):
    studies = StudyChoiceField(label=_("Studies"), queryset=Study.objects.none(), widget=forms.CheckboxSelectMultiple)
    question = forms.CharField(label=_("Clinical question"), widget=forms.Textarea(attrs={"rows": 3}))
    history = forms.CharField(label=_("Clinical history"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    priority = forms.ChoiceField(label=_("Priority"), choices=Priority.choices, initial=Priority.ROUTINE)
    pool = forms.ModelChoiceField(
        label=_("Specialist pool"), queryset=access.consult_targets_for(NOBODY)[0], required=False
    )
    specialist = TargetDoctorField(
        label=_("Or a named specialist"), queryset=access.consult_targets_for(NOBODY)[1], required=False
    )

    def __init__(self, *args: Any, principal: Principal, preselected: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any study the user may attach is accepted; the page offers only those picked and
        # those the picker's search found (picked_studies), never a list of every study.
        studies = access.studies_requestable_by(principal).select_related("patient")
        self._requestable = studies
        self._choices_field("studies").queryset = studies
        picked = list(studies.filter(study_uid__in=preselected or []).values_list("pk", flat=True))
        if picked:
            self.initial.setdefault("studies", picked)
        pools, specialists = access.consult_targets_for(principal)
        self._choices_field("pool").queryset = pools
        self._choices_field("specialist").queryset = specialists
        self._priority_choices(principal)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("pool") and not data.get("specialist"):
            self.add_error("pool", _("Choose a specialist pool or a named specialist."))
        return data

    def picked_studies(self) -> list[Study]:
        """The studies ticked (the posted ones, or those the page was opened with)."""
        ids = self["studies"].value() or []
        return list(self._requestable.filter(pk__in=[i for i in ids if str(i).isdigit()]).order_by("-received_at"))


class SecondOpinionForm(TargetForm):
    question = forms.CharField(label=_("Clinical question"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    priority = forms.ChoiceField(label=_("Priority"), choices=Priority.choices, initial=Priority.ROUTINE)
    pool = forms.ModelChoiceField(
        label=_("Specialist pool"), queryset=access.consult_targets_for(NOBODY)[0], required=False
    )
    specialist = TargetDoctorField(
        label=_("Or a named specialist"), queryset=access.consult_targets_for(NOBODY)[1], required=False
    )

    def __init__(self, *args: Any, principal: Principal, consult: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {}).setdefault("question", consult.question)
        super().__init__(*args, **kwargs)
        pools, specialists = access.second_opinion_targets_for(principal, consult)
        self._choices_field("pool").queryset = pools
        self._choices_field("specialist").queryset = specialists
        self._priority_choices(principal)


class ReportForm(forms.Form):
    findings = forms.CharField(label=_("Findings"), required=False, widget=forms.Textarea(attrs={"rows": 10}))
    impression = forms.CharField(label=_("Impression"), required=False, widget=forms.Textarea(attrs={"rows": 4}))
    recommendation = forms.CharField(
        label=_("Recommendation"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )


class PolicyForm(forms.Form):
    """The turnaround policy page: a deadline and a claim timeout, in minutes, for every priority."""

    def __init__(self, *args: Any, table: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows = []
        for row in table:
            priority = row["priority"]
            label = priorities.label_with(priority, timedelta(minutes=row["deadline_minutes"]))
            deadline = forms.IntegerField(label=_("Deadline (minutes)"), min_value=1, initial=row["deadline_minutes"])
            claim = forms.IntegerField(
                label=_("Claim timeout (minutes)"), min_value=1, initial=row["claim_timeout_minutes"]
            )
            self.fields[f"{priority}_deadline_minutes"] = deadline
            self.fields[f"{priority}_claim_timeout_minutes"] = claim
            self.rows.append((priority, label, row))

    def bound_rows(self) -> list[tuple[str, Any, dict[str, Any], Any, Any]]:
        """(priority, label, row in force, deadline field, claim timeout field) for the template."""
        return [
            (p, label, row, self[f"{p}_deadline_minutes"], self[f"{p}_claim_timeout_minutes"])
            for p, label, row in self.rows
        ]

    def policy_rows(self) -> dict[str, tuple[int, int]]:
        data = self.cleaned_data
        return {p: (data[f"{p}_deadline_minutes"], data[f"{p}_claim_timeout_minutes"]) for p, _l, _r in self.rows}


class ReportTemplateForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    modality = forms.CharField(label=_("Modality"), max_length=16, help_text=_("DICOM modality: CT, CR, DX, MR, US..."))
    body_part = forms.CharField(
        label=_("Body part"),
        max_length=16,
        required=False,
        help_text=_("DICOM body part examined, e.g. CHEST or HEAD; empty: any."),
    )
    findings = forms.CharField(label=_("Findings"), required=False, widget=forms.Textarea(attrs={"rows": 8}))
    impression = forms.CharField(label=_("Impression"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    recommendation = forms.CharField(
        label=_("Recommendation"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


class ConsultExamForm(ExamForm):
    """An exam the case asks the requesting institution to perform: modality, start, the
    station if it matters and what to do; the accession number is made when it is scheduled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("accession_number", "performing_physician"):
            del self.fields[name]

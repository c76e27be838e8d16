"""Web forms of the referrals. They only parse input; referrals.services decides and writes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django import forms
from django.http import QueryDict
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from alliance.access import Principal, institutions_visible_to
from alliance.models import Doctor, Institution
from imaging.models import Study
from referrals import access
from referrals.models import URGENCY_WITH_TIME, Direction, Urgency, direction_between

RECENT_STUDIES = 200
SEX_CHOICES = [("", "—"), ("F", _("Female")), ("M", _("Male")), ("O", _("Other"))]


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs, format="%Y-%m-%d")


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


def _model_field(form: forms.Form, name: str) -> forms.ModelChoiceField:
    field = form.fields[name]
    assert isinstance(field, forms.ModelChoiceField)
    return field


class ListFilterForm(forms.Form):
    """The filters above both lists; a bad date is an error naming its field, not an empty list."""

    patient = forms.CharField(label=_("Patient"), required=False, max_length=100)
    institution = forms.ModelChoiceField(
        label=_("Institution"), queryset=Institution.objects.none(), required=False, empty_label=_("Any institution")
    )
    direction = forms.ChoiceField(label=_("Direction"), required=False, choices=[("", _("Any direction"))])
    date_from = forms.DateField(label=_("From date"), required=False, widget=DateInput())
    date_to = forms.DateField(label=_("To date"), required=False, widget=DateInput())

    def __init__(self, *args: Any, principal: Principal, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        institutions = institutions_visible_to(principal).filter(active=True).order_by("name")
        _model_field(self, "institution").queryset = institutions
        direction = self.fields["direction"]
        assert isinstance(direction, forms.ChoiceField)
        direction.choices = [("", _("Any direction")), *Direction.choices]

    def filters(self) -> dict[str, Any]:
        """The selectors' filters: only what was given."""
        if not self.is_bound or not self.is_valid():
            return {}
        data = self.cleaned_data
        out: dict[str, Any] = {k: v for k, v in data.items() if v not in (None, "")}
        if "institution" in out:
            out["institution"] = out["institution"].pk
        return out

    def query_string(self) -> str:
        """The valid filters as a query string, kept by the tabs and the pages."""
        if not self.is_bound:
            return ""
        query = QueryDict(mutable=True)
        for key, value in self.data.items():
            if key not in ("tab", "page") and value:
                query[key] = value
        return query.urlencode()


class StudyChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        parts = [f"{obj.patient.display_name} ({obj.patient.patient_id})", obj.modalities, obj.description]
        parts.append(obj.study_date.isoformat() if obj.study_date else "")
        return " · ".join(p for p in parts if p)


class InstitutionSelect(forms.Select):
    """Each receiving institution says which direction it lies in from the referrer's
    (static/referrals/referrals.js shows only those of the chosen direction)."""

    def __init__(self, *args: Any, from_level: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.from_level = from_level

    def create_option(
        self,
        name: str,
        value: Any,
        label: int | str,
        selected: bool,
        index: int,
        subindex: int | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-direction"] = direction_between(self.from_level, instance.level)
        return option


class InstitutionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} · {obj.get_level_display()}"


class ReferralForm(forms.Form):
    """A new referral: the patient from the referrer's studies, or typed when there are no images yet."""

    studies = StudyChoiceField(
        label=_("Studies to attach"),
        queryset=Study.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("The receiving desk sees exactly these studies once the referral is sent."),
    )
    patient_id = forms.CharField(label=_("Patient ID"), required=False, max_length=64)
    patient_name = forms.CharField(label=_("Patient name"), required=False, max_length=200)
    birth_date = forms.DateField(label=_("Birth date"), required=False, widget=DateInput())
    sex = forms.ChoiceField(label=_("Sex"), required=False, choices=SEX_CHOICES)
    direction = forms.ChoiceField(label=_("Direction"), choices=Direction.choices, initial=Direction.UP)
    to_institution = InstitutionChoiceField(label=_("Receiving institution"), queryset=Institution.objects.none())
    reason = forms.CharField(label=_("Reason for referral"), widget=forms.Textarea(attrs={"rows": 3}))
    summary = forms.CharField(label=_("Clinical summary"), required=False, widget=forms.Textarea(attrs={"rows": 5}))
    urgency = forms.ChoiceField(label=_("Urgency"), initial=Urgency.ROUTINE)
    wished_date = forms.DateField(label=_("Wished date"), required=False, widget=DateInput())

    def __init__(
        self,
        *args: Any,
        principal: Principal,
        preselected: list[str] | None = None,
        fixed_studies: list[int] | None = None,
        patient: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        studies = access.studies_referable_by(principal).select_related("patient")
        if patient is not None:  # prefilled: only that patient's studies may go with it
            studies = studies.filter(patient=patient)
        recent = list(studies.order_by("-received_at").values_list("pk", flat=True)[:RECENT_STUDIES])
        picked = list(studies.filter(study_uid__in=preselected or []).values_list("pk", flat=True))
        picked += list(studies.filter(pk__in=fixed_studies or []).values_list("pk", flat=True))
        _model_field(self, "studies").queryset = studies.filter(pk__in=recent + picked).order_by("-received_at")
        if picked:
            self.initial.setdefault("studies", picked)
        field = _model_field(self, "to_institution")
        institution = principal.institution
        field.widget = InstitutionSelect(from_level=institution.level if institution is not None else "")
        field.queryset = access.receiving_institutions_for(principal)
        urgency = self.fields["urgency"]
        assert isinstance(urgency, forms.ChoiceField)
        urgency.choices = [(u.value, URGENCY_WITH_TIME[u]) for u in Urgency]

    def clean_wished_date(self) -> date | None:
        wished: date | None = self.cleaned_data.get("wished_date")
        if wished is not None and wished < timezone.localdate():
            raise forms.ValidationError(_("The wished date is in the past."))
        return wished

    def patient_data(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        if not (data.get("patient_id") or data.get("patient_name")):
            return None
        return {
            "patient_id": data.get("patient_id", ""),
            "name": data.get("patient_name", ""),
            "birth_date": data.get("birth_date"),
            "sex": data.get("sex", ""),
        }

    def service_kwargs(self) -> dict[str, Any]:
        """referral_create's keyword arguments (patient, based_on and consult come from the prefill)."""
        data = self.cleaned_data
        return {
            "studies": list(data.get("studies") or []),
            "patient_data": self.patient_data() if not data.get("studies") else None,
            "direction": data["direction"],
            "to_institution": data["to_institution"],
            "reason": data["reason"],
            "summary": data.get("summary", ""),
            "urgency": data["urgency"],
            "wished_date": data.get("wished_date"),
        }


# --- the case page's action forms ------------------------------------------------------------


class ConfirmForm(forms.Form):
    """Irreversible moves (decline, cancel, no-show, complete) ask the user to tick a box first."""

    confirm = forms.BooleanField(
        label=_("I confirm: this cannot be undone."),
        required=True,
        error_messages={"required": _("Tick the box to confirm: this cannot be undone.")},
    )


class NoFieldsForm(forms.Form):
    pass


class ReasonForm(ConfirmForm):
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea(attrs={"rows": 2}))


class AcceptForm(forms.Form):
    appointment_at = forms.DateTimeField(label=_("Appointment"), widget=DateTimeInput())
    department = forms.CharField(label=_("Department"), max_length=200)
    doctor = forms.ModelChoiceField(
        label=_("Doctor (optional)"), queryset=Doctor.objects.none(), required=False, empty_label=_("Any desk doctor")
    )

    def __init__(self, *args: Any, doctors: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if doctors is not None:
            _model_field(self, "doctor").queryset = doctors

    def clean_appointment_at(self) -> datetime:
        at: datetime = self.cleaned_data["appointment_at"]
        if at < timezone.now():
            raise forms.ValidationError(_("The appointment is in the past."))
        return at


class ProposeForm(forms.Form):
    date = forms.DateField(label=_("Proposed date"), widget=DateInput())
    note = forms.CharField(label=_("Note to the referrer (optional)"), required=False, max_length=500)


class ArriveForm(forms.Form):
    patient_id = forms.CharField(
        label=_("Patient ID at our institution (optional)"),
        required=False,
        max_length=64,
        help_text=_("Links the patient's records at both institutions; the records are never merged."),
    )


class CompleteForm(ConfirmForm):
    summary = forms.CharField(label=_("Discharge or feedback summary"), widget=forms.Textarea(attrs={"rows": 5}))


class MessageForm(forms.Form):
    body = forms.CharField(label=_("Message"), widget=forms.Textarea(attrs={"rows": 2}), max_length=5000)


ACTION_FORMS: dict[str, type[forms.Form]] = {
    "request": NoFieldsForm,
    "accept": AcceptForm,
    "propose": ProposeForm,
    "agree": NoFieldsForm,
    "reject": ReasonForm,
    "arrive": ArriveForm,
    "no_show": ReasonForm,
    "complete": CompleteForm,
    "cancel": ReasonForm,
}


class CalendarForm(forms.Form):
    view = forms.ChoiceField(choices=[("day", _("Day")), ("week", _("Week"))], required=False)
    date = forms.DateField(label=_("Date"), required=False, widget=DateInput())


class DeskAddForm(forms.Form):
    doctor = forms.ModelChoiceField(label=_("Doctor"), queryset=Doctor.objects.none())

    def __init__(self, *args: Any, candidates: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _model_field(self, "doctor").queryset = candidates

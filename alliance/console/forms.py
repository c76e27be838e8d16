"""Forms of the admin console. They validate input; alliance.services does the writes."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from alliance.models import (
    MODULE_LABELS,
    AllianceSettings,
    Department,
    Doctor,
    Institution,
    Role,
    Specialty,
    ae_title_validator,
)
from alliance.services import ALL_MODULES, SETTINGS_FIELDS


class InstitutionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Institution) -> str:
        return f"{obj.name} ({obj.ae_title})"


class DoctorChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Doctor) -> str:
        title = f", {obj.title}" if obj.title else ""
        return f"{obj.display_name} ({obj.user.username}{title})"


class DepartmentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Department) -> str:
        return f"{obj.name} · {obj.institution.name}"


def _ae_title_field() -> forms.CharField:
    return forms.CharField(
        label=_("AE title"),
        max_length=16,
        validators=[ae_title_validator],
        help_text=_("1 to 16 letters, digits, '_', '-' or '.'; stored in capitals."),
    )


class InstitutionForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    level = forms.ChoiceField(label=_("Level"), choices=Institution.Level.choices)
    parent = InstitutionChoiceField(
        label=_("Parent institution"),
        queryset=Institution.objects.none(),
        required=False,
        empty_label=_("None (top of the alliance)"),
    )
    ae_title = _ae_title_field()
    modules = forms.MultipleChoiceField(
        label=_("Modules"),
        choices=[(code, MODULE_LABELS[code]) for code in ALL_MODULES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("What is switched off is absent from the institution's pages and API."),
    )

    def __init__(self, *args: Any, parents: QuerySet[Institution], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parent"].queryset = parents  # type: ignore[attr-defined]


class DepartmentForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)


class DoctorForm(forms.Form):
    """Editing a doctor; DoctorCreateForm adds the account fields."""

    full_name = forms.CharField(label=_("Full name"), max_length=300, required=False)
    email = forms.EmailField(label=_("Email"), required=False)
    roles = forms.MultipleChoiceField(label=_("Roles"), choices=Role.choices, widget=forms.CheckboxSelectMultiple)
    department = DepartmentChoiceField(
        label=_("Department"), queryset=Department.objects.none(), required=False, empty_label=_("None")
    )
    title = forms.CharField(label=_("Title"), max_length=100, required=False, help_text=_("e.g. Attending physician"))
    specialties = forms.ModelMultipleChoiceField(
        label=_("Specialties"),
        queryset=Specialty.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args: Any, roles: list[str], departments: QuerySet[Department], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["roles"].choices = [(value, label) for value, label in Role.choices if value in roles]  # type: ignore[attr-defined]
        self.fields["department"].queryset = departments.select_related("institution")  # type: ignore[attr-defined]


class DoctorCreateForm(DoctorForm):
    username = forms.CharField(label=_("Username"), max_length=150)
    password = forms.CharField(
        label=_("Initial password"),
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Give it to the doctor in person; they choose their own at their first sign-in."),
    )
    field_order = ["username", "full_name", "email", "password", "roles", "department", "title", "specialties"]


class PasswordForm(forms.Form):
    password = forms.CharField(label=_("New password"), widget=forms.PasswordInput)
    confirm = forms.CharField(label=_("New password again"), widget=forms.PasswordInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("password") and data.get("confirm") and data["password"] != data["confirm"]:
            self.add_error("confirm", _("The two passwords differ."))
        return data


class MoveForm(forms.Form):
    institution = InstitutionChoiceField(label=_("Move to"), queryset=Institution.objects.none())
    department = DepartmentChoiceField(
        label=_("Department there"), queryset=Department.objects.none(), required=False, empty_label=_("None")
    )

    def __init__(
        self, *args: Any, institutions: QuerySet[Institution], departments: QuerySet[Department], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["institution"].queryset = institutions  # type: ignore[attr-defined]
        self.fields["department"].queryset = departments.select_related("institution")  # type: ignore[attr-defined]


class PoolForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200, help_text=_("e.g. CT reading desk"))
    specialty = forms.ModelChoiceField(label=_("Specialty"), queryset=Specialty.objects.all())
    members = DoctorChoiceField(
        label=_("Members"),
        queryset=Doctor.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Doctors of this institution who read the desk's consults."),
    )
    two_level_signoff = forms.BooleanField(
        label=_("Two-level sign-off"),
        required=False,
        help_text=_("A report signed by a member who is not a reviewer is preliminary until a reviewer verifies it."),
    )
    reviewers = DoctorChoiceField(
        label=_("Reviewers"),
        queryset=Doctor.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("Members who verify the other members' reports (they must be members too)."),
    )

    def __init__(self, *args: Any, doctors: QuerySet[Doctor], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["members"].queryset = doctors.select_related("user")  # type: ignore[attr-defined]
        self.fields["reviewers"].queryset = doctors.select_related("user")  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not set(data.get("reviewers") or []) <= set(data.get("members") or []):
            self.add_error("reviewers", _("Reviewers must be members of the pool."))
        if data.get("two_level_signoff") and not data.get("reviewers"):
            self.add_error("reviewers", _("Two-level sign-off needs at least one reviewer."))
        return data


class DeviceForm(forms.Form):
    ae_title = _ae_title_field()
    host = forms.CharField(
        label=_("Host"), max_length=255, help_text=_("The device's IP address or host name; * accepts any address.")
    )
    port = forms.IntegerField(label=_("Port"), min_value=1, max_value=65535, initial=104)
    description = forms.CharField(
        label=_("Description"), max_length=200, required=False, help_text=_("e.g. CT room 1, Siemens go.Up")
    )
    tls_client_sha256 = forms.CharField(
        label=_("Pinned client certificate (SHA-256)"),
        max_length=95,
        required=False,
        help_text=_(
            "For a clinic behind NAT: the SHA-256 fingerprint of the certificate the device presents over "
            "DICOM TLS. The device then connects only over TLS with that certificate, from any address."
        ),
    )


class SpecialtyForm(forms.Form):
    code = forms.SlugField(label=_("Code"), max_length=40, help_text=_("Short and stable, e.g. radiology"))
    name = forms.CharField(label=_("Name"), max_length=200)

    def clean_code(self) -> str:
        code = self.cleaned_data["code"]
        if Specialty.objects.filter(code=code).exists():
            raise ValidationError(_("A specialty with this code exists already."))
        return code


class AllianceSettingsForm(forms.ModelForm):
    """Every knob of AllianceSettings; film sheets as "CT: 2, MR: 2" rather than raw JSON."""

    film_sheets = forms.CharField(
        label=_("film sheets per study, by modality"),
        max_length=500,
        help_text=_("Modality and sheets, separated by commas, e.g. CT: 2, MR: 2, DX: 1"),
    )

    class Meta:
        model = AllianceSettings
        fields = list(SETTINGS_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sheets = self.instance.film_sheets or {}
        self.initial["film_sheets"] = ", ".join(f"{m}: {n}" for m, n in sheets.items())

    def clean_film_sheets(self) -> dict[str, int]:
        sheets: dict[str, int] = {}
        for part in self.cleaned_data["film_sheets"].split(","):
            if not part.strip():
                continue
            modality, _sep, count = part.partition(":")
            if not modality.strip() or not count.strip().isdigit() or int(count) > 100:
                raise ValidationError(_("Write each modality as MODALITY: sheets, e.g. CT: 2 (0 to 100 sheets)."))
            sheets[modality.strip().upper()] = int(count)
        return sheets


class PrivilegeDecisionForm(forms.Form):
    comment = forms.CharField(
        label=_("Comment"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3})
    )

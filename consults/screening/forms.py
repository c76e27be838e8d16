"""The screening pages' forms. They turn what was typed into the services' arguments; the
services check every rule and name the field of a bad value."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.forms import formset_factory
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from alliance.models import Institution, Pool
from consults.screening import lungrads
from consults.screening.models import Consent, Lobe, Nodule
from consults.screening.selectors import Measured
from consults.screening.services import NoduleInput, ReadingInput

DATE = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
SIZE = {"min": "0.1", "max": "300", "step": "0.1", "inputmode": "decimal"}


class ProgrammeForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    description = forms.CharField(label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    reading_pool: forms.ModelChoiceField[Pool] = forms.ModelChoiceField(
        label=_("Reading pool"), queryset=Pool.objects.none(), help_text=_("The specialists who read the scans.")
    )
    institutions: forms.ModelMultipleChoiceField[Institution] = forms.ModelMultipleChoiceField(
        label=_("Participating institutions"), queryset=Institution.objects.none(), widget=forms.CheckboxSelectMultiple
    )
    window_days = forms.IntegerField(
        label=_("Window (days)"),
        min_value=1,
        max_value=365,
        initial=30,
        help_text=_("A CT up to this many days after its due date is on time; later, the participant is overdue."),
    )
    active = forms.BooleanField(label=_("Open for enrolment"), required=False, initial=True)

    def __init__(self, *args: Any, pools: QuerySet[Pool], institutions: QuerySet[Institution], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reading_pool"].queryset = pools  # type: ignore[attr-defined]
        self.fields["institutions"].queryset = institutions  # type: ignore[attr-defined]


class EnrolForm(forms.Form):
    """A patient of the clinic (by the clinic's own patient ID) and their consent."""

    patient_id = forms.CharField(label=_("Patient ID"), max_length=64)
    name = forms.CharField(
        label=_("Patient name"), max_length=200, required=False, help_text=_("For a patient without images here yet.")
    )
    birth_date = forms.DateField(label=_("Birth date"), required=False, widget=DATE)
    sex = forms.ChoiceField(
        label=_("Sex"), required=False, choices=[("", "—"), ("M", _("male")), ("F", _("female")), ("O", _("other"))]
    )
    consent_by = forms.CharField(
        label=_("Consent given by"),
        max_length=200,
        help_text=_("The participant, or the name and relation of their legal representative."),
    )
    consent_at = forms.DateTimeField(
        label=_("Consent given on"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
    )
    consent_method = forms.ChoiceField(label=_("How consent was given"), choices=Consent.choices)
    consent_note = forms.CharField(
        label=_("Consent note"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("E.g. the form's number, or the witness."),
    )
    baseline_due = forms.DateField(
        label=_("Baseline CT due"), required=False, widget=DATE, help_text=_("Today when left empty.")
    )

    def patient_data(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {"patient_id": d["patient_id"], "name": d["name"], "birth_date": d["birth_date"], "sex": d["sex"]}


class InviteForm(forms.Form):
    note = forms.CharField(label=_("How"), max_length=200, required=False)


class WithdrawForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea(attrs={"rows": 2}))
    confirm = forms.BooleanField(label=_("I understand that the participant's open CT is cancelled."))


class ReadingForm(forms.Form):
    incomplete = forms.ChoiceField(
        label=_("Is the exam complete?"),
        required=False,
        choices=[("", _("Yes: the exam is complete")), *lungrads.INCOMPLETE_LABELS.items()],
    )
    other_findings = forms.CharField(
        label=_("Other findings"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    significant = forms.BooleanField(
        label=_("A clinically significant finding other than lung cancer (S)"), required=False
    )
    significant_text = forms.CharField(
        label=_("The significant finding"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


def _size() -> forms.DecimalField:
    return forms.DecimalField(
        required=False, max_digits=5, decimal_places=1, min_value=Decimal("0.1"), widget=forms.NumberInput(attrs=SIZE)
    )


class NoduleForm(forms.Form):
    """One nodule of the reading; a size is typed or taken from a length saved in the viewer."""

    prior = forms.TypedChoiceField(label=_("Same as (previous CT)"), required=False, coerce=int, empty_value=None)
    lobe = forms.ChoiceField(label=_("Lobe"), choices=[("", "—"), *Lobe.choices])
    kind = forms.ChoiceField(label=_("Type"), choices=[("", "—"), *lungrads.KIND_LABELS.items()])
    series_number = forms.IntegerField(label=_("Series"), required=False, min_value=0)
    image_number = forms.IntegerField(label=_("Image (slice)"), required=False, min_value=0)
    long_axis = _size()
    long_from = forms.ChoiceField(label=_("or from a measurement"), required=False)
    short_axis = _size()
    short_from = forms.ChoiceField(label=_("or from a measurement"), required=False)
    solid = _size()
    volume = forms.IntegerField(label=_("Volume (mm³)"), required=False, min_value=1, max_value=14_000_000)
    feature = forms.ChoiceField(label=_("Feature"), required=False, choices=list(lungrads.FEATURE_LABELS.items()))
    airway_level = forms.ChoiceField(
        label=_("Airway level"), required=False, choices=[("", "—"), *lungrads.AIRWAY_LEVEL_LABELS.items()]
    )
    cyst = forms.ChoiceField(label=_("Cyst"), required=False, choices=[("", "—"), *lungrads.CYST_LABELS.items()])
    suspicious = forms.BooleanField(
        label=_("Features that raise the suspicion of cancer (spiculation, lymph nodes...): 4X"), required=False
    )

    def __init__(self, *args: Any, measured: list[Measured], priors: list[Nodule], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["long_axis"].label = _("Long axis (mm)")
        self.fields["short_axis"].label = _("Short axis (mm)")
        self.fields["solid"].label = _("Solid component (mm)")
        self.measured = {m.key: m for m in measured}
        picks = [("", "—")] + [(m.key, measured_label(m)) for m in measured]
        self.fields["long_from"].choices = picks  # type: ignore[attr-defined]
        self.fields["short_from"].choices = picks  # type: ignore[attr-defined]
        self.fields["prior"].choices = [("", _("A new nodule"))] + [  # type: ignore[attr-defined]
            (n.pk, prior_label(n)) for n in priors
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for axis in ("long", "short"):
            key = data.get(f"{axis}_from")
            if not key:
                continue
            taken = self.measured[key]
            typed = data.get(f"{axis}_axis")
            if typed is not None and typed != taken.length_mm:
                self.add_error(f"{axis}_axis", _("Type a size or take it from a measurement, not both."))
            data[f"{axis}_axis"] = taken.length_mm
        return data

    def _where(self) -> tuple[str, int | None, int | None]:
        """The image of the size: a chosen measurement's, else what was typed."""
        d = self.cleaned_data
        key = d.get("long_from") or d.get("short_from")
        if key:
            m = self.measured[key]
            return m.sop_uid, d.get("series_number") or m.series_number, d.get("image_number") or m.image_number
        return "", d.get("series_number"), d.get("image_number")

    def to_input(self) -> NoduleInput:
        d = self.cleaned_data
        sop_uid, series_number, image_number = self._where()
        return NoduleInput(
            lobe=d["lobe"],
            kind=d["kind"],
            long_axis=d.get("long_axis"),
            short_axis=d.get("short_axis"),
            solid=d.get("solid"),
            volume=d.get("volume"),
            series_number=series_number,
            image_number=image_number,
            sop_uid=sop_uid,
            feature=d.get("feature") or "",
            airway_level=d.get("airway_level") or "",
            cyst=d.get("cyst") or "",
            suspicious=bool(d.get("suspicious")),
            prior=d.get("prior"),
        )


def measured_label(m: Measured) -> str:
    where = _("series %(s)s image %(i)s") % {"s": m.series_number or "?", "i": m.image_number or "?"}
    return f"{m.length_mm} mm · {where}" + (f" · {m.label}" if m.label else "")


def prior_label(n: Nodule) -> str:
    size = f" {n.mean_mm} mm" if n.mean_mm is not None else ""
    return _("Nodule %(n)d: %(lobe)s, %(kind)s%(size)s") % {
        "n": n.number,
        "lobe": n.get_lobe_display(),
        "kind": n.get_kind_display(),
        "size": size,
    }


NoduleFormSet = formset_factory(NoduleForm, extra=0, can_delete=True, max_num=20, validate_max=True)
# A reading without nodules yet starts with one blank row (left empty, it is no nodule), as
# does "Add a nodule" after the rows there are.
NoduleFormSetWithBlank = formset_factory(NoduleForm, extra=1, can_delete=True, max_num=20, validate_max=True)


def nodule_initial(nodules: list[Nodule], *, carried: bool) -> list[dict[str, Any]]:
    """The form's rows: the reading's nodules, or (carried) the previous reading's nodules to
    measure again, each marked as the same nodule."""
    rows = []
    for n in nodules:
        row: dict[str, Any] = {"lobe": n.lobe, "kind": n.kind, "feature": n.feature}
        row |= {"airway_level": n.airway_level, "cyst": n.cyst, "suspicious": n.suspicious}
        if carried:
            row["prior"] = n.pk
        else:
            row |= {"prior": n.prior_id, "series_number": n.series_number, "image_number": n.image_number}
            row |= {"long_axis": n.long_axis_mm, "short_axis": n.short_axis_mm, "solid": n.solid_mm}
            row |= {"volume": n.volume_mm3}
        rows.append(row)
    return rows


def kept_forms(formset: Any) -> list[NoduleForm]:
    """The nodule rows the reader keeps: filled in (a lobe at least) and not marked for removal."""
    return [
        f for f in formset.forms if f.cleaned_data and f.cleaned_data.get("lobe") and not f.cleaned_data.get("DELETE")
    ]


def reading_input(form: ReadingForm, kept: list[NoduleForm]) -> ReadingInput:
    d = form.cleaned_data
    return ReadingInput(
        nodules=[f.to_input() for f in kept],
        incomplete=d.get("incomplete") or "",
        other_findings=d.get("other_findings") or "",
        significant=bool(d.get("significant")),
        significant_text=d.get("significant_text") or "",
    )


def local_now() -> str:
    return timezone.localtime().strftime("%Y-%m-%dT%H:%M")

"""The routing console's forms: a destination, a rule, and the queue's filters."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from alliance.access import Principal, institutions_visible_to, pools_visible_to
from imaging.routing.models import Destination, RouteRule, State


class DestinationForm(forms.ModelForm):  # type: ignore[type-arg]
    token = forms.CharField(
        label=_("Bearer token"),
        required=False,
        strip=True,
        max_length=4000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Kept encrypted and never shown again. Leave empty to keep the one stored."),
    )
    clear_token = forms.BooleanField(label=_("Remove the stored token"), required=False)

    class Meta:
        model = Destination
        fields = ["name", "kind", "ae_title", "host", "port", "calling_ae", "url", "active"]
        help_texts = {
            "ae_title": _("The destination's own AE title (DICOM)."),
            "calling_ae": _("Ours when we call it; empty: your institution's AE title."),
            "url": _("The DICOMweb service, e.g. https://pacs.example.org/dicomweb (we POST to …/studies)."),
        }

    def token_change(self) -> str | None:
        """The token to store: a new one, "" to remove it, None to keep it."""
        if self.cleaned_data.get("clear_token"):
            return ""
        return self.cleaned_data.get("token") or None


class RuleForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = RouteRule
        fields = [
            "name",
            "destination",
            "trigger",
            "modality",
            "source_ae",
            "description",
            "description_match",
            "case_kind",
            "target_institution",
            "target_pool",
            "prefetch",
            "active",
        ]
        help_texts = {
            "modality": _("e.g. CT; empty: any."),
            "source_ae": _("Only what this device sent; empty: any."),
            "description": _("Empty: any description."),
            "target_institution": _("Case rules: only cases sent to this institution."),
            "target_pool": _("Case rules: only consults sent to this desk."),
            "prefetch": _("Case rules: the patient's earlier studies your devices may see go along."),
        }

    def __init__(self, *args: Any, principal: Principal, destinations: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["destination"].queryset = destinations  # type: ignore[attr-defined]
        self.fields["target_institution"].queryset = institutions_visible_to(principal)  # type: ignore[attr-defined]
        self.fields["target_pool"].queryset = pools_visible_to(principal).filter(active=True)  # type: ignore[attr-defined]


class QueueFilterForm(forms.Form):
    state = forms.ChoiceField(label=_("State"), required=False, choices=[("", _("Any"))] + list(State.choices))
    destination = forms.ModelChoiceField(
        label=_("Destination"), required=False, queryset=Destination.objects.none(), empty_label=_("Any")
    )
    q = forms.CharField(label=_("Study UID, accession or description"), required=False, max_length=64)

    def __init__(self, *args: Any, destinations: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["destination"].queryset = destinations  # type: ignore[attr-defined]


class SendForm(forms.Form):
    destination = forms.ModelChoiceField(label=_("Send to"), queryset=Destination.objects.none(), empty_label=None)

    def __init__(self, *args: Any, destinations: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["destination"].queryset = destinations  # type: ignore[attr-defined]

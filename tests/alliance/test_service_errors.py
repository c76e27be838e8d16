"""alliance.forms: the one way every app's pages show a service's refusal, as a message
(error_text) or on the form's fields (apply_service_errors)."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from alliance.access import AccessDenied
from alliance.forms import apply_service_errors, error_text


def test_a_refusal_with_field_names_reads_as_its_messages() -> None:
    exc = ValidationError({"reason": ["Say why."], "text": ["Too long.", "Not on the list."]})
    assert error_text(exc) == "Say why. Too long. Not on the list."


def test_a_refusal_without_field_names_and_any_other_error_read_as_their_text() -> None:
    assert error_text(ValidationError("The study has no image.")) == "The study has no image."
    assert error_text(AccessDenied("Only the reader flags.")) == "Only the reader flags."


class _Form(forms.Form):
    reason = forms.CharField(required=False)


def test_a_refusal_goes_on_the_field_it_names_else_on_top() -> None:
    form = _Form({"reason": ""})
    assert form.is_valid()
    apply_service_errors(form, ValidationError({"reason": ["Say why."], "pool": ["No such pool."]}))
    assert form.errors == {"reason": ["Say why."], "__all__": ["No such pool."]}
    form = _Form({"reason": ""})
    assert form.is_valid()
    apply_service_errors(form, ValidationError("Nothing was changed."))
    assert form.non_field_errors() == ["Nothing was changed."]

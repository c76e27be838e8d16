"""Forms of the alliance's own pages (the admin console's forms live in alliance/console)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from alliance import audit
from alliance.models import AuditEvent, Institution

User = get_user_model()


def apply_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the fields it names (unknown names go on top).

    A uniqueness error over several columns (e.g. a department name within its
    institution) is shown on the one column of them that the form has.
    """
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for name, errors in exc.error_dict.items():
        for error in errors:
            target = name if name in form.fields else None
            if name == NON_FIELD_ERRORS:
                unique = (error.params or {}).get("unique_check", ())
                target = next((field for field in reversed(unique) if field in form.fields), None)
            form.add_error(target, error)


def error_text(exc: Exception) -> str:
    """A service's refusal as one line for a page message: every message of a ValidationError
    (with or without field names), else the exception's own text."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return " ".join(m for msgs in exc.message_dict.values() for m in msgs)
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


def _actor_matches(text: str) -> Q:
    """A doctor by user name or by name (their user ids), or a device by AE title."""
    text = text.strip()
    named = User.objects.filter(Q(first_name__icontains=text) | Q(last_name__icontains=text))
    ids = [str(pk) for pk in named.values_list("pk", flat=True)[:200]]
    return Q(actor_name__icontains=text) | Q(actor_type="user", actor_id__in=ids)


class AuditFilterForm(forms.Form):
    date_from = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    patient_id = forms.CharField(label=_("Patient ID"), required=False, max_length=64, help_text=_("As on the images"))
    patient_name = forms.CharField(
        label=_("Patient name"), required=False, max_length=200, help_text=_("Every word must occur, e.g. 王芳")
    )
    study = forms.CharField(
        label=_("Study"), required=False, max_length=64, help_text=_("Study Instance UID or accession number")
    )
    actor = forms.CharField(
        label=_("Doctor or device"), required=False, max_length=200, help_text=_("User name, name or AE title")
    )
    institution = forms.ModelChoiceField(
        label=_("Institution"),
        required=False,
        queryset=Institution.objects.none(),
        empty_label=_("All"),
        error_messages={"invalid_choice": _("No institution of your alliance has this id.")},
    )
    action = forms.CharField(
        label=_("Action"), required=False, max_length=64, help_text=_("Starts with, e.g. study. or login")
    )
    object_type = forms.CharField(label=_("Object type"), required=False, max_length=64)
    object_id = forms.CharField(label=_("Object ID"), required=False, max_length=128)
    outcome = forms.ChoiceField(
        label=_("Outcome"), required=False, choices=[("", _("All")), *AuditEvent.Outcome.choices]
    )

    def __init__(self, *args: Any, institutions: QuerySet[Institution], alliance_id: int | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["institution"].queryset = institutions  # type: ignore[attr-defined]
        self.alliance_id = alliance_id

    def bad_fields(self) -> list[str]:
        """The labels of the filters that are not valid, for the message above the results."""
        return [str(self.fields[name].label) for name in self.errors if name in self.fields]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("The end date is before the start date."))
        return data

    def filter(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """The events matching the valid filters (call after is_valid())."""
        data = self.cleaned_data
        tz = timezone.get_current_timezone()
        if data.get("date_from"):
            events = events.filter(time__gte=datetime.combine(data["date_from"], time.min, tzinfo=tz))
        if data.get("date_to"):
            events = events.filter(time__lt=datetime.combine(data["date_to"] + timedelta(days=1), time.min, tzinfo=tz))
        if data.get("actor"):
            events = events.filter(_actor_matches(data["actor"]))
        if data.get("institution"):
            events = events.filter(actor_institution_id=data["institution"].pk)
        if data.get("action"):
            events = events.filter(action__istartswith=data["action"])
        if data.get("object_type"):
            events = events.filter(object_type__iexact=data["object_type"])
        if data.get("object_id"):
            events = events.filter(object_id=data["object_id"])
        if data.get("patient_id") or data.get("patient_name"):
            keys = audit.lookup("patient", self.alliance_id, data.get("patient_id", ""), data.get("patient_name", ""))
            events = events.filter(patient__in=keys or [])
        if data.get("study"):
            uids = audit.lookup("study", self.alliance_id, data["study"]) or [data["study"].strip()]
            events = events.filter(object_id__in=uids)
        if data.get("outcome"):
            events = events.filter(outcome=data["outcome"])
        return events

    def applied(self) -> dict[str, str]:
        """The filters in use, for the audit record of the search itself."""
        return {name: str(value) for name, value in self.cleaned_data.items() if value not in (None, "")}


class FiguresFilterForm(forms.Form):
    """The figures' date range (inclusive days in the reader's zone) and institution.

    A bad value is answered with a message that names the field: the messages stand alone
    at the top of the page as well as under their field."""

    MAX_DAYS = 3 * 366

    date_from = forms.DateField(
        label=_("From"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": _("From: enter a date as YYYY-MM-DD.")},
    )
    date_to = forms.DateField(
        label=_("To"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": _("To: enter a date as YYYY-MM-DD.")},
    )
    institution = forms.ModelChoiceField(
        label=_("Institution"),
        required=False,
        queryset=Institution.objects.none(),
        empty_label=_("All I may see"),
        error_messages={"invalid_choice": _("Institution: not a member whose figures you may see.")},
    )

    def __init__(self, *args: Any, institutions: QuerySet[Institution], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["institution"].queryset = institutions.order_by("name")  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("To: the end date is before the start date."))
        elif start and end and (end - start).days > self.MAX_DAYS:
            self.add_error("date_from", _("From: the range may span at most three years."))
        return data

    @staticmethod
    def default_window(today: date) -> tuple[date, date]:
        """The twelve months to today (the first of the month eleven months before)."""
        return _twelve_months_before(today), today

    def window(self, today: date) -> tuple[date, date]:
        """(first day, last day): the chosen days, by default the twelve months to today."""
        data = self.cleaned_data if self.is_bound else {}
        end = data.get("date_to") or today
        start = data.get("date_from") or _twelve_months_before(end)
        return start, end


def _twelve_months_before(day: date) -> date:
    """The first day of the month eleven months before `day`'s (twelve months in all)."""
    months = day.year * 12 + day.month - 1 - 11
    return date(months // 12, months % 12 + 1, 1)

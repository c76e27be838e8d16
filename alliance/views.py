"""The home page for each role, the lockout page and the audit log."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext
from django.views import defaults

from alliance import access, audit, open_work
from alliance.forms import AuditFilterForm
from alliance.middleware import DATABASE_UNAVAILABLE, database_unavailable
from alliance.models import AuditEvent, Device, Doctor, Institution, Pool, Role

AUDIT_PAGE_SIZE = 50


@login_required
def home(request: HttpRequest) -> HttpResponse:
    doctor = access.principal_of(request).doctor
    context: dict[str, Any] = {"doctor": doctor}
    if doctor is not None:
        context["roles"] = set(doctor.roles)
        context["role_labels"] = [Role(role).label for role in doctor.roles if role in Role.values]
        context["modules"] = set(doctor.institution.modules)
        context["dicom_port"] = settings.DICOM_PORT
        context["my_pools"] = list(doctor.pools.filter(active=True).select_related("specialty", "institution"))
        if doctor.has_role(Role.INSTITUTION_ADMIN):
            context["institution_figures"] = _institution_figures(doctor.institution)
        if doctor.has_role(Role.ALLIANCE_ADMIN):
            context["alliance_figures"] = _alliance_figures(access.principal_of(request))
        context["open_work"] = _open_work(request)
        context["has_open_work"] = any(work.items for work in context["open_work"])
    return render(request, "alliance/home.html", context)


def _open_work(request: HttpRequest) -> list[open_work.WorkList]:
    """The lists of what waits for the user (registered by consults and referrals); every
    line names a patient, so the page audits each case it shows."""
    principal = access.principal_of(request)
    lists = open_work.open_work(principal, open_work.previous_sign_in(principal))
    for object_type, items in open_work.audit_items(lists).items():
        audit.record_many(
            read=True,
            actor=audit.actor_of(request),
            action=f"{object_type}.list",
            object_type=object_type,
            items=items,
            source=audit.source_of(request),
            detail={"via": "home"},
        )
    return lists


def _institution_figures(institution: Institution) -> dict[str, int]:
    return {
        "doctors": Doctor.objects.filter(institution=institution, active=True).count(),
        "departments": institution.departments.filter(active=True).count(),
        "pools": institution.pools.filter(active=True).count(),
        "devices": institution.devices.filter(active=True).count(),
    }


def _alliance_figures(principal: access.Principal) -> dict[str, Any]:
    institutions = access.institutions_managed_by(principal)
    by_level = dict(
        institutions.filter(active=True).values_list("level").annotate(n=Count("pk")).values_list("level", "n")
    )
    since = timezone.now() - timedelta(days=1)
    return {
        "institutions": institutions.filter(active=True).count(),
        "levels": [(label, by_level.get(value, 0)) for value, label in Institution.Level.choices],
        "doctors": Doctor.objects.filter(institution__in=institutions, active=True).count(),
        "pools": Pool.objects.filter(institution__in=institutions, active=True).count(),
        "devices": Device.objects.filter(institution__in=institutions, active=True).count(),
        "failed_logins": access.audit_events_visible_to(principal)
        .filter(Q(action="login") & ~Q(outcome=AuditEvent.Outcome.SUCCESS), time__gte=since)
        .count(),
    }


def locked_out(
    request: HttpRequest, credentials: dict[str, Any] | None = None, *args: Any, **kwargs: Any
) -> HttpResponse:
    """django-axes' lockout response (AXES_LOCKOUT_CALLABLE): the attempt is already audited as failed."""
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "lockout_minutes": round(settings.AXES_COOLOFF_TIME * 60),
    }
    return render(request, "registration/locked_out.html", context, status=429)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the database unavailable where no view could answer for it (the session or
    the user read by a middleware) is a 503 as well (DatabaseUnavailableMiddleware)."""
    exception = sys.exc_info()[1]  # Django calls handler500 while it handles the exception
    if isinstance(exception, DATABASE_UNAVAILABLE):
        return database_unavailable(request, exception)
    return defaults.server_error(request)


# --- audit log ------------------------------------------------------------------------


def _audit_search(request: HttpRequest) -> tuple[AuditFilterForm, Any]:
    principal = access.principal_of(request)
    if not access.may_read_audit(principal):
        raise PermissionDenied
    institutions = access.institutions_managed_by(principal)
    alliance_id = principal.doctor.institution.alliance_id if principal.doctor is not None else None
    form = AuditFilterForm(request.GET or None, institutions=institutions, alliance_id=alliance_id)
    events = access.audit_events_visible_to(principal)
    if form.is_bound and form.is_valid():
        events = form.filter(events)
    elif form.is_bound:
        events = events.none()
    return form, events


def _filters_of(form: AuditFilterForm) -> dict[str, str]:
    return form.applied() if form.is_bound and form.is_valid() else {}


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form, events = _audit_search(request)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    audit.record(
        actor=access.principal_of(request).actor,
        action="audit.view",
        object_type="audit",
        source=audit.source_of(request),
        detail={"filters": _filters_of(form), "page": page.number},
    )
    names = _institution_names({e.actor_institution_id for e in page})
    labels = audit.patient_labels([e.patient for e in page if e.patient])
    for event in page:
        event.institution_name = names.get(event.actor_institution_id, "")
        event.summary = audit.summary(event.detail)
        event.patient_label = audit.patient_label(event.patient, labels)
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page_obj": page, "query_string": query.urlencode(), "bad_fields": _bad_fields(form)}
    return render(request, "alliance/audit_log.html", context)


def _institution_names(ids: set[int | None]) -> dict[int | None, str]:
    return dict(Institution.objects.filter(pk__in=[i for i in ids if i]).values_list("pk", "name"))


def _bad_fields(form: AuditFilterForm) -> str:
    return ", ".join(form.bad_fields()) if form.is_bound and not form.is_valid() else ""


CSV_COLUMNS = (
    "time",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_institution_id",
    "actor_institution",
    "action",
    "object_type",
    "object_id",
    "patient",
    "patient_label",
    "basis",
    "source",
    "outcome",
    "detail",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value: Any) -> str:
    """Keep spreadsheet programs from running a cell as a formula (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _chunks(events: Any, size: int = 2000) -> Iterator[list[AuditEvent]]:
    chunk: list[AuditEvent] = []
    for event in events.iterator(chunk_size=size):
        chunk.append(event)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _csv_rows(events: Any) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff"  # a byte-order mark, so that spreadsheet programs read the Chinese as UTF-8
    yield writer.writerow(CSV_COLUMNS)
    for chunk in _chunks(events):  # names and patients looked up once per chunk, not per row
        names = _institution_names({e.actor_institution_id for e in chunk})
        labels = audit.patient_labels([e.patient for e in chunk if e.patient])
        for event in chunk:
            readable = {
                "actor_institution": names.get(event.actor_institution_id, ""),
                "patient_label": audit.patient_label(event.patient, labels),
            }
            row = [readable[c] if c in readable else getattr(event, c) for c in CSV_COLUMNS]
            row[0] = timezone.localtime(event.time).isoformat()  # ISO 8601 with the reader's zone offset
            row[-1] = json.dumps(event.detail, ensure_ascii=False, sort_keys=True)
            yield writer.writerow([_csv_safe(value) for value in row])


@login_required
def audit_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    form, events = _audit_search(request)
    bad = _bad_fields(form)
    if bad:
        message = gettext("These filters are not valid: %(fields)s.") % {"fields": bad}
        return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
    audit.record(
        actor=access.principal_of(request).actor,
        action="audit.export",
        object_type="audit",
        source=audit.source_of(request),
        detail={"filters": _filters_of(form)},
    )
    response = StreamingHttpResponse(_csv_rows(events), content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response

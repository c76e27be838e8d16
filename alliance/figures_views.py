"""The figures pages: every registered section for the institutions the principal may see,
filtered by date range and institution, each table also as CSV (alliance.figures)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.formats import number_format

from alliance import access, audit, charts, figures
from alliance.forms import FiguresFilterForm

FILTER_FIELDS = ("date_from", "date_to", "institution")


def _filter(request: HttpRequest) -> tuple[FiguresFilterForm, figures.Scope | None]:
    """The filter form and, when it is valid, the scope the sections compute over."""
    principal = access.principal_of(request)
    if not access.may_see_figures(principal):
        raise PermissionDenied
    institutions = access.figures_institutions_for(principal)
    bound = any(request.GET.get(name) for name in FILTER_FIELDS)
    today = timezone.localdate()
    default_from, default_to = FiguresFilterForm.default_window(today)
    form = FiguresFilterForm(
        request.GET if bound else None,
        institutions=institutions,
        initial={"date_from": default_from, "date_to": default_to},
    )
    if bound and not form.is_valid():
        return form, None
    chosen = form.cleaned_data.get("institution") if bound else None
    ids = (chosen.pk,) if chosen else tuple(institutions.order_by("pk").values_list("pk", flat=True))
    first, last = form.window(today)
    tz = timezone.get_current_timezone()
    scope = figures.Scope(
        alliance_id=principal.doctor.institution.alliance_id,  # type: ignore[union-attr]
        institution_ids=ids,
        start=datetime.combine(first, time.min, tzinfo=tz),
        end=datetime.combine(max(first, last) + timedelta(days=1), time.min, tzinfo=tz),
        now=timezone.now(),
        tz=tz,
        whole_alliance=chosen is None and principal.is_alliance_admin,
    )
    return form, scope


def _applied(form: FiguresFilterForm) -> dict[str, str]:
    if not form.is_bound or not form.is_valid():
        return {}
    return {name: str(getattr(value, "pk", value)) for name, value in form.cleaned_data.items() if value}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return number_format(round(value, 1), decimal_pos=1, use_l10n=True)
    if isinstance(value, int):
        return number_format(value, use_l10n=True, force_grouping=True)
    return str(value)


def _table_view(section: figures.Section, table: figures.Table) -> dict[str, Any]:
    return {
        "table": table,
        # (column, value) per cell: the column names each value on a phone, where rows are cards.
        "rows": [list(zip(table.columns, [_cell(value) for value in row], strict=False)) for row in table.rows],
        "svg": charts.render(table.chart, str(table.title)) if table.chart else "",
        "csv_name": f"{section.key}/{table.key}.csv",
    }


@login_required
def figures_page(request: HttpRequest) -> HttpResponse:
    form, scope = _filter(request)
    sections = []
    if scope is not None:
        for section in figures.sections():
            tables = [_table_view(section, table) for table in section.compute(scope, None)]
            sections.append({"section": section, "tables": tables})
    audit.record(
        actor=access.principal_of(request).actor,
        action="figures.view",
        object_type="figures",
        source=audit.source_of(request),
        detail={"filters": _applied(form)},
    )
    errors = [str(error) for errors in form.errors.values() for error in errors] if form.is_bound else []
    context = {
        "form": form,
        "scope": scope,
        "sections": sections,
        "errors": errors,
        "query_string": request.GET.urlencode(),
        "last_day": (scope.end - timedelta(days=1)).date() if scope else None,
    }
    return render(request, "alliance/figures.html", context)


def _csv_value(value: Any) -> str:
    """Numbers as numbers; text kept from being run as a spreadsheet formula (CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@login_required
def figures_csv(request: HttpRequest, section: str, table: str) -> HttpResponse:
    form, scope = _filter(request)
    registered = figures.section(section)
    if registered is None:
        raise Http404
    if scope is None:
        message = " ".join(str(error) for errors in form.errors.values() for error in errors)
        return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
    chosen = next((t for t in registered.compute(scope, table) if t.key == table), None)
    if chosen is None:
        raise Http404
    audit.record(
        actor=access.principal_of(request).actor,
        action="figures.export",
        object_type="figures",
        object_id=f"{section}/{table}",
        source=audit.source_of(request),
        detail={"filters": _applied(form)},
    )
    buffer = io.StringIO()
    buffer.write("\ufeff")  # a byte-order mark, so that spreadsheet programs read the Chinese as UTF-8
    writer = csv.writer(buffer)
    writer.writerow([str(column) for column in chosen.columns])
    writer.writerows([_csv_value(value) for value in row] for row in chosen.rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    first: date = scope.start.date()
    last: date = (scope.end - timedelta(days=1)).date()
    response["Content-Disposition"] = f'attachment; filename="figures-{section}-{table}-{first}-{last}.csv"'
    return response

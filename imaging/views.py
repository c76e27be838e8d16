"""Imaging pages: the study list, the study page, series thumbnails and the upload page.

Each page that shows patient data writes its audit events in the request that shows it;
a missing study and a forbidden one give the same 404 (alliance.access.get_study_for).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from alliance import access, audit
from imaging import selectors
from imaging.forms import StudySearchForm
from imaging.models import Study

STUDIES_PER_PAGE = 25


def shared_badge(basis: str) -> str:
    """How a study reached the user, for the list's badge ("" for their own institution's)."""
    kind, _sep, number = basis.partition(":")
    if kind == "consult":
        return _("Shared via consult %(number)s") % {"number": number}
    if kind == "referral":
        return _("Shared via referral %(number)s") % {"number": number}
    if kind == "break-glass":
        return _("Emergency access")
    if basis and basis != "own-institution":
        return _("Shared (%(basis)s)") % {"basis": basis}
    return ""


def _audit_studies(request: HttpRequest, action: str, studies: Iterable[Study], bases: dict[int, str]) -> None:
    audit.record_many(
        actor=audit.Actor.for_user(request.user),
        action=action,
        object_type="study",
        items=[(s.study_uid, str(s.patient_id), bases.get(s.pk, "")) for s in studies],
        source=audit.source_of(request),
    )


@login_required
@require_GET
def study_list(request: HttpRequest) -> HttpResponse:
    form = StudySearchForm(request.GET or None, user=request.user)
    query = form.to_query() if form.is_valid() else selectors.StudyQuery()
    if form.is_bound and not form.is_valid():
        studies = Study.objects.none()
    else:
        studies = selectors.studies_for(request.user, query)
    page = Paginator(studies, STUDIES_PER_PAGE).get_page(request.GET.get("page"))
    shown = list(page.object_list)
    bases = access.bases_for(request.user, shown)
    with transaction.atomic():
        _audit_studies(request, "study.list", shown, bases)
    rows = [(study, shared_badge(bases.get(study.pk, ""))) for study in shown]
    params = request.GET.copy()
    params.pop("page", None)
    context = {"form": form, "page": page, "rows": rows, "query_string": params.urlencode()}
    return render(request, "imaging/study_list.html", context)


@login_required
@require_GET
def study_detail(request: HttpRequest, study_uid: str) -> HttpResponse:
    study = access.get_study_for(request.user, study_uid)
    basis = access.basis_for(request.user, study)
    series = list(selectors.series_of(study))
    with transaction.atomic():
        audit.record(
            actor=audit.Actor.for_user(request.user),
            action="study.view",
            object_type="study",
            object_id=study.study_uid,
            patient=str(study.patient_id),
            basis=basis,
            source=audit.source_of(request),
        )
    context = {"study": study, "series_list": series, "badge": shared_badge(basis)}
    return render(request, "imaging/study_detail.html", context)

"""Imaging pages: the study list, the study page, series thumbnails and the upload page.

Each page that shows patient data writes its audit events in the request that shows it;
a missing study and a forbidden one give the same 404 (imaging.access.get_study_for).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from alliance import audit
from alliance.access import principal_of
from alliance.middleware import cache_privately
from imaging import access, film_desk, films, maintenance, selectors, study_cases, uploads
from imaging import render as rendering
from imaging.dicomweb.views import audit_unservable
from imaging.forms import StudySearchForm
from imaging.models import Instance, Study
from imaging.routing import views as routing_views

STUDIES_PER_PAGE = 25
# Series of these modalities hold documents or presentation states, not pixels.
NO_IMAGE_MODALITIES = {"SR", "PR", "KO", "DOC", "REG", "SEG", "RWV"}


def shared_badge(basis: str) -> str:
    """How a study reached the user, for the list's badge ("" for their own institution's)."""
    kind, _sep, number = basis.partition(":")
    if kind == "consult":
        return _("Shared via consult %(number)s") % {"number": number}
    if kind == "referral":
        return _("Shared via referral %(number)s") % {"number": number}
    if kind == "break-glass":
        return _("Emergency access")
    if kind == "screening-round":
        return _("Shared for a screening reading")
    if basis and basis != "own-institution":
        return _("Shared (%(basis)s)") % {"basis": basis}
    return ""


class Row(NamedTuple):
    """One line of the study list: the study, how it is shared when it is, its cases and
    their report status (imaging.study_cases)."""

    study: Study
    badge: str
    badge_url: str
    cases: list[study_cases.StudyCase]
    report_status: str


def basis_url(basis: str) -> str:
    """The case that shares the study, when that app is mounted ("" otherwise)."""
    kind, _sep, number = basis.partition(":")
    if kind not in {"consult", "referral"} or not number.isdigit():
        return ""
    try:
        return reverse(f"{kind}s:detail", args=[int(number)])
    except NoReverseMatch:
        return ""


@login_required
@require_GET
def study_list(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    form = StudySearchForm(request.GET or None, principal=principal)
    query = form.to_query() if form.is_valid() else selectors.StudyQuery()
    if form.is_bound and not form.is_valid():
        studies = Study.objects.none()
    else:
        studies = selectors.studies_for(principal, query)
    page = Paginator(studies, STUDIES_PER_PAGE).get_page(request.GET.get("page"))
    shown = list(page.object_list)
    bases = access.bases_for(principal, shown)
    audit.read_many(request, shown, "study.list", bases)
    cases = study_cases.cases_of(principal, [s.pk for s in shown])
    study_cases.audit_cases(request, cases, shown, via="study-list")
    rows = [_row(s, bases.get(s.pk, ""), cases.get(s.pk, [])) for s in shown]
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "rows": rows,
        "query_string": params.urlencode(),
        "date_sort_url": _date_sort_url(request, query.oldest_first),
        "oldest_first": query.oldest_first,
        "report_labels": study_cases.REPORT_LABELS,
    }
    return render(request, "imaging/study_list.html", context)


def _row(study: Study, basis: str, cases: list[study_cases.StudyCase]) -> Row:
    return Row(study, shared_badge(basis), basis_url(basis), cases, study_cases.report_status(cases))


def _date_sort_url(request: HttpRequest, oldest_first: bool) -> str:
    """The study date column's link: the same search in the other order, from page one."""
    params = request.GET.copy()
    params.pop("page", None)
    params["sort"] = "newest" if oldest_first else "oldest"
    return "?" + params.urlencode()


@login_required
@require_GET
def study_detail(request: HttpRequest, study_uid: str) -> HttpResponse:
    principal = principal_of(request)
    study = access.get_study_for(principal, study_uid)
    basis = access.basis_for(principal, study)
    series = list(selectors.series_of(study))
    audit.read(request, study, "study.view", basis)
    # The patient's other studies this user may see (same issuer or a linked patient).
    priors = selectors.prior_studies(principal, study)
    audit.read_many(request, priors, "study.list", access.bases_for(principal, priors))
    with_images = {s.pk for s in series if s.num_instances and s.modality.upper() not in NO_IMAGE_MODALITIES}
    may_move_series = access.may_move_series(principal, study)
    cases = study_cases.cases_of(principal, [study.pk])
    study_cases.audit_cases(request, cases, [study], via="study-page")
    context = {
        "study": study,
        "series_list": series,
        "with_images": with_images,
        "badge": shared_badge(basis),
        "badge_url": basis_url(basis),
        "own_study": basis == access.OWN_INSTITUTION,  # consults' context processor adds may_request_consult
        "may_make_film": films.may_make_film(principal, study),
        "film_links": film_desk.links_of_study(principal, study),
        "emergency": access.active_break_glass(principal, study),
        "may_correct_patient": access.may_correct_patient(principal, study.patient),
        "may_delete_study": access.may_delete_study(principal, study),
        "may_move_series": may_move_series,
        "unmovable_series": maintenance.unmovable_series(series) if may_move_series else set(),
        "retention_days": maintenance.RETENTION_DAYS,
        "study_cases": cases.get(study.pk, []),
        "study_actions": study_cases.actions_of(principal, study),
        "priors": priors,
        "send_form": routing_views.send_form_for(principal, study),
    }
    return render(request, "imaging/study_detail.html", context)


@login_required
@require_GET
def thumbnail(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str = "") -> HttpResponse:
    """A series' thumbnail (its middle slice), or one instance's, as JPEG."""
    principal = principal_of(request)
    instance: Instance | None
    if sop_uid:
        instance = selectors.get_instance_for(principal, study_uid, series_uid, sop_uid)
    else:
        series = selectors.get_series_for(principal, series_uid, study_uid)
        instance = selectors.representative_instance(series)
        if instance is None:
            raise Http404("The series has no instances.")
        instance.series = series
    study = instance.series.study
    try:
        jpeg = rendering.thumbnail(instance)
    except (rendering.RenderError, OSError) as exc:
        if isinstance(exc, OSError):
            audit_unservable(request, study, instance, via="thumbnail", error=exc)
        return no_thumbnail()
    audit.read(request, instance, "instance.thumbnail", access.basis_for(principal, study))
    return cache_privately(HttpResponse(jpeg, content_type="image/jpeg"), 3600, token=False)


def _uploader_institution(request: HttpRequest) -> Any:
    institution = access.upload_institution_of(principal_of(request))
    if institution is None:
        raise PermissionDenied(_("Only clinicians of an institution may upload its studies."))
    return institution


@login_required
@require_GET
def upload(request: HttpRequest) -> HttpResponse:
    institution = _uploader_institution(request)
    context = {"institution": institution, "max_file_bytes": settings.DICOM_MAX_FILE_BYTES}
    return render(request, "imaging/upload.html", context)


@login_required
@require_POST
def upload_files(request: HttpRequest) -> HttpResponse:
    """Ingest the posted files (DICOM files, or zips of them): one result per file.

    The page's script posts small batches and asks for JSON; without script the form
    posts here and the same page comes back with the results.
    """
    institution = _uploader_institution(request)
    files = request.FILES.getlist("files")
    paths = request.POST.getlist("paths")
    results: list[uploads.FileResult] = []
    for index, uploaded in enumerate(files):
        name = paths[index] if index < len(paths) and paths[index] else uploaded.name or "?"
        results += uploads.ingest_upload(
            uploaded,
            name=name,
            institution=institution,
            actor=audit.actor_of(request),
            source=audit.source_of(request),
        )
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not files:
        message = _("Choose at least one file to upload.")
        if wants_json:
            return JsonResponse({"error": message, "results": []}, status=400)
        context = {"institution": institution, "max_file_bytes": settings.DICOM_MAX_FILE_BYTES, "error": message}
        return render(request, "imaging/upload.html", context, status=400)
    if wants_json:
        return JsonResponse({"results": [r.as_dict() for r in results]})
    context = {"institution": institution, "results": results, "max_file_bytes": settings.DICOM_MAX_FILE_BYTES}
    return render(request, "imaging/upload.html", context)


# What the study page shows for a series whose image cannot be made (pixels that do not
# decode, a stored file gone): a dark tile with a crossed frame, no words to translate.
NO_THUMBNAIL_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128">'
    b'<rect width="128" height="128" fill="#1f2933"/>'
    b'<rect x="34" y="34" width="60" height="60" fill="none" stroke="#7b8794" stroke-width="4"/>'
    b'<path d="M34 34L94 94M94 34L34 94" stroke="#7b8794" stroke-width="4"/></svg>'
)


def no_thumbnail() -> HttpResponse:
    return cache_privately(HttpResponse(NO_THUMBNAIL_SVG, content_type="image/svg+xml"), 300, token=False)

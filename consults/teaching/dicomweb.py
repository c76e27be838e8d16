"""The viewer's DICOMweb for a teaching case: /teaching/<pk>/dicomweb/studies/<study>/...

The study viewer (imaging.viewer) reads a study from a DICOMweb root it is given; a case's
page gives it this one, which serves the case's de-identified copies and nothing else: the
series and instance searches (from the case's own index) and imaging's WADO-RS views for
metadata, frames, rendered images and thumbnails, resolved to the case's images instead of a
patient study. GET only. Who may read the case decides who may read its images
(consults.teaching.access).

Reads are audited as teaching reads ("teaching.image", no patient): once per opening of the
case in the browser's session (the case page writes "teaching.view"), otherwise one event per
request, as DICOMweb does for studies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import get_script_prefix, reverse
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response

from alliance import audit
from alliance.access import principal_of
from consults.teaching import access
from consults.teaching.models import TeachingCase, TeachingImage
from imaging.dicomweb import media, wado
from imaging.dicomweb.views import DicomWebView

# Cases this browser session opened (the case page wrote "teaching.view") or listed (the
# library wrote "teaching.list"), with when: their image reads are part of that read.
SESSION_KEY = "teaching.read"


def remember(request: HttpRequest, cases: Iterable[TeachingCase]) -> None:
    """The cases were shown (and audited) on a page: the image reads of this session follow from it."""
    seen = dict(request.session.get(SESSION_KEY, {}))
    now = int(time.time())
    seen.update({str(case.pk): now for case in cases})
    request.session[SESSION_KEY] = seen


def covered(request: HttpRequest, case: TeachingCase) -> bool:
    """Whether a read of the case's images belongs to a page this session already audited."""
    if isinstance(request, Request):
        if not isinstance(getattr(request, "successful_authenticator", None), SessionAuthentication):
            return False
    seen = request.session.get(SESSION_KEY, {}).get(str(case.pk), 0)
    return bool(seen >= time.time() - settings.SESSION_COOKIE_AGE)


def dicomweb_root(case: TeachingCase) -> str:
    """The DICOMweb root the viewer is given for the case (a path on this site)."""
    return reverse("teaching:case", args=[case.pk]) + "dicomweb"


def _root_path(pk: int) -> str:
    """The root without the site's script prefix, as imaging.dicomweb.views.base_url adds SITE_URL."""
    return reverse("teaching:case", args=[pk])[len(get_script_prefix()) - 1 :] + "dicomweb"


def absolute_root(case: TeachingCase) -> str:
    """The root as answers name it (RetrieveURL, BulkDataURI)."""
    return settings.SITE_URL + _root_path(case.pk)


@dataclass(frozen=True)
class CaseStudy:
    """What imaging's WADO-RS views need of "the study": a case's copies are no patient study."""

    case: TeachingCase
    study_uid: str

    @property
    def pk(self) -> int:
        return self.case.pk

    @property
    def patient_id(self) -> str:
        return ""


class _CaseImages(DicomWebView):
    """Resolves the path to the case the caller may read and the images it names."""

    http_method_names = ["get", "head", "options"]

    def case(self, request: Request) -> TeachingCase:
        return access.get_case_for(principal_of(request), getattr(request, "teaching_case_pk", None))

    def instances(self, request: Request, study: str, series: str = "", instance: str = "") -> Any:
        case = self.case(request)
        rows = case.images.filter(study_uid=study)
        if series:
            rows = rows.filter(series_uid=series)
        if instance:
            rows = rows.filter(sop_uid=instance)
        found = list(rows.order_by("series_number", "series_uid", "instance_number", "pk"))
        if not found:
            raise Http404("No such series or instance.")
        for image in found:  # what imaging's views read of an Instance's series
            image.series = _SeriesRef(image.series_uid, study)  # type: ignore[attr-defined]
            image.series_id = image.series_uid  # type: ignore[attr-defined]
        return CaseStudy(case, study), found

    def instance_url(self, study: Any, instance: Any) -> str:
        return (
            f"{wado.base_url(self.request)}/studies/{study.study_uid}"
            f"/series/{instance.series_uid}/instances/{instance.sop_uid}"
        )

    def audit(self, request: Request, action: str, studies: Iterable[Any], **detail: Any) -> None:
        for study in studies:
            if covered(request, study.case):
                continue
            audit.record(
                actor=audit.actor_of(request),
                action="teaching.image",
                object_type=TeachingCase.audit_type,
                object_id=study.case.pk,
                basis=access.LIBRARY_BASIS,
                source=audit.source_of(request),
                detail={"read": action, **{k: v for k, v in detail.items() if isinstance(v, str | int)}},
            )


@dataclass(frozen=True)
class _SeriesRef:
    """image.series as imaging's views read it (its UID, and its study's)."""

    series_uid: str
    study_uid: str

    @property
    def study(self) -> Any:
        return _StudyRef(self.study_uid)


@dataclass(frozen=True)
class _StudyRef:
    study_uid: str


class RetrieveMetadata(_CaseImages, wado.RetrieveMetadata):
    pass


class RetrieveFrames(_CaseImages, wado.RetrieveFrames):
    pass


class RetrieveRendered(_CaseImages, wado.RetrieveRendered):
    pass


class RetrieveThumbnail(_CaseImages, wado.RetrieveThumbnail):
    pass


# --- searches, from the case's own index ------------------------------------------------------


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _optional(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


class SearchSeries(_CaseImages):
    """GET .../studies/{s}/series: the case's series (QIDO-RS attributes the viewer reads)."""

    def get(self, request: Request, study: str) -> Response:
        self.choose(request, [media.DICOM_JSON, media.JSON])
        case = self.case(request)
        series: dict[str, list[TeachingImage]] = {}
        for image in case.images.filter(study_uid=study).order_by("series_number", "series_uid", "instance_number"):
            series.setdefault(image.series_uid, []).append(image)
        found = [self._series(study, images) for images in series.values()]
        if found:
            self.audit(request, "dicomweb.search.series", [CaseStudy(case, study)])
        return Response(found or None, status=200 if found else 204)

    def _series(self, study: str, images: list[TeachingImage]) -> dict[str, Any]:
        first = images[0]
        return {
            "0020000D": _ui(study),
            "0020000E": _ui(first.series_uid),
            "00080060": _optional("CS", first.modality),
            "0008103E": _optional("LO", first.series_description),
            "00200011": _optional("IS", first.series_number),
            "00201209": {"vr": "IS", "Value": [len(images)]},
        }


class SearchInstances(_CaseImages):
    """GET .../studies/{s}/series/{se}/instances: the series' images in instance order."""

    def get(self, request: Request, study: str, series: str) -> Response:
        self.choose(request, [media.DICOM_JSON, media.JSON])
        case = self.case(request)
        images = case.images.filter(study_uid=study, series_uid=series).order_by("instance_number", "pk")
        found = [
            {
                "0020000D": _ui(study),
                "0020000E": _ui(series),
                "00080016": _ui(image.sop_class_uid),
                "00080018": _ui(image.sop_uid),
                "00200013": _optional("IS", image.instance_number),
                "00280010": _optional("US", image.rows),
                "00280011": _optional("US", image.columns),
            }
            for image in images
        ]
        if found:
            self.audit(request, "dicomweb.search.image", [CaseStudy(case, study)])
        return Response(found or None, status=200 if found else 204)


def for_case(view_class: type[DicomWebView]) -> Callable[..., HttpResponseBase]:
    """The view for .../teaching/<pk>/dicomweb/...: the case's pk taken off the path, and the
    root the answers' URLs are built on (BulkDataURI, RetrieveURL) set to the case's."""
    view = view_class.as_view()

    def case_view(request: HttpRequest, pk: int, **kwargs: Any) -> HttpResponseBase:
        request.teaching_case_pk = pk  # type: ignore[attr-defined]
        request.dicomweb_path = _root_path(pk)  # type: ignore[attr-defined]
        return view(request, **kwargs)

    case_view.view_class = view_class  # type: ignore[attr-defined]
    case_view.__module__ = __name__
    return case_view

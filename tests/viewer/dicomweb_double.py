"""A stand-in for /dicomweb/ while the real DICOMweb (issue 4) is not on main: just the
five reads the viewer makes, over rows and files that the tests store themselves."""

from __future__ import annotations

import io
import json

import numpy as np
import pydicom
from django.contrib.auth.decorators import login_required
from django.core.files.storage import storages
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import include, path
from PIL import Image

from alliance import access
from alliance.urls import urlpatterns as site_patterns
from imaging.models import Instance, Series


def _json(data: object) -> HttpResponse:
    return HttpResponse(json.dumps(data), content_type="application/dicom+json")


def _read(instance: Instance) -> pydicom.Dataset:
    with storages["dicom"].open(instance.storage_key) as fh:
        return pydicom.dcmread(fh)


def _instance(request: HttpRequest, study: str, series: str, sop: str) -> Instance:
    access.get_study_for(request.user, study)
    found = Instance.objects.filter(series__study__study_uid=study, series__series_uid=series, sop_uid=sop).first()
    if found is None:
        raise Http404
    return found


@login_required
def series_list(request: HttpRequest, study: str) -> HttpResponse:
    found = access.get_study_for(request.user, study)
    return _json(
        [
            {
                "0020000E": {"vr": "UI", "Value": [s.series_uid]},
                "00080060": {"vr": "CS", "Value": [s.modality]},
                "0008103E": {"vr": "LO", "Value": [s.description]},
                "00200011": {"vr": "IS", "Value": [s.series_number]},
                "00201209": {"vr": "IS", "Value": [s.num_instances]},
            }
            for s in found.series.all()
        ]
    )


@login_required
def metadata(request: HttpRequest, study: str, series: str) -> HttpResponse:
    access.get_study_for(request.user, study)
    rows = Series.objects.get(series_uid=series).instances.all()
    out = []
    for row in rows:
        ds = _read(row)
        del ds.PixelData
        out.append(ds.to_json_dict())
    return _json(out)


@login_required
def frame(request: HttpRequest, study: str, series: str, sop: str, n: int) -> HttpResponse:
    ds = _read(_instance(request, study, series, sop))
    return HttpResponse(ds.PixelData, content_type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1")


def _png(ds: pydicom.Dataset, center: float, width: float, size: int | None = None) -> HttpResponse:
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    grey = np.clip((hu - (center - width / 2)) / width * 255, 0, 255).astype(np.uint8)
    image = Image.fromarray(grey)
    if size:
        image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return HttpResponse(out.getvalue(), content_type="image/png")


@login_required
def rendered(request: HttpRequest, study: str, series: str, sop: str) -> HttpResponse:
    ds = _read(_instance(request, study, series, sop))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    if "window" in request.GET:
        center, width = (float(v) for v in request.GET["window"].split(",")[:2])
    return _png(ds, center, width)


@login_required
def thumbnail(request: HttpRequest, study: str, series: str) -> HttpResponse:
    access.get_study_for(request.user, study)
    rows = list(Series.objects.get(series_uid=series).instances.all())
    ds = _read(rows[len(rows) // 2])
    return _png(ds, float(ds.WindowCenter), float(ds.WindowWidth), size=128)


series_prefix = "studies/<str:study>/series/<str:series>/"
double_patterns = [
    path("studies/<str:study>/series", series_list),
    path(series_prefix + "metadata", metadata),
    path(series_prefix + "thumbnail", thumbnail),
    path(series_prefix + "instances/<str:sop>/frames/<int:n>", frame),
    path(series_prefix + "instances/<str:sop>/rendered", rendered),
]
urlpatterns = [path("dicomweb/", include(double_patterns)), *site_patterns]

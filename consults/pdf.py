"""The signed report as a printable PDF (WeasyPrint), with a QR code that opens the case for
doctors and, apart from it, the patient's cloud film QR code.

Chinese text needs a CJK font: the stylesheet asks fontconfig for Noto Sans CJK SC
(Debian fonts-noto-cjk); alliance.pdf.render_pdf refuses to print without one.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import segno
from django.conf import settings
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse

from alliance.pdf import render_pdf
from consults.models import Consult
from imaging import films, key_objects, render
from imaging.models import Instance

log = logging.getLogger(__name__)

MAX_KEY_IMAGES = 12  # two rows of a page: the report is not an image atlas


def case_url(consult: Consult, request: HttpRequest | None = None) -> str:
    """The case page, for a signed-in doctor who scans the QR code."""
    path = reverse("consults:detail", args=[consult.pk])
    return request.build_absolute_uri(path) if request is not None else settings.SITE_URL + path


def patient_film(consult: Consult) -> dict[str, Any] | None:
    """The patient's film QR (their images and this report on the phone), separate from the
    doctors' QR: when the case has a live film link (made on signing, imaging.films)."""
    film = films.case_link(consult.basis)
    if film is None:
        return None
    return {
        "url": film.url,
        "entry": settings.SITE_URL + reverse("films:enter"),
        "code": film.code_display,
        "pin": film.pin,
        "expires_at": film.link.expires_at,
        "qr": segno.make(film.url, error="m").svg_data_uri(scale=3, border=1),
    }


def render_report(consult: Consult, case: dict[str, Any], request: HttpRequest | None = None) -> bytes:
    url = case_url(consult, request)
    qr = segno.make(url, error="m").svg_data_uri(scale=3, border=1)
    context = {
        "consult": consult,
        "url": url,
        "qr": qr,
        "film": patient_film(consult),
        "key_images": key_image_thumbnails(consult, case["studies"]),
        **case,
    }
    html = render_to_string("consults/report_pdf.html", context, request=request)
    return render_pdf(html)


def key_image_thumbnails(consult: Consult, studies: list[Any]) -> list[dict[str, str]]:
    """The reader's key images (their Key Object Selection in each study, imaging.key_objects)
    as thumbnails from the render path (imaging.render), with where each comes from."""
    if consult.owner is None:
        return []
    found: list[dict[str, str]] = []
    for study in studies:
        uids = key_objects.key_objects_of(study, consult.owner.user_id)["key_images"][: MAX_KEY_IMAGES - len(found)]
        rows = Instance.objects.filter(series__study=study, sop_uid__in=uids).select_related("series")
        by_uid = {i.sop_uid: i for i in rows}
        found += [thumb for thumb in (_thumbnail(by_uid[u]) for u in uids if u in by_uid) if thumb is not None]
    return found


def _thumbnail(instance: Instance) -> dict[str, str] | None:
    try:
        jpeg = render.thumbnail(instance)
    except (render.RenderError, OSError) as exc:  # the report still prints without this image
        log.warning("key image %s cannot be rendered for the report: %s", instance.sop_uid, exc)
        return None
    series = instance.series
    caption = " · ".join(str(v) for v in (series.modality, series.description, instance.instance_number) if v)
    return {"src": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"), "caption": caption}

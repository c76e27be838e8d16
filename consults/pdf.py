"""The signed report as a printable PDF (WeasyPrint), with a QR code that opens the case for
doctors and, apart from it, the patient's cloud film QR code.

Chinese text needs a CJK font: the stylesheet asks fontconfig for Noto Sans CJK SC
(Debian fonts-noto-cjk); alliance.pdf.render_pdf refuses to print without one.
"""

from __future__ import annotations

from typing import Any

import segno
from django.conf import settings
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse

from alliance.pdf import render_pdf
from consults.models import Consult
from imaging import films


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
    context = {"consult": consult, "url": url, "qr": qr, "film": patient_film(consult), **case}
    html = render_to_string("consults/report_pdf.html", context, request=request)
    return render_pdf(html)

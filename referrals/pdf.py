"""The referral slip as a printable PDF (WeasyPrint), with a QR code that opens the case.

The patient carries it to the receiving institution. Chinese text needs a CJK font: the
stylesheet asks fontconfig for Noto Sans CJK SC (Debian fonts-noto-cjk); alliance.pdf.render_pdf
refuses to print without one.
"""

from __future__ import annotations

from typing import Any

import segno
from django.conf import settings
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse

from alliance.pdf import render_pdf
from referrals.models import Referral


def case_url(referral: Referral, request: HttpRequest | None = None) -> str:
    """The case page, for a signed-in doctor who scans the QR code."""
    path = reverse("referrals:detail", args=[referral.pk])
    return request.build_absolute_uri(path) if request is not None else settings.SITE_URL + path


def render_slip(referral: Referral, case: dict[str, Any], request: HttpRequest | None = None) -> bytes:
    url = case_url(referral, request)
    qr = segno.make(url, error="m").svg_data_uri(scale=3, border=1)
    html = render_to_string(
        "referrals/slip_pdf.html", {"referral": referral, "url": url, "qr": qr, **case}, request=request
    )
    return render_pdf(html)

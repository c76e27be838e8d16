"""Every PDF the product prints (reports, slips) goes through render_pdf (WeasyPrint).

Chinese text needs a CJK font that fontconfig can find (Debian's fonts-noto-cjk, see
.ci/install-system-packages). Without one WeasyPrint silently drops every Chinese character
(a signed report with a blank patient name), so printing refuses instead, with a message
saying what to install, and `manage.py check` warns at start-up.
"""

from __future__ import annotations

import shutil
import subprocess  # noqa: S404  (fc-list, a fixed argument list)
from functools import cache
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.translation import gettext as _


class MissingFont(RuntimeError):
    """No font on this server can print Chinese; nothing was printed."""


@cache
def cjk_font_families() -> tuple[str, ...]:
    """The font families fontconfig offers for Chinese (empty when none, or no fontconfig)."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return ()
    listed = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=False)  # noqa: S603
    return tuple(sorted({line.split(",")[0].strip() for line in listed.stdout.splitlines() if line.strip()}))


def missing_font_message() -> str:
    return _(
        "This server has no font for Chinese text, so it cannot print this PDF correctly. "
        "Install the Noto CJK fonts (Debian: apt-get install fonts-noto-cjk) and try again."
    )


def render_pdf(html: str) -> bytes:
    """The PDF of an HTML page (paths relative to the project), or MissingFont."""
    if not cjk_font_families():
        raise MissingFont(missing_font_message())
    from weasyprint import HTML

    return bytes(HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf())


def check_cjk_font(**_kwargs: Any) -> list[checks.CheckMessage]:
    """A system check: warn at start-up rather than print reports without their Chinese."""
    if cjk_font_families():
        return []
    return [
        checks.Warning(
            "No CJK font found by fontconfig: report and slip PDFs will be refused.",
            hint="Install fonts-noto-cjk (make system-packages).",
            id="alliance.W001",
        )
    ]

"""The institution's side of cloud film (/imaging/films/...): make a patient's link for a
study or a finished case, print its slip, revoke it. Decisions are imaging.films'."""

from __future__ import annotations

from typing import Any

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from alliance import audit
from alliance.access import AccessDenied, principal_of
from alliance.pdf import render_pdf
from imaging import access, films
from imaging.models import FilmLink


def _back(request: HttpRequest) -> HttpResponse:
    """Back to the page the form was on (a path of this site only), or home."""
    target = request.POST.get("back", "")
    allowed = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    return redirect(target if target.startswith("/") and allowed else "home")


def _days(request: HttpRequest) -> int | None:
    raw = request.POST.get("expires_in_days", "")
    return int(raw) if raw.isdigit() else None


@login_required
@require_POST
def new(request: HttpRequest) -> HttpResponse:
    """Make a film link (for a study, or a finished case) and show it to its maker."""
    principal = principal_of(request)
    case = request.POST.get("case", "")
    verify = request.POST.get("verify") or None
    try:
        if case:
            made = films.film_create_for_case(case=case, by=principal, expires_in_days=_days(request), verify=verify)
        else:
            study = access.get_study_for(principal, request.POST.get("study", ""))
            made = films.film_create(studies=[study], by=principal, expires_in_days=_days(request), verify=verify)
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc))
        return _back(request)
    return render(request, "films/desk_made.html", _made_context(made))


def _made_context(made: films.Issued) -> dict[str, Any]:
    return {
        "made": made,
        "qr": segno.make(made.url, error="m").svg_data_uri(scale=4, border=2),
        "studies": list(made.link.studies.select_related("patient", "institution")),
        "entry": settings.SITE_URL + reverse("films:enter"),  # where the code is typed
    }


@login_required
@require_GET
def slip(request: HttpRequest, pk: int) -> HttpResponse:
    """The film slip (A5 PDF) to hand to the patient: QR code, code, PIN."""
    principal = principal_of(request)
    link = films.get_link_for(principal, pk)
    if not films.is_usable(link):
        raise Http404("This link is no longer usable.")
    context = _made_context(films.issued(link))
    audit.record(
        actor=principal.actor,
        action="film.slip",
        object_type="film",
        object_id=link.pk,
        patient=str(link.patient_id),
        basis=link.case,
        source=audit.source_of(request),
    )
    html = render_to_string("films/slip_pdf.html", context, request=request)
    body = render_pdf(html)
    response = HttpResponse(body, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="film-slip-{link.pk}.pdf"'
    return response


@login_required
@require_POST
def revoke(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    link = films.get_link_for(principal, pk)
    films.film_revoke(link=link, by=principal.actor, source=audit.source_of(request))
    messages.success(request, _("The film link is withdrawn: it no longer opens."))
    return _back(request)


def links_of_study(principal: Any, study: Any) -> list[FilmLink]:
    """The study's film links for its page (with their share links' openings)."""
    return list(films.links_visible_to(principal).filter(studies=study).prefetch_related("shares"))

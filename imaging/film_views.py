"""The patient's pages of a cloud film (/film/...): phone-first, their own base template.

Before the check nothing about the patient is shown (an expired, revoked or unknown link
gets one and the same page and status); after it, the holder acts through the film
session (imaging.film_session) and every decision is imaging.access's or imaging.films'.
Every answer carries no-referrer, no-store and a strict CSP with no outside host.

No CSRF token: with no-referrer a browser sends "Origin: null" on these forms, which
Django's check refuses. Cross-site requests are kept out otherwise: every URL but the
code form's holds the link's secret key, and the film cookie is SameSite=Strict, so a
request from another site neither knows the URL nor carries the session.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import segno
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from alliance import audit
from alliance.access import AccessDenied
from imaging import access, film_session, films
from imaging.models import FilmLink, Study

PATIENT_CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; worker-src 'self' blob:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def private(response: HttpResponseBase) -> HttpResponseBase:
    """What every film answer carries: no referrer to anyone, no copy kept, no outside host."""
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store, private, max-age=0"
    response.headers["Content-Security-Policy"] = PATIENT_CSP
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def patient_page(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return private(view(request, *args, **kwargs))

    return wrapped


def verified(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A page of a verified link: 404 (the unavailable page) without the link's session."""

    @wraps(view)
    def wrapped(request: HttpRequest, key: str, *args: Any, **kwargs: Any) -> HttpResponseBase:
        principal = film_session.principal_of(request, key)
        if principal is None:
            return _unavailable(request)
        return view(request, key, principal.film, *args, **kwargs)

    return patient_page(wrapped)


def _source(request: HttpRequest) -> str:
    return audit.source_of(request)


def _unavailable(request: HttpRequest) -> HttpResponse:
    """One page, one status, for a link that is expired, revoked, used up or unknown."""
    return render(request, "films/unavailable.html", status=404)


# --- before the check ---------------------------------------------------------------------


@patient_page
@csrf_exempt
def enter(request: HttpRequest) -> HttpResponseBase:
    """Type the code printed on the slip."""
    code = films.normal_key(request.POST.get("code", "")) if request.method == "POST" else ""
    if code:
        return redirect("films:home", key=code)
    return render(request, "films/enter.html", {"error": request.method == "POST"})


@patient_page
@csrf_exempt
def home(request: HttpRequest, key: str) -> HttpResponseBase:
    principal = film_session.principal_of(request, key)
    if principal is not None:
        return _studies_page(request, key, principal.film)
    if request.method == "POST":
        return _verify(request, key)
    link = films.find_link(key)
    if link is None or not films.is_usable(link):
        films.note_unavailable(source=_source(request))
        return _unavailable(request)
    return render(request, "films/verify.html", {"verify": link.verify, "key": key})


def _verify(request: HttpRequest, key: str) -> HttpResponse:
    result = films.film_verify(key=key, answer=request.POST.get("answer", ""), source=_source(request))
    if result.outcome is films.Verified.OPENED:
        response = redirect("films:home", key=key)
        response.status_code = 303
        film_session.start(response, result.link, key)  # type: ignore[arg-type]
        return response  # type: ignore[return-value]
    if result.outcome is films.Verified.LOCKED:
        return render(request, "films/locked.html", {"minutes": films.lock_time().seconds // 60}, status=429)
    if result.outcome is films.Verified.UNAVAILABLE:
        return _unavailable(request)
    link = result.link
    assert link is not None
    context = {"verify": link.verify, "key": key, "wrong": True, "tries_left": result.tries_left}
    return render(request, "films/verify.html", context, status=200)


# --- after the check ------------------------------------------------------------------------


def _studies(link: FilmLink) -> list[Study]:
    principal_studies = Study.objects.filter(film_links=link, deleted_at__isnull=True).select_related(
        "patient", "institution"
    )
    return list(principal_studies.order_by("-study_date", "-pk"))


def _studies_page(request: HttpRequest, key: str, link: FilmLink) -> HttpResponse:
    studies = _studies(link)
    reports = films.reports_of(link, studies)
    films.record_read(link=link, action="film.view", studies=studies, source=_source(request), reports=len(reports))
    context = {
        "link": link,
        "key": key,
        "studies": studies,
        "reports": reports,
        "patient": link.patient,
        "is_patient": link.kind == FilmLink.Kind.PATIENT,
        "session_minutes": film_session.minutes(),
    }
    return render(request, "films/studies.html", context)


@verified
@require_GET
def study(request: HttpRequest, key: str, link: FilmLink, study_uid: str) -> HttpResponse:
    from imaging.viewer.views import bundle_preload, viewer_config

    principal = film_session.principal_of(request, key)
    found = access.get_study_for(principal, study_uid)  # type: ignore[arg-type]
    films.record_read(link=link, action="study.view", studies=[found], source=_source(request), via="film")
    base = film_session.link_path(key) + "dicomweb"
    config = viewer_config(found, dicomweb_base=base, layout="touch")
    context = {"link": link, "key": key, "study": found, "viewer_config": config, "preload": bundle_preload()}
    return render(request, "films/study.html", context)


def _report(link: FilmLink, number: int) -> tuple[films.FilmReport, list[Study]]:
    studies = _studies(link)
    reports = films.reports_of(link, studies)
    if not 1 <= number <= len(reports):
        raise Http404("No such report.")
    return reports[number - 1], studies


@verified
@require_GET
def report(request: HttpRequest, key: str, link: FilmLink, number: int) -> HttpResponse:
    found, studies = _report(link, number)
    films.record_read(link=link, action="film.report", studies=studies, source=_source(request), format="text")
    return render(request, "films/report.html", {"link": link, "key": key, "report": found, "number": number})


@verified
@require_GET
def report_pdf(request: HttpRequest, key: str, link: FilmLink, number: int) -> HttpResponse:
    found, studies = _report(link, number)
    films.record_read(link=link, action="film.report", studies=studies, source=_source(request), format="pdf")
    response = HttpResponse(found.pdf(), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="report-{number}.pdf"'
    return response


@verified
@require_GET
def download(request: HttpRequest, key: str, link: FilmLink) -> StreamingHttpResponse:
    """All the link's images as DICOM media (a DICOMDIR and its files), streamed."""
    from imaging.media import media_zip, media_zip_name

    studies = _studies(link)
    films.record_read(link=link, action="film.download", studies=studies, source=_source(request))
    response = StreamingHttpResponse(media_zip(studies), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{media_zip_name(studies)}"'
    return response


@verified
@csrf_exempt
def share(request: HttpRequest, key: str, link: FilmLink) -> HttpResponse:
    """Share with a doctor: a second link, 1 to 7 days, shown as a QR code, revocable."""
    if not films.may_share(link):
        raise Http404("A shared link is not shared further.")
    context: dict[str, Any] = {"link": link, "key": key, "days": range(films.SHARE_DAYS[0], films.SHARE_DAYS[1] + 1)}
    if request.method == "POST":
        try:
            days = int(request.POST.get("days", ""))
            made = films.film_share(parent=link, days=days, source=_source(request))
        except (ValueError, AccessDenied, films.ValidationError):
            context["error"] = _("Choose 1 to 7 days.")
        else:
            url = request.build_absolute_uri(made.path)
            context["made"] = made
            context["made_url"] = url
            context["qr"] = segno.make(url, error="m").svg_data_uri(scale=5, border=2)
    context["shares"] = list(films.shares_of(link))
    return render(request, "films/share.html", context)


@verified
@require_POST
@csrf_exempt
def share_revoke(request: HttpRequest, key: str, link: FilmLink, pk: int) -> HttpResponse:
    shared = films.shares_of(link).filter(pk=pk).first()
    if shared is None:
        raise Http404("No such share.")
    films.film_revoke(link=shared, by=link.actor, source=_source(request))
    return redirect("films:share", key=key)


@verified
@require_GET
def who(request: HttpRequest, key: str, link: FilmLink) -> HttpResponse:
    """Who looked at my images: the audit trail of this patient's studies, in plain words."""
    if not films.may_share(link):
        raise Http404("Only the patient's own link shows this.")
    looks = films.who_looked(link)
    films.record_read(link=link, action="film.who", studies=_studies(link), source=_source(request))
    return render(request, "films/who.html", {"link": link, "key": key, "looks": looks})


@patient_page
@require_POST
@csrf_exempt
def language(request: HttpRequest) -> HttpResponse:
    """Switch between Chinese and English (Django's set_language needs a CSRF token)."""
    code = request.POST.get("language", "")
    target = request.POST.get("next", "")
    if not target.startswith("/film/") or not url_has_allowed_host_and_scheme(target, None):
        target = reverse("films:enter")
    response = redirect(target)
    if code in dict(settings.LANGUAGES):
        response.set_cookie(settings.LANGUAGE_COOKIE_NAME, code, max_age=365 * 24 * 3600, samesite="Lax")
    return response


@patient_page
@require_POST
@csrf_exempt
def leave(request: HttpRequest, key: str) -> HttpResponse:
    response = redirect("films:home", key=key)
    film_session.end(response, key)
    return response

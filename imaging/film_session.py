"""The session of a patient's film link, after its check: its own cookie, not the doctors'.

The cookie ("film") is signed, lives FILM_SESSION_MINUTES, is scoped to the link's path
(/film/<key>/), is HttpOnly and SameSite=Strict, and names only that link: through it the
holder is Principal.for_film(link), which sees that link's studies (imaging.access) and
nothing else, on the patient pages and on the link's DICOMweb (/film/<key>/dicomweb/...).
The doctors' session cookie plays no part: it is neither needed nor used on these paths.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.http import HttpRequest, HttpResponseBase
from django.urls import get_script_prefix, reverse
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from alliance.access import Principal
from imaging import films
from imaging.models import FilmLink

COOKIE = "film"
_SALT = "imaging.film_session"


def minutes() -> int:
    return int(settings.FILM_SESSION_MINUTES)


def link_path(key: str) -> str:
    return reverse("films:home", args=[key])


def _key_tag(key: str) -> str:
    return hashlib.sha256(films.normal_key(key).encode()).hexdigest()[:32]


def start(response: HttpResponseBase, link: FilmLink, key: str) -> None:
    """After the check passed: the cookie that lets this browser use this one link."""
    value = signing.dumps({"l": link.pk, "k": _key_tag(key)}, salt=_SALT)
    response.set_cookie(
        COOKIE,
        value,
        max_age=minutes() * 60,
        path=link_path(key),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Strict",
    )


def end(response: HttpResponseBase, key: str) -> None:
    response.delete_cookie(COOKIE, path=link_path(key), samesite="Strict")


def link_of(request: HttpRequest, key: str) -> FilmLink | None:
    """The link this request's film cookie opens for this key, while the link is still open."""
    raw = request.COOKIES.get(COOKIE, "")
    if not raw:
        return None
    try:
        data = signing.loads(raw, salt=_SALT, max_age=minutes() * 60)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("k") != _key_tag(key) or not isinstance(data.get("l"), int):
        return None
    link = (
        FilmLink.objects.select_related("institution__alliance", "patient", "parent__institution")
        .filter(pk=data["l"])
        .first()
    )
    if link is None or not films.key_matches(link, key) or not films.is_open_for_session(link):
        return None
    return link


def principal_of(request: HttpRequest, key: str) -> Principal | None:
    """The film principal of this request (set on it for the access functions), or None."""
    link = link_of(request, key)
    if link is None:
        return None
    principal = Principal.for_film(link, AnonymousUser())
    request.principal = principal  # type: ignore[attr-defined]
    return principal


class FilmSessionAuthentication(BaseAuthentication):
    """DICOMweb for the viewer on the patient's page: the film cookie of the path's link."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        raw = request._request
        principal = principal_of(raw, getattr(raw, "film_key", ""))
        if principal is None:
            return None
        raw.dicomweb_path = link_path(raw.film_key)[len(get_script_prefix()) - 1 :] + "dicomweb"
        raw.film_viewing = True  # the patient page audited the viewing (imaging.viewer.session)
        return principal.user, principal.film

    def authenticate_header(self, request: Any) -> str:
        return "Film"


class HasFilmSession(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        principal = getattr(request._request, "principal", None)
        return principal is not None and principal.film is not None

"""The patient's cloud film under /film/ (app_name films): pages, and the link's DICOMweb
(the same views as /dicomweb/, read-only, authenticated by the film session only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.urls import URLPattern, path

from imaging import film_views
from imaging.dicomweb.urls import urlpatterns as dicomweb_patterns
from imaging.film_session import FilmSessionAuthentication, HasFilmSession

app_name = "films"


def _film_dicomweb(view_class: type) -> Callable[..., HttpResponseBase]:
    """The DICOMweb view for a link's holder: GET only, the film session only."""
    film_class: Any = type(
        f"Film{view_class.__name__}",
        (view_class,),
        {
            "authentication_classes": [FilmSessionAuthentication],
            "permission_classes": [HasFilmSession],
            "http_method_names": ["get", "head"],
        },
    )
    view = film_class.as_view()

    def film_view(request: HttpRequest, key: str, **kwargs: Any) -> HttpResponseBase:
        request.film_key = key  # type: ignore[attr-defined]
        return film_views.private(view(request, **kwargs))

    return film_view


urlpatterns: list[URLPattern] = [
    path("", film_views.enter, name="enter"),
    path("language/", film_views.language, name="language"),
    path("<str:key>/", film_views.home, name="home"),
    path("<str:key>/study/<str:study_uid>/", film_views.study, name="study"),
    path("<str:key>/report/<int:number>/", film_views.report, name="report"),
    path("<str:key>/report/<int:number>.pdf", film_views.report_pdf, name="report_pdf"),
    path("<str:key>/images.zip", film_views.download, name="download"),
    path("<str:key>/share/", film_views.share, name="share"),
    path("<str:key>/share/<int:pk>/revoke/", film_views.share_revoke, name="share_revoke"),
    path("<str:key>/who/", film_views.who, name="who"),
    path("<str:key>/leave/", film_views.leave, name="leave"),
    *[
        path(f"<str:key>/dicomweb/{p.pattern}", _film_dicomweb(p.callback.view_class))  # type: ignore[attr-defined]
        for p in dicomweb_patterns
    ],
]

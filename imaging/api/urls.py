"""Imaging metadata under /api/v1/ (included by alliance/api/urls.py)."""

from django.urls import include, path

from imaging.api import break_glass, films, maintenance, views, worklist
from imaging.routing import api as routing_api

urlpatterns = [
    path("studies/", views.StudyList.as_view(), name="api-study-list"),
    path("studies/<str:study_uid>/", views.StudyDetail.as_view(), name="api-study-detail"),
    path("studies/<str:study_uid>/series/", views.StudySeriesList.as_view(), name="api-study-series"),
    path("studies/<str:study_uid>/route/", routing_api.RouteStudy.as_view(), name="api-study-route"),
    path("routing/", include("imaging.routing.api_urls")),
    path("films/", films.FilmList.as_view(), name="api-film-list"),
    path("films/<int:pk>/revoke/", films.FilmRevoke.as_view(), name="api-film-revoke"),
    path("series/<str:series_uid>/instances/", views.SeriesInstanceList.as_view(), name="api-series-instances"),
    path("series/<str:series_uid>/move/", maintenance.SeriesMove.as_view(), name="api-series-move"),
    path("worklist/", worklist.WorklistList.as_view(), name="api-worklist"),
    path("worklist/<int:pk>/discontinue/", worklist.WorklistDiscontinue.as_view(), name="api-worklist-discontinue"),
    path("break-glass/", break_glass.BreakGlassOpen.as_view(), name="api-break-glass"),
    path("break-glass/reviews/", break_glass.BreakGlassReviews.as_view(), name="api-break-glass-reviews"),
    path("break-glass/reviews/<int:pk>/", break_glass.BreakGlassReviewAction.as_view(), name="api-break-glass-review"),
]

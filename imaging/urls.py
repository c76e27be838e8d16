"""Imaging pages under /imaging/ (app_name imaging)."""

from django.urls import path

from imaging import film_desk, views

app_name = "imaging"

urlpatterns = [
    path("studies/", views.study_list, name="study_list"),
    path("studies/<str:study_uid>/", views.study_detail, name="study_detail"),
    # One name for both: a series' thumbnail (its middle slice) and one instance's.
    path("studies/<str:study_uid>/series/<str:series_uid>/thumbnail.jpg", views.thumbnail, name="thumbnail"),
    path(
        "studies/<str:study_uid>/series/<str:series_uid>/instances/<str:sop_uid>/thumbnail.jpg",
        views.thumbnail,
        name="thumbnail",
    ),
    path("upload/", views.upload, name="upload"),
    path("upload/files/", views.upload_files, name="upload_files"),
    path("films/new/", film_desk.new, name="film_new"),
    path("films/<int:pk>/slip.pdf", film_desk.slip, name="film_slip"),
    path("films/<int:pk>/revoke/", film_desk.revoke, name="film_revoke"),
]

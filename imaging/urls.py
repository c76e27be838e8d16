"""Imaging pages under /imaging/ (app_name imaging)."""

from django.urls import path

from imaging import emergency, film_desk, maintenance_views, views, worklist_views

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
    path("break-glass/", emergency.break_glass, name="break_glass"),
    path("break-glass/reviews/", emergency.break_glass_reviews, name="break_glass_reviews"),
    path("break-glass/reviews/<int:pk>/", emergency.break_glass_review, name="break_glass_review"),
    path("patients/<int:pk>/correct/", maintenance_views.patient_correct, name="patient_correct"),
    path("studies/<str:study_uid>/delete/", maintenance_views.study_delete, name="study_delete"),
    path("studies/<str:study_uid>/series/<str:series_uid>/move/", maintenance_views.series_move, name="series_move"),
    path("worklist/", worklist_views.worklist_page, name="worklist"),
    path("worklist/new/", worklist_views.worklist_new, name="worklist_new"),
    path("worklist/<int:pk>/discontinue/", worklist_views.worklist_discontinue, name="worklist_discontinue"),
    path("upload/", views.upload, name="upload"),
    path("upload/files/", views.upload_files, name="upload_files"),
    path("films/new/", film_desk.new, name="film_new"),
    path("films/<int:pk>/slip.pdf", film_desk.slip, name="film_slip"),
    path("films/<int:pk>/revoke/", film_desk.revoke, name="film_revoke"),
]

"""Screening pages under /screening/ (app_name screening)."""

from django.urls import path

from consults.screening import views

app_name = "screening"

urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.programme_new, name="programme_new"),
    path("notifications/", views.notifications, name="notifications"),
    path("<int:pk>/", views.programme, name="programme"),
    path("<int:pk>/edit/", views.programme_edit, name="programme_edit"),
    path("<int:pk>/enrol/", views.enrol, name="enrol"),
    path("<int:pk>/overdue/", views.overdue, name="overdue"),
    path("<int:pk>/figures/", views.figures, name="figures"),
    path("participants/<int:pk>/", views.participant, name="participant"),
    path("participants/<int:pk>/withdraw/", views.withdraw, name="withdraw"),
    path("rounds/<int:pk>/invite/", views.invite, name="invite"),
    path("rounds/<int:pk>/tag/", views.tag, name="tag"),
    path("rounds/<int:pk>/read/", views.read, name="read"),
    path("rounds/<int:pk>/sign/", views.sign, name="sign"),
    path("studies/<str:study_uid>/", views.tag_study, name="tag_study"),
]

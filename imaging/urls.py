"""Imaging pages under /imaging/ (app_name imaging)."""

from django.urls import path

from imaging import views

app_name = "imaging"

urlpatterns = [
    path("studies/", views.study_list, name="study_list"),
    path("studies/<str:study_uid>/", views.study_detail, name="study_detail"),
]

"""Study endpoints whose rules depend on the consult, under /api/v1/studies/ (alliance/api/urls.py)."""

from django.urls import path

from consults.api import key_objects

urlpatterns = [
    path("studies/<str:study_uid>/key-objects/", key_objects.KeyObjects.as_view(), name="api-study-key-objects"),
]

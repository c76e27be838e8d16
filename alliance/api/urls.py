"""/api/v1/: membership here; imaging and consults mount their routers below."""

from django.urls import include, path

urlpatterns = [
    path("", include("imaging.api.urls")),
    path("consults/", include("consults.api.urls")),
]

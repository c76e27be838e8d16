"""Root URL configuration. Each app owns its own urls module; this file only mounts them."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from alliance.api.schema import DocsView

urlpatterns = [
    path("", include("alliance.web_urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("imaging/", include("imaging.urls")),
    path("dicomweb/", include("imaging.dicomweb.urls")),
    path("viewer/", include("imaging.viewer.urls")),
    path("routing/", include("imaging.routing.urls")),
    path("", include("imaging.launch_urls")),
    path("consults/", include("consults.urls")),
    path("teaching/", include("consults.teaching.urls")),
    path("film/", include("imaging.film_urls")),
    path("referrals/", include("referrals.urls")),
    path("screening/", include("consults.screening.urls")),
    path("api/v1/", include("alliance.api.urls")),
    path("fhir/", include("alliance.fhir.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", DocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("django-admin/", admin.site.urls),
    path("", include("imaging.health_urls")),
]

handler500 = "alliance.views.server_error"

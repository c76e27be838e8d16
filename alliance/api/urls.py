"""/api/v1/: membership here; imaging, consults and referrals mount their routers below."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from alliance.api import tokens, views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("institutions", views.InstitutionViewSet, basename="institution")
router.register("departments", views.DepartmentViewSet, basename="department")
router.register("pools", views.PoolViewSet, basename="pool")
router.register("doctors", views.DoctorViewSet, basename="doctor")
router.register("devices", views.DeviceViewSet, basename="device")
router.register("privilege-changes", views.PrivilegeChangeViewSet, basename="privilege-change")
router.register("tokens", tokens.TokenViewSet, basename="token")

urlpatterns = [
    path("me/", views.MeView.as_view(), name="api-me"),
    *router.urls,
    path("", include("imaging.api.urls")),
    path("", include("consults.api.study_urls")),
    path("consults/", include("consults.api.urls")),
    path("referrals/", include("referrals.api.urls")),
]

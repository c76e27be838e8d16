"""/api/v1/referrals/ (mounted by alliance/api/urls.py)."""

from django.urls import path

from referrals.api import views

app_name = "referrals-api"

urlpatterns = [
    path("", views.ReferralListCreate.as_view(), name="list"),
    path("notifications/", views.Notifications.as_view(), name="notifications"),
    path("notifications/read/", views.NotificationsRead.as_view(), name="notifications-read"),
    path("<int:pk>/", views.ReferralDetail.as_view(), name="detail"),
    path("<int:pk>/messages/", views.Messages.as_view(), name="messages"),
    path("<int:pk>/<slug:action>/", views.ReferralAction.as_view(), name="action"),
]

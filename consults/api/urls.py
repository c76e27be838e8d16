"""/api/v1/consults/ (mounted by alliance/api/urls.py)."""

from django.urls import path

from consults.api import critical, views

app_name = "consults-api"

urlpatterns = [
    path("", views.ConsultListCreate.as_view(), name="list"),
    path("notifications/", views.Notifications.as_view(), name="notifications"),
    path("notifications/read/", views.NotificationsRead.as_view(), name="notifications-read"),
    path("policies/", views.Policies.as_view(), name="policies"),
    path("<int:pk>/", views.ConsultDetail.as_view(), name="detail"),
    path("<int:pk>/report/draft/", views.ReportDraft.as_view(), name="report-draft"),
    path("<int:pk>/messages/", views.Messages.as_view(), name="messages"),
    path("<int:pk>/critical/", critical.CriticalResults.as_view(), name="critical"),
    path(
        "<int:pk>/critical/<int:result_pk>/acknowledge/",
        critical.CriticalAcknowledge.as_view(),
        name="critical-acknowledge",
    ),
    path("<int:pk>/second-opinion/", views.SecondOpinion.as_view(), name="second-opinion"),
    path("<int:pk>/<slug:action>/", views.ConsultAction.as_view(), name="action"),
]

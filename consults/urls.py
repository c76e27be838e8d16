"""Consult pages under /consults/ (app_name consults)."""

from django.urls import path

from consults import views

app_name = "consults"

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("new/", views.new, name="new"),
    path("policy/", views.policy, name="policy"),
    path("templates/", views.templates, name="templates"),
    path("templates/add/", views.template_edit, name="template_add"),
    path("templates/<int:pk>/", views.template_edit, name="template_edit"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications_read"),
    path("notifications/<int:pk>/", views.notification_open, name="notification_open"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/report/", views.report, name="report"),
    path("<int:pk>/report.pdf", views.report_pdf, name="report_pdf"),
    path("<int:pk>/sign/", views.sign, name="sign"),
    path("<int:pk>/messages/", views.post_message, name="message"),
    path("<int:pk>/second-opinion/", views.second_opinion, name="second_opinion"),
    path("<int:pk>/<slug:action>/", views.act, name="act"),
]

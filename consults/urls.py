"""Consult pages under /consults/ (app_name consults)."""

from django.urls import path

from consults import views, views_critical

app_name = "consults"

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("new/", views.new, name="new"),
    path("new/studies/", views.study_search, name="study_search"),
    path("policy/", views.policy, name="policy"),
    path("templates/", views.templates, name="templates"),
    path("templates/add/", views.template_edit, name="template_add"),
    path("templates/<int:pk>/", views.template_edit, name="template_edit"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications_read"),
    path("notifications/<int:pk>/", views.notification_open, name="notification_open"),
    path("critical-findings/", views_critical.findings, name="critical_findings"),
    path("critical-findings/add/", views_critical.finding_edit, name="critical_finding_add"),
    path("critical-findings/<int:pk>/", views_critical.finding_edit, name="critical_finding_edit"),
    path("<int:pk>/critical/", views_critical.flag, name="critical_flag"),
    path("<int:pk>/critical/<int:result_pk>/acknowledge/", views_critical.acknowledge, name="critical_acknowledge"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/report/", views.report, name="report"),
    path("<int:pk>/report.pdf", views.report_pdf, name="report_pdf"),
    path("<int:pk>/sign/", views.sign, name="sign"),
    path("<int:pk>/messages/", views.post_message, name="message"),
    path("<int:pk>/second-opinion/", views.second_opinion, name="second_opinion"),
    path("<int:pk>/route/", views.route, name="route"),
    path("<int:pk>/exam/", views.order_exam, name="order_exam"),
    path("<int:pk>/<slug:action>/", views.act, name="act"),
]

"""Referral pages under /referrals/ (app_name referrals)."""

from django.urls import path

from referrals import views

app_name = "referrals"

urlpatterns = [
    path("", views.index, name="index"),
    path("outgoing/", views.outgoing, name="outgoing"),
    path("incoming/", views.incoming, name="incoming"),
    path("new/", views.new, name="new"),
    path("calendar/", views.calendar, name="calendar"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications_read"),
    path("notifications/<int:pk>/", views.notification_open, name="notification_open"),
    path("desk/", views.desk, name="desk"),
    path("desk/<int:doctor_pk>/remove/", views.desk_remove, name="desk_remove"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/slip.pdf", views.slip_pdf, name="slip_pdf"),
    path("<int:pk>/messages/", views.post_message, name="message"),
    path("<int:pk>/exam/", views.schedule_exam, name="schedule_exam"),
    path("<int:pk>/route/", views.route, name="route"),
    path("<int:pk>/<slug:action>/", views.act, name="act"),
]

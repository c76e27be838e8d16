"""Routing pages under /routing/ (app_name routing)."""

from django.urls import path

from imaging.routing import views

app_name = "routing"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("items/<int:pk>/retry/", views.retry, name="retry"),
    path("destinations/", views.destinations, name="destinations"),
    path("destinations/add/", views.destination_edit, name="destination_add"),
    path("destinations/<int:pk>/", views.destination_edit, name="destination_edit"),
    path("destinations/<int:pk>/echo/", views.destination_echo, name="destination_echo"),
    path("rules/", views.rules, name="rules"),
    path("rules/add/", views.rule_edit, name="rule_add"),
    path("rules/<int:pk>/", views.rule_edit, name="rule_edit"),
    path("rules/<int:pk>/delete/", views.rule_delete, name="rule_delete"),
    path("studies/<str:study_uid>/send/", views.send_study, name="send_study"),
]

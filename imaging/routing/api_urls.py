"""/api/v1/routing/ (included by imaging/api/urls.py)."""

from django.urls import path

from imaging.routing import api

urlpatterns = [
    path("destinations/", api.DestinationList.as_view(), name="api-route-destinations"),
    path("destinations/<int:pk>/", api.DestinationDetail.as_view(), name="api-route-destination"),
    path("rules/", api.RuleList.as_view(), name="api-route-rules"),
    path("rules/<int:pk>/", api.RuleDetail.as_view(), name="api-route-rule"),
    path("queue/", api.Queue.as_view(), name="api-route-queue"),
    path("queue/<int:pk>/retry/", api.Retry.as_view(), name="api-route-retry"),
]

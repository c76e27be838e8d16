"""/healthz and /metrics at the root, where probes and scrapers expect them."""

from django.urls import path

from imaging import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics, name="metrics"),
]

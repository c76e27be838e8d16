"""OpenAPI schema hooks (drf-spectacular)."""

from typing import Any

from drf_spectacular.views import SpectacularSwaggerSplitView


def only_rest_api(endpoints: list[tuple[str, str, str, Any]], **kwargs: Any) -> list[tuple[str, str, str, Any]]:
    """The schema documents /api/v1/ only: DICOMweb is specified by DICOM PS3.18, not by us."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI from our own static files (drf-spectacular-sidecar), its script and styles
    in files rather than inline, so that the strict Content-Security-Policy holds."""

    template_name = "api/swagger_ui.html"

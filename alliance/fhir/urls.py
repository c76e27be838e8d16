"""/fhir/: the CapabilityStatement, then read and search for every registered resource type.

One route per type (not a <type> parameter), so that each is in the URL conf by name and in
the permission matrix (tests/test_permission_matrix.py) with its own objects.
"""

from django.urls import path

from alliance.fhir import registry, views

app_name = "fhir"

urlpatterns = [path("metadata", views.Metadata.as_view(), name="metadata")]
for _type in registry.resource_types():
    if any(p.searchable for p in registry.providers_for(_type)):
        urlpatterns.append(path(f"{_type}", views.Search.as_view(resource_type=_type), name=f"{_type}-search"))
    urlpatterns.append(
        path(f"{_type}/<str:resource_id>", views.Read.as_view(resource_type=_type), name=f"{_type}-read")
    )

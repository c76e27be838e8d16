"""/api/v1/ studies, series and instances: metadata only, the same access rules as the pages.

Lists are paginated (limit/offset) and cost a constant number of queries; every response
that names patient data writes its audit events, one per study it shows.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from alliance import audit
from alliance.access import principal_of
from imaging import access, selectors
from imaging.api.serializers import InstanceSerializer, SeriesSerializer, StudySerializer
from imaging.forms import StudySearchForm
from imaging.models import Instance, Series, Study

STUDY_FILTERS = [
    OpenApiParameter("patient_name", str, description="Case-insensitive, partial; every word must occur."),
    OpenApiParameter("patient_id", str, description="Exact, case-insensitive."),
    OpenApiParameter("date_from", str, description="Study date on or after (YYYY-MM-DD)."),
    OpenApiParameter("date_to", str, description="Study date on or before (YYYY-MM-DD)."),
    OpenApiParameter("modality", str, description="One modality of the study, e.g. CT."),
    OpenApiParameter("accession", str, description="Accession number, exact."),
    OpenApiParameter("institution", int, description="Owning institution's id."),
]


@extend_schema_view(get=extend_schema(parameters=STUDY_FILTERS))
class StudyList(generics.ListAPIView):
    """Studies the caller may see (own institution and shared with them), newest first."""

    serializer_class = StudySerializer

    def get_queryset(self) -> QuerySet[Study]:
        principal = principal_of(self.request)
        form = StudySearchForm(self.request.query_params, principal=principal)
        if not form.is_valid():
            raise ValidationError(form.errors.get_json_data())
        return selectors.studies_for(principal, form.to_query())

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        bases = access.bases_for(principal_of(request), page)
        audit.read_many(request, page, "study.list", bases, via="api")
        serializer = self.get_serializer(page, many=True, context={**self.get_serializer_context(), "bases": bases})
        return self.get_paginated_response(serializer.data)


class StudyDetail(generics.GenericAPIView):
    """One study's metadata."""

    serializer_class = StudySerializer
    queryset = Study.objects.none()  # the model, for the schema; get() asks the access policy

    def get(self, request: Request, study_uid: str) -> Response:
        principal = principal_of(request)
        study = access.get_study_for(principal, study_uid)
        basis = access.basis_for(principal, study)
        audit.read(request, study, "study.view", basis, via="api")
        context = {**self.get_serializer_context(), "bases": {study.pk: basis}}
        return Response(self.get_serializer(study, context=context).data)


class StudySeriesList(generics.ListAPIView):
    """The series of one study, in series-number order."""

    serializer_class = SeriesSerializer
    queryset = Series.objects.none()  # the model, for the schema; list() asks the access policy

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        principal = principal_of(request)
        study = access.get_study_for(principal, kwargs["study_uid"])
        page = self.paginate_queryset(selectors.series_of(study)) or []
        for series in page:
            series.study = study
        audit.read(request, study, "series.list", access.basis_for(principal, study), via="api")
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class SeriesInstanceList(generics.ListAPIView):
    """The instances of one series, in instance-number order."""

    serializer_class = InstanceSerializer
    queryset = Instance.objects.none()  # the model, for the schema; list() asks the access policy

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        principal = principal_of(request)
        series = selectors.get_series_for(principal, kwargs["series_uid"])
        page = self.paginate_queryset(selectors.instances_of(series)) or []
        for instance in page:
            instance.series = series
        audit.read(request, series, "instance.list", access.basis_for(principal, series.study), via="api")
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

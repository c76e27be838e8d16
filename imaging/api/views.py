"""/api/v1/ studies, series and instances: metadata only, the same access rules as the pages.

Lists are paginated (limit/offset) and cost a constant number of queries; every response
that names patient data writes its audit events, one per study it shows.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from alliance import access, audit
from imaging import selectors
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


def _record(request: Request, action: str, object_type: str, object_id: str, study: Study, basis: str) -> None:
    audit.record(
        actor=audit.Actor.for_user(request.user),
        action=action,
        object_type=object_type,
        object_id=object_id,
        patient=str(study.patient_id),
        basis=basis,
        source=audit.source_of(request),
        detail={"via": "api"},
    )


@extend_schema_view(get=extend_schema(parameters=STUDY_FILTERS))
class StudyList(generics.ListAPIView):
    """Studies the caller may see (own institution and shared with them), newest first."""

    serializer_class = StudySerializer

    def get_queryset(self) -> QuerySet[Study]:
        form = StudySearchForm(self.request.query_params, user=self.request.user)
        if not form.is_valid():
            raise ValidationError(form.errors.get_json_data())
        return selectors.studies_for(self.request.user, form.to_query())

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        bases = access.bases_for(request.user, page)
        with transaction.atomic():
            audit.record_many(
                actor=audit.Actor.for_user(request.user),
                action="study.list",
                object_type="study",
                items=[(s.study_uid, str(s.patient_id), bases.get(s.pk, "")) for s in page],
                source=audit.source_of(request),
                detail={"via": "api"},
            )
        serializer = self.get_serializer(page, many=True, context={**self.get_serializer_context(), "bases": bases})
        return self.get_paginated_response(serializer.data)


class StudyDetail(generics.GenericAPIView):
    """One study's metadata."""

    serializer_class = StudySerializer
    queryset = Study.objects.none()  # the model, for the schema; get() asks the access policy

    def get(self, request: Request, study_uid: str) -> Response:
        study = access.get_study_for(request.user, study_uid)
        basis = access.basis_for(request.user, study)
        with transaction.atomic():
            _record(request, "study.view", "study", study.study_uid, study, basis)
        context = {**self.get_serializer_context(), "bases": {study.pk: basis}}
        return Response(self.get_serializer(study, context=context).data)


class StudySeriesList(generics.ListAPIView):
    """The series of one study, in series-number order."""

    serializer_class = SeriesSerializer
    queryset = Series.objects.none()  # the model, for the schema; list() asks the access policy

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        study = access.get_study_for(request.user, kwargs["study_uid"])
        page = self.paginate_queryset(selectors.series_of(study)) or []
        for series in page:
            series.study = study
        with transaction.atomic():
            _record(request, "series.list", "study", study.study_uid, study, access.basis_for(request.user, study))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class SeriesInstanceList(generics.ListAPIView):
    """The instances of one series, in instance-number order."""

    serializer_class = InstanceSerializer
    queryset = Instance.objects.none()  # the model, for the schema; list() asks the access policy

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        series = selectors.get_series_for(request.user, kwargs["series_uid"])
        page = self.paginate_queryset(selectors.instances_of(series)) or []
        for instance in page:
            instance.series = series
        basis = access.basis_for(request.user, series.study)
        with transaction.atomic():
            _record(request, "instance.list", "series", series.series_uid, series.study, basis)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

"""/api/v1/worklist/: the institution's modality worklist (scheduled procedure steps).

GET lists it (the steps still to do unless a status is asked), POST schedules an exam,
POST <id>/discontinue/ takes one off. The same rules and services as the worklist page
(imaging.access, imaging.worklist); the patient's issuer is an institution's AE title.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance import audit
from alliance.access import Principal, institutions_visible_to, principal_of
from imaging import access, worklist
from imaging.forms import WorklistFilterForm
from imaging.models import ScheduledStep


class ScheduledStepSerializer(serializers.ModelSerializer):
    patient_id = serializers.CharField(source="patient.patient_id", read_only=True)
    issuer = serializers.CharField(source="patient.issuer.ae_title", read_only=True)
    step_id = serializers.CharField(read_only=True)

    class Meta:
        model = ScheduledStep
        fields = [
            "id",
            "step_id",
            "patient_id",
            "issuer",
            "patient_name",
            "birth_date",
            "sex",
            "accession_number",
            "requested_procedure_id",
            "procedure_description",
            "study_uid",
            "modality",
            "station_ae",
            "scheduled_at",
            "performing_physician",
            "status",
            "source",
            "consult_id",
            "referral_id",
            "created_at",
        ]
        read_only_fields = fields


class ScheduleRequest(serializers.Serializer):
    patient_id = serializers.CharField(max_length=64)
    issuer = serializers.CharField(
        max_length=16, required=False, default="", help_text="AE title of the institution that issued the Patient ID."
    )
    patient_name = serializers.CharField(max_length=324, required=False, default="", allow_blank=True)
    birth_date = serializers.DateField(required=False, allow_null=True, default=None)
    sex = serializers.CharField(max_length=1, required=False, default="", allow_blank=True)
    accession_number = serializers.CharField(max_length=16, required=False, default="", allow_blank=True)
    modality = serializers.CharField(max_length=16)
    scheduled_at = serializers.DateTimeField()
    station_ae = serializers.CharField(max_length=16, required=False, default="", allow_blank=True)
    procedure_description = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    performing_physician = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)


class DiscontinueRequest(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


def _may_schedule(principal: Principal) -> None:
    if not access.may_schedule(principal):
        raise PermissionDenied("Clinicians of the institution keep its worklist.")


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("day", str, description="Scheduled on this local day (YYYY-MM-DD)."),
            OpenApiParameter("status", str, description="scheduled, in-progress, completed, discontinued or all."),
            OpenApiParameter("modality", str, description="e.g. CT."),
        ]
    )
)
class WorklistList(generics.ListCreateAPIView):
    """Your institution's scheduled exams, in the order of their start; POST schedules one."""

    serializer_class = ScheduledStepSerializer

    def get_queryset(self) -> QuerySet[ScheduledStep]:
        form = WorklistFilterForm(self.request.query_params)
        if not form.is_valid():
            raise ValidationError(form.errors.get_json_data())
        data = form.cleaned_data
        return worklist.steps_for(
            principal_of(self.request),
            day=data.get("day"),
            status=data.get("status", ""),
            modality=data.get("modality", ""),
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        audit.read_many(request, page, "worklist.list", {s.pk: access.OWN_INSTITUTION for s in page}, via="api")
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=ScheduleRequest, responses={201: ScheduledStepSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        principal = principal_of(request)
        _may_schedule(principal)
        form = ScheduleRequest(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        institution = principal.institution
        assert institution is not None  # may_schedule: a doctor of an institution
        issuer = _issuer(principal, data.pop("issuer")) or institution
        step = worklist.schedule_step(
            by=principal.actor,
            institution=institution,
            issuer=issuer,
            source=ScheduledStep.Source.API,
            **{**data, "accession_number": data["accession_number"] or worklist.new_accession_number()},
        )
        return Response(self.get_serializer(step).data, status=status.HTTP_201_CREATED)


def _issuer(principal: Principal, ae_title: str) -> Any:
    if not ae_title:
        return None
    found = institutions_visible_to(principal).filter(ae_title=ae_title.strip().upper()).first()
    if found is None:
        raise ValidationError({"issuer": ["No institution of your alliance has this AE title."]})
    return found


class WorklistDiscontinue(APIView):
    """Take a scheduled exam off the worklist (it is kept, as discontinued, with the reason)."""

    @extend_schema(request=DiscontinueRequest, responses={200: ScheduledStepSerializer})
    def post(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        step = access.get_step_for(principal, pk)
        _may_schedule(principal)
        form = DiscontinueRequest(data=request.data)
        form.is_valid(raise_exception=True)
        step = worklist.discontinue_step(by=principal.actor, step=step, reason=form.validated_data["reason"])
        return Response(ScheduledStepSerializer(step).data)

"""/api/v1/consults/<id>/critical/: critical results (危急值) of a consult.

GET lists the case's flags; POST flags one (the reader); POST .../<flag id>/acknowledge/
reads one back (the requesting side). Errors are mapped as the other consult endpoints
map them: a wrong state is 409, AccessDenied 403, ValidationError 400 with fields.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance.access import principal_of
from consults import access, critical, selectors, services
from consults.api.serializers import DoctorRefSerializer
from consults.api.views import _run
from consults.models import CriticalResult


class CriticalResultSerializer(serializers.ModelSerializer):
    flagged_by = DoctorRefSerializer()
    acknowledged_by = DoctorRefSerializer(allow_null=True)

    class Meta:
        model = CriticalResult
        fields = [
            "id",
            "finding",
            "text",
            "modality",
            "flagged_by",
            "flagged_at",
            "acknowledged_by",
            "acknowledged_at",
            "read_back",
            "escalated_at",
        ]


class CriticalFlagSerializer(serializers.Serializer):
    finding = serializers.IntegerField(required=False, allow_null=True, default=None)
    text = serializers.CharField(required=False, allow_blank=True, default="", max_length=critical.TEXT_MAX)


class CriticalAcknowledgeSerializer(serializers.Serializer):
    read_back = serializers.CharField(allow_blank=True, max_length=critical.TEXT_MAX)


class CriticalResults(APIView):
    @extend_schema(responses=CriticalResultSerializer(many=True), operation_id="consults_critical_list")
    def get(self, request: Request, pk: int) -> Response:
        consult = access.get_consult_for(principal_of(request), pk)
        services.audit_read(request, consult, "consult.critical_view")
        return Response(CriticalResultSerializer(selectors.critical_results_of(consult), many=True).data)

    @extend_schema(
        request=CriticalFlagSerializer,
        responses={201: CriticalResultSerializer},
        operation_id="consults_critical_flag",
    )
    def post(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        consult = access.get_consult_for(principal, pk)
        body = CriticalFlagSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        finding = None
        if body.validated_data["finding"] is not None:
            finding = access.critical_findings_for(consult).filter(pk=body.validated_data["finding"]).first()
            if finding is None:
                raise exceptions.ValidationError(
                    {"finding": [f"No finding {body.validated_data['finding']} on the list."]}
                )
        result = _run(
            lambda: critical.critical_flag(
                consult=consult, by=principal, finding=finding, text=body.validated_data["text"]
            )
        )
        return Response(CriticalResultSerializer(result).data, status=status.HTTP_201_CREATED)


class CriticalAcknowledge(APIView):
    @extend_schema(
        request=CriticalAcknowledgeSerializer,
        responses=CriticalResultSerializer,
        operation_id="consults_critical_acknowledge",
    )
    def post(self, request: Request, pk: int, result_pk: int) -> Response:
        principal = principal_of(request)
        consult = access.get_consult_for(principal, pk)
        result = get_object_or_404(CriticalResult, pk=result_pk, consult=consult)
        body = CriticalAcknowledgeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        read_back = body.validated_data["read_back"]
        done = _run(lambda: critical.critical_acknowledge(result=result, by=principal, read_back=read_back))
        return Response(CriticalResultSerializer(done).data)

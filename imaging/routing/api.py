"""/api/v1/routing/: the institution admin's destinations, rules and queue; and
/api/v1/studies/<uid>/route/, "send to…" a study. The same access functions and services as
the pages (imaging.routing.access, imaging.routing.services)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance import audit
from alliance.access import principal_of
from alliance.models import Institution
from imaging import access as imaging_access
from imaging.routing import access, services
from imaging.routing.models import Destination, RouteItem, RouteRule

DESTINATION_FIELDS = ["name", "kind", "ae_title", "host", "port", "calling_ae", "url", "active"]
RULE_FIELDS = [
    "name",
    "destination",
    "trigger",
    "modality",
    "source_ae",
    "description",
    "description_match",
    "case_kind",
    "target_institution",
    "target_pool",
    "prefetch",
    "active",
]


def _institution(request: Request) -> Institution:
    institution = access.routing_institution_of(principal_of(request))
    if institution is None:
        raise PermissionDenied("Only an admin of the institution keeps its routing.")
    return institution


class DestinationSerializer(serializers.ModelSerializer):
    token = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=4000, help_text='Bearer token; "" removes it.'
    )
    has_token = serializers.BooleanField(read_only=True)

    class Meta:
        model = Destination
        fields = ["id", *DESTINATION_FIELDS, "token", "has_token", "created_at"]
        extra_kwargs = {"kind": {"required": False}}


class RuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = RouteRule
        fields = ["id", *RULE_FIELDS, "created_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["destination"].queryset = access.destinations_managed_by(principal_of(request))  # type: ignore[attr-defined]


class RouteItemSerializer(serializers.ModelSerializer):
    study_uid = serializers.CharField(source="study.study_uid", read_only=True)
    destination_name = serializers.CharField(source="destination.name", read_only=True)

    class Meta:
        model = RouteItem
        fields = [
            "id",
            "study_uid",
            "destination",
            "destination_name",
            "state",
            "basis",
            "prefetch",
            "attempts",
            "instances_sent",
            "instances_total",
            "peer_status",
            "reason",
            "next_attempt_at",
            "created_at",
            "updated_at",
            "sent_at",
        ]
        read_only_fields = fields


def _save_destination(
    request: Request, serializer: DestinationSerializer, destination: Destination | None
) -> Destination:
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    token = data.pop("token", None)
    return services.destination_save(
        by=principal_of(request), institution=_institution(request), values=data, token=token, destination=destination
    )


class DestinationList(generics.ListCreateAPIView):
    """The destinations of the institution the caller keeps routing for; POST registers one."""

    serializer_class = DestinationSerializer

    def get_queryset(self) -> QuerySet[Destination]:
        _institution(self.request)
        return access.destinations_managed_by(principal_of(self.request))

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        saved = _save_destination(request, self.get_serializer(data=request.data), None)
        return Response(DestinationSerializer(saved).data, status=status.HTTP_201_CREATED)


class DestinationDetail(generics.RetrieveUpdateAPIView):
    serializer_class = DestinationSerializer

    def get_queryset(self) -> QuerySet[Destination]:
        return access.destinations_managed_by(principal_of(self.request))

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        destination = self.get_object()
        serializer = self.get_serializer(destination, data=request.data, partial=kwargs.get("partial", False))
        saved = _save_destination(request, serializer, destination)
        return Response(DestinationSerializer(saved).data)


class RuleList(generics.ListCreateAPIView):
    serializer_class = RuleSerializer

    def get_queryset(self) -> QuerySet[RouteRule]:
        _institution(self.request)
        return access.rules_managed_by(principal_of(self.request))

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule = services.rule_save(
            by=principal_of(request), institution=_institution(request), values=dict(serializer.validated_data)
        )
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class RuleDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = RuleSerializer

    def get_queryset(self) -> QuerySet[RouteRule]:
        return access.rules_managed_by(principal_of(self.request))

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rule = self.get_object()
        serializer = self.get_serializer(rule, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        saved = services.rule_save(
            by=principal_of(request),
            institution=_institution(request),
            values=dict(serializer.validated_data),
            rule=rule,
        )
        return Response(RuleSerializer(saved).data)

    def perform_destroy(self, instance: RouteRule) -> None:
        services.rule_delete(by=principal_of(self.request), rule=instance)


class Queue(generics.ListAPIView):
    """The queue: what is owed to the institution's destinations, newest change first."""

    serializer_class = RouteItemSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=["pending", "sending", "sent", "failed"]),
            OpenApiParameter("destination", int),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        rows = response.data.get("results", response.data) if isinstance(response.data, dict) else response.data
        uids = [row["study_uid"] for row in rows]
        items = access.queue_visible_to(principal_of(request)).filter(study__study_uid__in=uids)
        studies = list({i.study_id: i.study for i in items}.values())
        institution = _institution(request)
        audit.read_many(
            request, studies, "route.queue.view", {s.pk: f"routing:{institution.pk}" for s in studies}, via="api"
        )
        return response

    def get_queryset(self) -> QuerySet[RouteItem]:
        _institution(self.request)
        items = access.queue_visible_to(principal_of(self.request)).order_by("-updated_at", "-pk")
        state = self.request.query_params.get("state")
        if state:
            if state not in {"pending", "sending", "sent", "failed"}:
                raise ValidationError({"state": "One of pending, sending, sent, failed."})
            items = items.filter(state=state)
        destination = self.request.query_params.get("destination")
        if destination:
            if not destination.isdigit():
                raise ValidationError({"destination": "A destination id."})
            items = items.filter(destination_id=int(destination))
        return items


class Retry(APIView):
    """ "Retry now" on a failed item (409 when it is not failed)."""

    @extend_schema(request=None, responses={200: RouteItemSerializer})
    def post(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        item = access.queue_visible_to(principal).filter(pk=pk).first()
        if item is None:
            return Response({"detail": "No such item."}, status=status.HTTP_404_NOT_FOUND)
        try:
            item = services.retry_now(by=principal, item=item)
        except services.IllegalMove as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(RouteItemSerializer(item).data)


class RouteStudyRequest(serializers.Serializer):
    destination = serializers.IntegerField(min_value=1, help_text="A destination of your institution.")


class RouteStudy(APIView):
    """Send a study to one of the caller's institution's destinations (again, when it was
    sent already): 202 with the queued item, or 200 with none when it is on its way already."""

    @extend_schema(request=RouteStudyRequest, responses={200: RouteItemSerializer, 202: RouteItemSerializer})
    def post(self, request: Request, study_uid: str) -> Response:
        principal = principal_of(request)
        study = imaging_access.get_study_for(principal, study_uid)
        body = RouteStudyRequest(data=request.data)
        body.is_valid(raise_exception=True)
        destination = (
            Destination.objects.filter(pk=body.validated_data["destination"]).select_related("institution").first()
        )
        if destination is None or not access.may_route_study(principal, study, destination):
            raise ValidationError({"destination": "Not a destination this study may be sent to."})
        item = services.route_study(by=principal, study=study, destination=destination)
        if item is None:
            return Response({"detail": "On its way already."}, status=status.HTTP_200_OK)
        return Response(RouteItemSerializer(item).data, status=status.HTTP_202_ACCEPTED)

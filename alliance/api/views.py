"""The membership REST API: the same rules as the management pages, from alliance.access.

Reads come from the access module's querysets, so an object outside the caller's reach
is a 404 like a missing one. Writes go through alliance.services; a refusal there is a
400 naming the field (alliance.api.errors), a permission refusal a 403.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotAuthenticated, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance import access, audit, privileges, services
from alliance.api import serializers as s
from alliance.api.permissions import ManagesMembers
from alliance.models import Department, Device, Doctor, Institution, Pool, PrivilegeChange

BY_INSTITUTION = OpenApiParameter(
    "institution", OpenApiTypes.INT, description="Only rows of this institution (id)", required=False
)


class _InstitutionFilter(serializers.Serializer):
    institution = serializers.IntegerField(required=False, min_value=1)


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """List and read what alliance.access lets the caller see; create and PATCH through services."""

    http_method_names = ["get", "post", "patch", "head", "options"]

    def visible(self, principal: access.Principal) -> QuerySet[Any]:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        rows = self.visible(access.principal_of(self.request))
        if self.action == "list" and "institution" in self.request.query_params:
            query = _InstitutionFilter(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            rows = rows.filter(institution_id=query.validated_data["institution"])
        return rows

    @property
    def actor(self) -> audit.Actor:
        return access.principal_of(self.request).actor

    def validated(self, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def respond(self, obj: Any, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=obj.pk)).data, status=code)

    def respond_held(self, obj: Any, held: list[PrivilegeChange]) -> Response:
        """200 with the object; 202 with the changes put on hold for a second admin, if any."""
        if not held:
            return self.respond(obj)
        body = dict(self.get_serializer(self.get_queryset().get(pk=obj.pk)).data)
        body["pending_changes"] = s.PrivilegeChangeSerializer(held, many=True).data
        return Response(body, status=status.HTTP_202_ACCEPTED)

    def require_manager_of(self, institution: Institution) -> None:
        if not access.may_manage_institution(access.principal_of(self.request), institution):
            raise PermissionDenied("You do not manage this institution.")


def _writes(create: type[serializers.Serializer], update: type[serializers.Serializer], output: Any) -> Any:
    return extend_schema_view(
        list=extend_schema(parameters=[BY_INSTITUTION]),
        create=extend_schema(request=create, responses={201: output}),
        partial_update=extend_schema(request=update, responses=output),
    )


@extend_schema_view(
    create=extend_schema(request=s.InstitutionCreateSerializer, responses={201: s.InstitutionSerializer}),
    partial_update=extend_schema(request=s.InstitutionUpdateSerializer, responses=s.InstitutionSerializer),
)
class InstitutionViewSet(MembershipViewSet):
    """Member institutions of the caller's alliance. Alliance admins add and change them."""

    serializer_class = s.InstitutionSerializer

    def visible(self, principal: access.Principal) -> QuerySet[Institution]:
        return access.institutions_visible_to(principal)

    def get_queryset(self) -> QuerySet[Institution]:
        return self.visible(access.principal_of(self.request))

    def require_alliance_admin(self) -> None:
        if not access.may_manage_alliance(access.principal_of(self.request)):
            raise PermissionDenied("Only an alliance admin adds or changes institutions.")

    def create(self, request: Request) -> Response:
        self.require_alliance_admin()
        data = self.validated(s.InstitutionCreateSerializer)
        alliance = access.principal_of(request).alliance
        if alliance is None:
            raise PermissionDenied("You are not a member of an alliance.")
        institution = services.institution_create(alliance=alliance, by=self.actor, **data)
        return self.respond(institution, status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        institution = self.get_object()
        self.require_alliance_admin()
        data = self.validated(s.InstitutionUpdateSerializer)
        if data.get("active") is False and not access.may_switch_off_institution(
            access.principal_of(request), institution
        ):
            raise ValidationError({"active": ["You cannot switch off your own institution."]})
        services.institution_update(institution=institution, by=self.actor, **data)
        return self.respond(institution)


@_writes(s.DepartmentCreateSerializer, s.DepartmentUpdateSerializer, s.DepartmentSerializer)
class DepartmentViewSet(MembershipViewSet):
    """Departments of every member; their institution's admins add and change them."""

    serializer_class = s.DepartmentSerializer

    def visible(self, principal: access.Principal) -> QuerySet[Department]:
        return access.departments_visible_to(principal)

    def create(self, request: Request) -> Response:
        data = self.validated(s.DepartmentCreateSerializer)
        self.require_manager_of(data["institution"])
        department = services.department_create(by=self.actor, **data)
        return self.respond(department, status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        department = self.get_object()
        self.require_manager_of(department.institution)
        services.department_update(department=department, by=self.actor, **self.validated(s.DepartmentUpdateSerializer))
        return self.respond(department)


@_writes(s.PoolCreateSerializer, s.PoolUpdateSerializer, s.PoolSerializer)
class PoolViewSet(MembershipViewSet):
    """Specialist desks of every member (consults are sent to them); their admins manage them."""

    serializer_class = s.PoolSerializer

    def visible(self, principal: access.Principal) -> QuerySet[Pool]:
        return access.pools_visible_to(principal).select_related("specialty").prefetch_related("members", "reviewers")

    def create(self, request: Request) -> Response:
        data = self.validated(s.PoolCreateSerializer)
        self.require_manager_of(data["institution"])
        members = data.pop("members", None) or []
        pool, held = privileges.create_pool(principal=access.principal_of(request), members=members, **data)
        if held:
            return self.respond_held(pool, held)
        return self.respond(pool, status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        pool = self.get_object()
        self.require_manager_of(pool.institution)
        data = self.validated(s.PoolUpdateSerializer)
        held = privileges.update_pool(principal=access.principal_of(request), pool=pool, **data)
        return self.respond_held(pool, held)


@_writes(s.DoctorCreateSerializer, s.DoctorUpdateSerializer, s.DoctorSerializer)
class DoctorViewSet(MembershipViewSet):
    """Doctors of the institutions the caller manages: add, change roles, move, (de)activate."""

    serializer_class = s.DoctorSerializer
    permission_classes = [ManagesMembers]

    def visible(self, principal: access.Principal) -> QuerySet[Doctor]:
        return (
            access.doctors_managed_by(principal)
            .select_related("user", "institution")
            .prefetch_related("specialties", "pools")
        )

    def get_managed_doctor(self) -> Doctor:
        doctor = self.get_object()
        if not access.may_change_doctor(access.principal_of(self.request), doctor):
            raise PermissionDenied("Only an alliance admin manages an alliance admin.")
        return doctor

    def require_roles(self, before: list[str], after: list[str]) -> None:
        if not access.may_set_roles(access.principal_of(self.request), before, after):
            raise PermissionDenied("Only an alliance admin gives or takes the alliance admin role.")

    def create(self, request: Request) -> Response:
        data = self.validated(s.DoctorCreateSerializer)
        self.require_manager_of(data["institution"])
        self.require_roles([], data["roles"])
        doctor = services.doctor_create(by=self.actor, **data)
        return self.respond(doctor, status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        doctor = self.get_managed_doctor()
        data = self.validated(s.DoctorUpdateSerializer)
        if "roles" in data:
            self.require_roles(doctor.roles, data["roles"])
        change = privileges.update_doctor(principal=access.principal_of(request), doctor=doctor, **data)
        return self.respond_held(doctor, [change] if change is not None else [])

    @extend_schema(request=None, responses=s.DoctorSerializer)
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str) -> Response:
        """Sign the doctor out everywhere at once: sessions and API tokens end."""
        doctor = self.get_managed_doctor()
        if not access.may_switch_off_doctor(access.principal_of(request), doctor):
            raise ValidationError({"active": ["You cannot deactivate yourself."]})
        services.doctor_set_active(doctor=doctor, active=False, by=self.actor)
        return self.respond(doctor)

    @extend_schema(request=None, responses=s.DoctorSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str) -> Response:
        doctor = services.doctor_set_active(doctor=self.get_managed_doctor(), active=True, by=self.actor)
        return self.respond(doctor)

    @extend_schema(request=s.DoctorMoveSerializer, responses=s.DoctorSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk: str) -> Response:
        """Move to another institution you manage; the doctor leaves the old one's pools."""
        doctor = self.get_managed_doctor()
        data = self.validated(s.DoctorMoveSerializer)
        self.require_manager_of(data["institution"])
        change = privileges.move(
            principal=access.principal_of(request),
            doctor=doctor,
            institution=data["institution"],
            department=data.get("department"),
        )
        return self.respond_held(doctor, [change] if change is not None else [])


@extend_schema_view(list=extend_schema(parameters=[BY_INSTITUTION]))
class PrivilegeChangeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Changes that would give an admin account clinical access, waiting for a second admin."""

    serializer_class = s.PrivilegeChangeSerializer
    permission_classes = [ManagesMembers]

    def get_queryset(self) -> QuerySet[PrivilegeChange]:
        rows = access.privilege_changes_visible_to(access.principal_of(self.request))
        if self.action == "list" and "institution" in self.request.query_params:
            query = _InstitutionFilter(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            rows = rows.filter(subject__institution_id=query.validated_data["institution"])
        return rows

    def _decide(self, request: Request, approve: bool) -> Response:
        body = s.PrivilegeDecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        change = privileges.decide(
            principal=access.principal_of(request),
            change=self.get_object(),
            approve=approve,
            comment=body.validated_data["comment"],
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=change.pk)).data)

    @extend_schema(request=s.PrivilegeDecisionSerializer, responses=s.PrivilegeChangeSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        """Make the change now (a second admin: neither the one who asked nor the doctor)."""
        return self._decide(request, True)

    @extend_schema(request=s.PrivilegeDecisionSerializer, responses=s.PrivilegeChangeSerializer)
    @action(detail=True, methods=["post"])
    def refuse(self, request: Request, pk: str) -> Response:
        return self._decide(request, False)


@_writes(s.DeviceCreateSerializer, s.DeviceUpdateSerializer, s.DeviceSerializer)
class DeviceViewSet(MembershipViewSet):
    """DICOM devices of the institutions the caller manages."""

    serializer_class = s.DeviceSerializer
    permission_classes = [ManagesMembers]

    def visible(self, principal: access.Principal) -> QuerySet[Device]:
        return access.devices_managed_by(principal)

    def create(self, request: Request) -> Response:
        data = self.validated(s.DeviceCreateSerializer)
        self.require_manager_of(data["institution"])
        device = services.device_create(by=self.actor, **data)
        return self.respond(device, status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        device = self.get_object()
        services.device_update(device=device, by=self.actor, **self.validated(s.DeviceUpdateSerializer))
        return self.respond(device)


class MeView(APIView):
    """The caller's doctor record, roles, pools and the institutions they manage."""

    @extend_schema(responses=s.MeSerializer)
    def get(self, request: Request) -> Response:
        doctor = access.principal_of(request).doctor
        if doctor is None:
            raise NotAuthenticated()
        rows = Doctor.objects.select_related("user", "institution").prefetch_related("specialties", "pools")
        return Response(s.MeSerializer(rows.get(pk=doctor.pk)).data)

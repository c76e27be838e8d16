"""Shapes of the membership API. Serializers check shape only; alliance.services decides.

Output serializers read rows the views selected through alliance.access; input
serializers are built per request so that every related-object field only accepts
objects the caller can see (anything else is "does not exist", as for a missing id).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from alliance import access
from alliance.models import Department, Device, Doctor, Institution, Pool, PrivilegeChange, Role, Specialty
from alliance.services import ALL_MODULES

# --- output ---------------------------------------------------------------------------


class InstitutionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Institution
        fields = ["id", "name", "level", "ae_title", "parent", "active", "modules"]
        read_only_fields = fields


class InstitutionBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Institution
        fields = ["id", "name", "level", "ae_title"]
        read_only_fields = fields


class DepartmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Department
        fields = ["id", "institution", "name", "active"]
        read_only_fields = fields


class PoolSerializer(serializers.ModelSerializer):
    specialty = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Pool
        fields = ["id", "institution", "specialty", "name", "members", "two_level_signoff", "reviewers", "active"]
        read_only_fields = fields


class DoctorSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    full_name = serializers.CharField(source="user.get_full_name", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    roles = serializers.ListField(child=serializers.ChoiceField(choices=Role.choices), read_only=True)
    specialties = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)

    class Meta:
        model = Doctor
        fields = [
            "id",
            "username",
            "full_name",
            "email",
            "institution",
            "department",
            "title",
            "roles",
            "specialties",
            "pools",
            "active",
        ]
        read_only_fields = fields


class PrivilegeChangeSerializer(serializers.ModelSerializer):
    """A change giving an admin account clinical access, and its second admin's decision."""

    subject_name = serializers.CharField(source="subject.display_name", read_only=True)
    requested_by_name = serializers.CharField(source="requested_by.display_name", read_only=True)
    decided_by_name = serializers.SerializerMethodField()

    class Meta:
        model = PrivilegeChange
        fields = [
            "id",
            "subject",
            "subject_name",
            "kind",
            "payload",
            "state",
            "requested_by",
            "requested_by_name",
            "requested_at",
            "decided_by",
            "decided_by_name",
            "decided_at",
            "comment",
        ]
        read_only_fields = fields

    def get_decided_by_name(self, change: PrivilegeChange) -> str:
        return change.decided_by.display_name if change.decided_by is not None else ""


class PrivilegeDecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class DeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = ["id", "institution", "ae_title", "host", "port", "description", "active", "tls_client_sha256"]
        read_only_fields = fields


class PoolBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Pool
        fields = ["id", "name"]
        read_only_fields = fields


def _as_principal(doctor: Doctor) -> access.Principal:
    return access.Principal.for_doctor(doctor.user, doctor)


class MeSerializer(DoctorSerializer):
    """The caller: their doctor record, where they work and what they may manage."""

    institution = InstitutionBriefSerializer(read_only=True)
    pools = PoolBriefSerializer(many=True, read_only=True)
    managed_institutions = serializers.SerializerMethodField()
    is_alliance_admin = serializers.SerializerMethodField()

    class Meta(DoctorSerializer.Meta):
        fields = [*DoctorSerializer.Meta.fields, "managed_institutions", "is_alliance_admin"]
        read_only_fields = fields

    def get_managed_institutions(self, doctor: Doctor) -> list[int]:
        return list(access.institutions_managed_by(_as_principal(doctor)).values_list("pk", flat=True))

    def get_is_alliance_admin(self, doctor: Doctor) -> bool:
        return _as_principal(doctor).is_alliance_admin


# --- input ----------------------------------------------------------------------------


class _VisibleRelated(serializers.PrimaryKeyRelatedField):
    """A primary key that must name an object the caller can see (decided per request).

    `queryset` (empty) only tells the schema generator the model; lookups use `visible`.
    """

    def __init__(self, visible: Any, model: Any, **kwargs: Any) -> None:
        self.visible = visible
        super().__init__(queryset=model.objects.none(), **kwargs)

    def get_queryset(self) -> Any:
        return self.visible(access.principal_of(self.context["request"]))


def _institution_field(**kwargs: Any) -> Any:
    return _VisibleRelated(access.institutions_visible_to, Institution, **kwargs)


def _department_field(**kwargs: Any) -> Any:
    return _VisibleRelated(access.departments_visible_to, Department, allow_null=True, **kwargs)


class InstitutionCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    level = serializers.ChoiceField(choices=Institution.Level.choices)
    ae_title = serializers.CharField(max_length=16)
    parent = _institution_field(required=False, allow_null=True)
    modules = serializers.ListField(child=serializers.ChoiceField(choices=ALL_MODULES), required=False)


class InstitutionUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    level = serializers.ChoiceField(choices=Institution.Level.choices, required=False)
    ae_title = serializers.CharField(max_length=16, required=False)
    parent = _institution_field(required=False, allow_null=True)
    modules = serializers.ListField(child=serializers.ChoiceField(choices=ALL_MODULES), required=False)
    active = serializers.BooleanField(required=False)


class DepartmentCreateSerializer(serializers.Serializer):
    institution = _institution_field()
    name = serializers.CharField(max_length=200)


class DepartmentUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    active = serializers.BooleanField(required=False)


def _members_field() -> Any:
    return _VisibleRelated(access.doctors_managed_by, Doctor, many=True, required=False)


class PoolCreateSerializer(serializers.Serializer):
    institution = _institution_field()
    specialty = serializers.SlugRelatedField(slug_field="code", queryset=Specialty.objects.all())
    name = serializers.CharField(max_length=200)
    members = _members_field()


class PoolUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    active = serializers.BooleanField(required=False)
    two_level_signoff = serializers.BooleanField(required=False)
    members = _members_field()
    reviewers = _members_field()


class DoctorCreateSerializer(serializers.Serializer):
    institution = _institution_field()
    username = serializers.CharField(max_length=150)
    roles = serializers.ListField(child=serializers.ChoiceField(choices=Role.choices), allow_empty=False)
    password = serializers.CharField(required=False, write_only=True, style={"input_type": "password"})
    full_name = serializers.CharField(max_length=300, required=False, default="")
    email = serializers.EmailField(required=False, default="")
    department = _department_field(required=False)
    title = serializers.CharField(max_length=100, required=False, default="")
    specialties = serializers.SlugRelatedField(
        slug_field="code", queryset=Specialty.objects.all(), many=True, required=False
    )


class DoctorUpdateSerializer(serializers.Serializer):
    roles = serializers.ListField(
        child=serializers.ChoiceField(choices=Role.choices), allow_empty=False, required=False
    )
    department = _department_field(required=False)
    title = serializers.CharField(max_length=100, required=False)
    specialties = serializers.SlugRelatedField(
        slug_field="code", queryset=Specialty.objects.all(), many=True, required=False
    )


class DoctorMoveSerializer(serializers.Serializer):
    institution = _institution_field()
    department = _department_field(required=False)


class DeviceCreateSerializer(serializers.Serializer):
    institution = _institution_field()
    ae_title = serializers.CharField(max_length=16)
    host = serializers.CharField(max_length=255)
    port = serializers.IntegerField(min_value=1, max_value=65535)
    description = serializers.CharField(max_length=200, required=False, default="")
    tls_client_sha256 = serializers.CharField(max_length=95, required=False, default="", allow_blank=True)


class DeviceUpdateSerializer(serializers.Serializer):
    ae_title = serializers.CharField(max_length=16, required=False)
    host = serializers.CharField(max_length=255, required=False)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False)
    description = serializers.CharField(max_length=200, required=False)
    active = serializers.BooleanField(required=False)
    tls_client_sha256 = serializers.CharField(max_length=95, required=False, allow_blank=True)

"""Shapes of referrals in the REST API. Input serializers only parse; services decide."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alliance.access import principal_of
from referrals import access
from referrals.models import Direction, Referral, ReferralMessage, ReferralNotification, ReferralTransition, Urgency


class ReferralDoctorRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(source="display_name")


class ReferralInstitutionRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    ae_title = serializers.CharField()
    level = serializers.CharField()


class ReferralStudyRefSerializer(serializers.Serializer):
    study_uid = serializers.CharField()
    modalities = serializers.CharField()
    description = serializers.CharField()
    study_date = serializers.DateField(allow_null=True)


class ReferralListSerializer(serializers.ModelSerializer):
    referrer = ReferralDoctorRefSerializer()
    from_institution = ReferralInstitutionRefSerializer()
    to_institution = ReferralInstitutionRefSerializer()
    patient = serializers.SerializerMethodField()
    studies = serializers.SlugRelatedField(slug_field="study_uid", many=True, read_only=True)
    appointment_doctor = ReferralDoctorRefSerializer(allow_null=True)
    urgency_display = serializers.CharField()

    class Meta:
        model = Referral
        fields = [
            "id", "status", "direction", "urgency", "urgency_display", "referrer", "from_institution",
            "to_institution", "patient", "studies", "reason", "wished_date", "created_at", "requested_at",
            "answered_at", "appointment_at", "department", "appointment_doctor", "proposed_date", "arrived_at",
            "completed_at", "based_on", "consult",
        ]  # fmt: skip

    @extend_schema_field(serializers.DictField())
    def get_patient(self, referral: Referral) -> dict[str, Any]:
        patient = referral.patient
        return {
            "patient_id": patient.patient_id,
            "name": patient.name,
            "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
            "sex": patient.sex,
        }


class ReferralTransitionSerializer(serializers.ModelSerializer):
    by = serializers.CharField(source="by.username", default=None)

    class Meta:
        model = ReferralTransition
        fields = ["action", "from_status", "to_status", "by", "at", "reason"]


class ReferralMessageSerializer(serializers.ModelSerializer):
    author = ReferralDoctorRefSerializer(allow_null=True)

    class Meta:
        model = ReferralMessage
        fields = ["id", "author", "body", "created_at"]


class ReferralGrantSerializer(serializers.Serializer):
    study_uid = serializers.CharField(source="content_object.study_uid")
    institution = serializers.CharField(source="group.institution.ae_title", default=None)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)


class ReferralDetailSerializer(ReferralListSerializer):
    summary = serializers.CharField()
    feedback = serializers.CharField()
    closed_reason = serializers.CharField()
    receiving_patient_id = serializers.CharField(source="receiving_patient.patient_id", default=None)
    attached = serializers.SerializerMethodField()
    access = serializers.SerializerMethodField()
    transitions = serializers.SerializerMethodField()
    messages = serializers.SerializerMethodField()
    actions = serializers.SerializerMethodField()

    class Meta(ReferralListSerializer.Meta):
        fields = [
            *ReferralListSerializer.Meta.fields,
            "summary", "feedback", "closed_reason", "receiving_patient_id", "attached", "access", "transitions",
            "messages", "actions",
        ]  # fmt: skip

    def _case(self) -> dict[str, Any]:
        return self.context["case"]

    @extend_schema_field(ReferralStudyRefSerializer(many=True))
    def get_attached(self, referral: Referral) -> list[dict[str, Any]]:
        return ReferralStudyRefSerializer(self._case()["studies"], many=True).data

    @extend_schema_field(ReferralGrantSerializer(many=True))
    def get_access(self, referral: Referral) -> list[dict[str, Any]]:
        """The studies the case opens to the receiving institution now, and until when."""
        return ReferralGrantSerializer(self._case()["grants"], many=True).data

    @extend_schema_field(ReferralTransitionSerializer(many=True))
    def get_transitions(self, referral: Referral) -> list[dict[str, Any]]:
        return ReferralTransitionSerializer(self._case()["transitions"], many=True).data

    @extend_schema_field(ReferralMessageSerializer(many=True))
    def get_messages(self, referral: Referral) -> list[dict[str, Any]]:
        return ReferralMessageSerializer(self._case()["thread"], many=True).data

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_actions(self, referral: Referral) -> list[str]:
        return [a.replace("_", "-") for a in access.actions_for(principal_of(self.context["request"]), referral)]


class ReferralPatientInputSerializer(serializers.Serializer):
    patient_id = serializers.CharField(max_length=64, allow_blank=True)
    name = serializers.CharField(max_length=324, allow_blank=True)
    birth_date = serializers.DateField(required=False, allow_null=True, default=None)
    sex = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")


class ReferralCreateSerializer(serializers.Serializer):
    studies = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list)
    patient = ReferralPatientInputSerializer(required=False, allow_null=True, default=None)
    direction = serializers.ChoiceField(choices=Direction.choices)
    to_institution = serializers.CharField(max_length=16, help_text="The receiving institution's AE title.")
    reason = serializers.CharField(allow_blank=True)
    summary = serializers.CharField(required=False, allow_blank=True, default="")
    urgency = serializers.ChoiceField(choices=Urgency.choices, default=Urgency.ROUTINE)
    wished_date = serializers.DateField(required=False, allow_null=True, default=None)
    based_on = serializers.IntegerField(required=False, allow_null=True, default=None)
    consult = serializers.IntegerField(required=False, allow_null=True, default=None)
    send = serializers.BooleanField(default=False)


class ReferralActionSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    appointment_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    department = serializers.CharField(required=False, allow_blank=True, default="")
    doctor = serializers.IntegerField(required=False, allow_null=True, default=None)
    date = serializers.DateField(required=False, allow_null=True, default=None)
    note = serializers.CharField(required=False, allow_blank=True, default="")
    patient_id = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    summary = serializers.CharField(required=False, allow_blank=True, default="")


class ReferralCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()


class ReferralMessageCreateSerializer(serializers.Serializer):
    body = serializers.CharField(allow_blank=True)


class ReferralNotificationSerializer(serializers.ModelSerializer):
    label = serializers.CharField()

    class Meta:
        model = ReferralNotification
        fields = ["id", "referral", "verb", "label", "created_at", "read_at"]


class ReferralNotificationsReadSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(), required=False)


class ReferralMarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField()

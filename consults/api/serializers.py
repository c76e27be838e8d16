"""Shapes of consults in the REST API. Input serializers only parse; services decide."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from alliance import access
from consults import selectors
from consults.models import Consult, ConsultTransition, Message, Notification, Priority, PriorityPolicy, ReportVersion


class DoctorRefField(serializers.Field):
    def to_representation(self, doctor: Any) -> dict[str, Any] | None:
        if doctor is None:
            return None
        return {"id": doctor.pk, "name": doctor.display_name}


class StudyRefSerializer(serializers.Serializer):
    study_uid = serializers.CharField()
    patient_id = serializers.CharField(source="patient.patient_id")
    patient_name = serializers.CharField(source="patient.name")
    modalities = serializers.CharField()
    description = serializers.CharField()
    study_date = serializers.DateField()


class ConsultListSerializer(serializers.ModelSerializer):
    requester = DoctorRefField()
    owner = DoctorRefField()
    specialist = DoctorRefField()
    requesting_institution = serializers.CharField(source="requesting_institution.name")
    pool = serializers.SerializerMethodField()
    studies = StudyRefSerializer(many=True)
    deadline = serializers.SerializerMethodField()

    class Meta:
        model = Consult
        fields = [
            "id", "status", "priority", "question", "requester", "requesting_institution", "pool", "specialist",
            "owner", "studies", "created_at", "requested_at", "due_at", "completed_at", "second_opinion_of", "deadline",
        ]  # fmt: skip

    def get_pool(self, consult: Consult) -> dict[str, Any] | None:
        return {"id": consult.pool_id, "name": consult.pool.name} if consult.pool_id else None

    def get_deadline(self, consult: Consult) -> dict[str, Any]:
        deadline = selectors.deadline_of(consult)
        return {"minutes_left": deadline.minutes, "state": deadline.state}


class TransitionSerializer(serializers.ModelSerializer):
    by = serializers.CharField(source="by.username", default=None)

    class Meta:
        model = ConsultTransition
        fields = ["action", "from_status", "to_status", "by", "at", "reason"]


class MessageSerializer(serializers.ModelSerializer):
    author = DoctorRefField()

    class Meta:
        model = Message
        fields = ["id", "author", "body", "created_at"]


class VersionSerializer(serializers.ModelSerializer):
    signed_by = DoctorRefField()

    class Meta:
        model = ReportVersion
        fields = [
            "number", "findings", "impression", "recommendation", "addendum", "updated_at", "signed_by", "signed_at",
        ]  # fmt: skip


class ConsultDetailSerializer(ConsultListSerializer):
    history = serializers.CharField()
    reason = serializers.CharField()
    transitions = serializers.SerializerMethodField()
    messages = serializers.SerializerMethodField()
    report = serializers.SerializerMethodField()
    actions = serializers.SerializerMethodField()

    class Meta(ConsultListSerializer.Meta):
        fields = [
            *ConsultListSerializer.Meta.fields,
            "history",
            "reason",
            "transitions",
            "messages",
            "report",
            "actions",
        ]

    def _case(self) -> dict[str, Any]:
        return self.context["case"]

    def get_transitions(self, consult: Consult) -> list[dict[str, Any]]:
        return TransitionSerializer(self._case()["transitions"], many=True).data

    def get_messages(self, consult: Consult) -> list[dict[str, Any]]:
        return MessageSerializer(self._case()["thread"], many=True).data

    def get_report(self, consult: Consult) -> list[dict[str, Any]]:
        """Signed versions for everyone who sees the case; the draft only for its owner."""
        user = self.context["request"].user
        versions = self._case()["versions"]
        owner = consult.owner is not None and consult.owner.user_id == user.pk
        return VersionSerializer([v for v in versions if v.is_signed or owner], many=True).data

    def get_actions(self, consult: Consult) -> list[str]:
        return access.actions_for(self.context["request"].user, consult)


class ConsultCreateSerializer(serializers.Serializer):
    studies = serializers.ListField(child=serializers.CharField(max_length=64), allow_empty=False)
    question = serializers.CharField(allow_blank=True)
    history = serializers.CharField(required=False, allow_blank=True, default="")
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.ROUTINE)
    pool = serializers.IntegerField(required=False, allow_null=True, default=None)
    specialist = serializers.IntegerField(required=False, allow_null=True, default=None)
    send = serializers.BooleanField(default=True)


class ActionSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    question = serializers.CharField(required=False, allow_blank=True, default="")
    answer = serializers.CharField(required=False, allow_blank=True, default="")
    addendum = serializers.CharField(required=False, allow_blank=True, default="")
    findings = serializers.CharField(required=False, allow_blank=True, default=None)
    impression = serializers.CharField(required=False, allow_blank=True, default=None)
    recommendation = serializers.CharField(required=False, allow_blank=True, default=None)


class DraftSerializer(serializers.Serializer):
    findings = serializers.CharField(allow_blank=True, default="")
    impression = serializers.CharField(allow_blank=True, default="")
    recommendation = serializers.CharField(allow_blank=True, default="")


class SecondOpinionSerializer(serializers.Serializer):
    pool = serializers.IntegerField(required=False, allow_null=True, default=None)
    specialist = serializers.IntegerField(required=False, allow_null=True, default=None)
    question = serializers.CharField(required=False, allow_blank=True, default="")
    priority = serializers.ChoiceField(choices=Priority.choices, required=False, default="")


class NotificationSerializer(serializers.ModelSerializer):
    label = serializers.CharField()

    class Meta:
        model = Notification
        fields = ["id", "consult", "verb", "label", "created_at", "read_at"]


class PolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = PriorityPolicy
        fields = ["priority", "deadline_minutes", "claim_timeout_minutes"]

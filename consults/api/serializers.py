"""Shapes of consults in the REST API. Input serializers only parse; services decide."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alliance.access import principal_of
from consults import access, priorities, selectors
from consults.models import (
    Consult,
    ConsultTransition,
    Message,
    Notification,
    Priority,
    PriorityPolicy,
    ReportReview,
    ReportVersion,
    Status,
)


class DoctorRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(source="display_name")
    title = serializers.CharField()


class PoolRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class DeadlineSerializer(serializers.Serializer):
    minutes_left = serializers.IntegerField(allow_null=True)
    state = serializers.ChoiceField(choices=["ok", "warn", "danger", "breached", "paused", "none"])


class StudyRefSerializer(serializers.Serializer):
    study_uid = serializers.CharField()
    patient_id = serializers.CharField(source="patient.patient_id")
    patient_name = serializers.CharField(source="patient.name")
    modalities = serializers.CharField()
    description = serializers.CharField()
    study_date = serializers.DateField()


class ConsultListSerializer(serializers.ModelSerializer):
    requester = DoctorRefSerializer(allow_null=True)
    owner = DoctorRefSerializer(allow_null=True)
    specialist = DoctorRefSerializer(allow_null=True)
    requesting_institution = serializers.CharField(source="requesting_institution.name")
    pool = PoolRefSerializer(allow_null=True)
    studies = StudyRefSerializer(many=True)
    deadline = serializers.SerializerMethodField()
    priority_label = serializers.SerializerMethodField()
    report_status = serializers.SerializerMethodField()

    class Meta:
        model = Consult
        fields = [
            "id", "status", "report_status", "priority", "priority_label", "question", "requester",
            "requesting_institution", "pool", "specialist",
            "owner", "studies", "created_at", "requested_at", "due_at", "completed_at", "second_opinion_of", "deadline",
        ]  # fmt: skip

    @extend_schema_field(serializers.CharField())
    def get_priority_label(self, consult: Consult) -> str:
        """The priority as people read it ("紧急 · 2 小时内"); `priority` keeps the FHIR code."""
        return priorities.consult_label(consult, self.context.setdefault("priority_labels", {}))

    @extend_schema_field(serializers.ChoiceField(choices=["preliminary", "final"], allow_null=True))
    def get_report_status(self, consult: Consult) -> str | None:
        """As FHIR DiagnosticReport.status: preliminary until verified (two-level sign-off), then final."""
        if consult.status == Status.PRELIMINARY:
            return "preliminary"
        return "final" if consult.status == Status.COMPLETED else None

    @extend_schema_field(DeadlineSerializer)
    def get_deadline(self, consult: Consult) -> dict[str, Any]:
        deadline = selectors.deadline_of(consult)
        return {"minutes_left": deadline.minutes, "state": deadline.state}


class TransitionSerializer(serializers.ModelSerializer):
    by = serializers.CharField(source="by.username", default=None)

    class Meta:
        model = ConsultTransition
        fields = ["action", "from_status", "to_status", "by", "at", "reason"]


class MessageSerializer(serializers.ModelSerializer):
    author = DoctorRefSerializer(allow_null=True)

    class Meta:
        model = Message
        fields = ["id", "author", "body", "created_at"]


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = DoctorRefSerializer()

    class Meta:
        model = ReportReview
        fields = ["reviewer", "outcome", "comments", "at"]


class VersionSerializer(serializers.ModelSerializer):
    signed_by = DoctorRefSerializer(allow_null=True)
    reviews = ReviewSerializer(many=True, read_only=True)

    class Meta:
        model = ReportVersion
        fields = [
            "number", "findings", "impression", "recommendation", "addendum", "updated_at", "signed_by", "signed_at",
            "preliminary", "reviews",
        ]  # fmt: skip


class ExamSerializer(serializers.Serializer):
    """An exam the case asked the requesting clinic for: its worklist step and, once it came, the study."""

    accession_number = serializers.CharField()
    modality = serializers.CharField()
    scheduled_at = serializers.DateTimeField()
    station_ae = serializers.CharField()
    procedure_description = serializers.CharField()
    status = serializers.CharField()
    study_uid = serializers.SerializerMethodField()

    def get_study_uid(self, step: Any) -> str | None:
        return step.study.study_uid if step.study_id else None


class ConsultDetailSerializer(ConsultListSerializer):
    history = serializers.CharField()
    reason = serializers.CharField()
    transitions = serializers.SerializerMethodField()
    messages = serializers.SerializerMethodField()
    report = serializers.SerializerMethodField()
    actions = serializers.SerializerMethodField()
    exams = serializers.SerializerMethodField()

    class Meta(ConsultListSerializer.Meta):
        fields = [
            *ConsultListSerializer.Meta.fields,
            "history",
            "reason",
            "transitions",
            "messages",
            "report",
            "actions",
            "exams",
        ]

    def _case(self) -> dict[str, Any]:
        return self.context["case"]

    @extend_schema_field(TransitionSerializer(many=True))
    def get_transitions(self, consult: Consult) -> list[dict[str, Any]]:
        return TransitionSerializer(self._case()["transitions"], many=True).data

    @extend_schema_field(MessageSerializer(many=True))
    def get_messages(self, consult: Consult) -> list[dict[str, Any]]:
        return MessageSerializer(self._case()["thread"], many=True).data

    @extend_schema_field(VersionSerializer(many=True))
    def get_report(self, consult: Consult) -> list[dict[str, Any]]:
        """Signed versions for everyone who sees the case; the draft only for its owner."""
        user = self.context["request"].user
        versions = self._case()["versions"]
        owner = consult.owner is not None and consult.owner.user_id == user.pk
        return VersionSerializer([v for v in versions if v.is_signed or owner], many=True).data

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_actions(self, consult: Consult) -> list[str]:
        return access.actions_for(principal_of(self.context["request"]), consult)

    @extend_schema_field(ExamSerializer(many=True))
    def get_exams(self, consult: Consult) -> list[dict[str, Any]]:
        """The exams asked for on the case (consults.access.exams_of)."""
        return ExamSerializer(access.exams_of(principal_of(self.context["request"]), consult), many=True).data


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
    # sign and verify: the signer's password again (alliance.reauth)
    password = serializers.CharField(
        required=False, allow_blank=True, default="", write_only=True, trim_whitespace=False
    )
    comments = serializers.CharField(required=False, allow_blank=True, default="")


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


class MessageCreateSerializer(serializers.Serializer):
    body = serializers.CharField(allow_blank=True)


class NotificationsReadSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(), required=False)


class MarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField()

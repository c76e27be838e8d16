"""Metadata of studies, series and instances for the REST API (no pixel data here)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from imaging.models import Instance, Patient, Series, Study


class PatientSerializer(serializers.ModelSerializer):
    issuer = serializers.CharField(source="issuer.ae_title", read_only=True)

    class Meta:
        model = Patient
        fields = ["patient_id", "issuer", "name", "birth_date", "sex"]


class StudySerializer(serializers.ModelSerializer):
    patient = PatientSerializer(read_only=True)
    institution = serializers.SerializerMethodField()
    modalities = serializers.ListField(source="modality_list", child=serializers.CharField(), read_only=True)
    access_basis = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "study_uid",
            "patient",
            "institution",
            "study_date",
            "study_time",
            "accession_number",
            "study_id",
            "description",
            "referring_physician",
            "modalities",
            "num_series",
            "num_instances",
            "size_bytes",
            "received_at",
            "access_basis",
        ]

    def get_institution(self, study: Study) -> dict[str, Any]:
        return {"id": study.institution_id, "name": study.institution.name, "ae_title": study.institution.ae_title}

    def get_access_basis(self, study: Study) -> str:
        """How the caller sees this study: "own-institution", "consult:12", "referral:3" ..."""
        return self.context.get("bases", {}).get(study.pk, "")


class SeriesSerializer(serializers.ModelSerializer):
    study_uid = serializers.CharField(source="study.study_uid", read_only=True)

    class Meta:
        model = Series
        fields = ["series_uid", "study_uid", "modality", "series_number", "description", "body_part", "num_instances"]


class InstanceSerializer(serializers.ModelSerializer):
    series_uid = serializers.CharField(source="series.series_uid", read_only=True)

    class Meta:
        model = Instance
        fields = [
            "sop_uid",
            "series_uid",
            "sop_class_uid",
            "transfer_syntax_uid",
            "instance_number",
            "rows",
            "columns",
            "number_of_frames",
            "size_bytes",
            "sha256",
            "received_at",
        ]

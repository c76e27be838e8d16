"""/api/v1/break-glass/: emergency access over the API, and the owning institution admin's
review queue (issue 16, item 5). Same rules and services as the pages (imaging.emergency)."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance import audit
from alliance.access import principal_of
from imaging import access, grants
from imaging.models import BreakGlassReview


class BreakGlassRequest(serializers.Serializer):
    study_uid = serializers.CharField(max_length=64)
    reason = serializers.CharField(max_length=2000)


class BreakGlassSerializer(serializers.ModelSerializer):
    study_uid = serializers.CharField(source="study.study_uid", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True)
    user_institution = serializers.CharField(source="user_institution.name", read_only=True)
    basis = serializers.CharField(read_only=True)

    class Meta:
        model = BreakGlassReview
        fields = [
            "id",
            "study_uid",
            "basis",
            "user",
            "user_institution",
            "reason",
            "opened_at",
            "expires_at",
            "state",
            "comment",
            "reviewed_at",
        ]


class ReviewRequest(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "flag"])
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class BreakGlassOpen(APIView):
    """Open a study of another member outside your grants, in an emergency (a reason is required)."""

    @extend_schema(request=BreakGlassRequest, responses={201: BreakGlassSerializer})
    def post(self, request: Request) -> Response:
        principal = principal_of(request)
        data = BreakGlassRequest(data=request.data)
        data.is_valid(raise_exception=True)
        study = access.break_glass_studies_for(principal).filter(study_uid=data.validated_data["study_uid"]).first()
        if study is None:
            raise NotFound("No study of another member of the alliance has this Study Instance UID.")
        review = grants.break_glass(
            by=principal, study=study, reason=data.validated_data["reason"], source=audit.source_of(request)
        )
        return Response(BreakGlassSerializer(review).data, status=status.HTTP_201_CREATED)


def _queue(request: Request) -> Any:
    principal = principal_of(request)
    if not principal.has_role("institution_admin"):
        raise PermissionDenied("Institution admins review emergency access to their studies.")
    return access.break_glass_reviews_for(principal).select_related("study", "user", "user_institution")


class BreakGlassReviews(APIView):
    """Emergency accesses to your institution's studies (institution admins), waiting ones first."""

    @extend_schema(responses={200: BreakGlassSerializer(many=True)})
    def get(self, request: Request) -> Response:
        rows = list(_queue(request).order_by("-state", "-opened_at")[:200])
        studies = list({r.study_id: r.study for r in rows}.values())
        audit.read_many(
            request, studies, "break-glass.queue", {s.pk: access.OWN_INSTITUTION for s in studies}, via="api"
        )
        return Response(BreakGlassSerializer(rows, many=True).data)


class BreakGlassReviewAction(APIView):
    """Approve an emergency access, or flag it with a comment (a flagged access still open ends)."""

    @extend_schema(request=ReviewRequest, responses={200: BreakGlassSerializer})
    def post(self, request: Request, pk: int) -> Response:
        review = get_object_or_404(_queue(request), pk=pk)
        data = ReviewRequest(data=request.data)
        data.is_valid(raise_exception=True)
        review = grants.break_glass_review(
            by=principal_of(request),
            review=review,
            approve=data.validated_data["decision"] == "approve",
            comment=data.validated_data["comment"],
        )
        return Response(BreakGlassSerializer(review).data)

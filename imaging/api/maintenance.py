"""/api/v1/series/<uid>/move/: move a misfiled series to another study of the same patient
(issue 16, item 9), for an admin of the owning institution. The same service as the page
(imaging.maintenance.series_move)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance.access import principal_of
from imaging import access, maintenance, selectors


class SeriesMoveRequest(serializers.Serializer):
    study_uid = serializers.CharField(max_length=64, help_text="The Study Instance UID the series moves to.")
    reason = serializers.CharField(max_length=500)


class SeriesMoveResult(serializers.Serializer):
    series_uid = serializers.CharField()
    study_uid = serializers.CharField()
    from_study_uid = serializers.CharField()
    instances = serializers.IntegerField()


class SeriesMove(APIView):
    """Move a series to another study of the same patient, issuer and institution; its files
    are rewritten with the new Study Instance UID. Refused (400) for another patient,
    institution or issuer, a deleted study, the only series of a study, a key-object or
    report series, or a series or study that changed during the move (try again)."""

    @extend_schema(request=SeriesMoveRequest, responses={200: SeriesMoveResult})
    def post(self, request: Request, series_uid: str) -> Response:
        principal = principal_of(request)
        series = selectors.get_series_for(principal, series_uid)
        source = series.study
        if not access.may_move_series(principal, source):
            raise PermissionDenied("Only an admin of the institution that owns the study moves its series.")
        data = SeriesMoveRequest(data=request.data)
        data.is_valid(raise_exception=True)
        target = access.get_study_for(principal, data.validated_data["study_uid"])
        moved = maintenance.series_move(
            by=principal, series=series, target=target, reason=data.validated_data["reason"]
        )
        result = {
            "series_uid": moved.series_uid,
            "study_uid": target.study_uid,
            "from_study_uid": source.study_uid,
            "instances": moved.instances.count(),
        }
        return Response(SeriesMoveResult(result).data)

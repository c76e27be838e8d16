"""/api/v1/studies/<uid>/key-objects/: the reader's key images and measurements of a study.

Mounted beside the imaging API (alliance/api/urls.py) but owned here, because who may save
depends on the consult (consults.access.may_save_key_objects); the DICOM work is
imaging.key_objects."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance import audit
from alliance.access import principal_of
from consults import access
from imaging import access as imaging_access
from imaging import key_objects


class Unsaveable(exceptions.APIException):
    """What the viewer sent cannot be saved: 400 with the reason as the error's message."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"


class KeyObjectsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key_images = serializers.ListField(child=serializers.CharField(max_length=64))
    measurements = serializers.ListField(child=serializers.DictField())


class KeyObjectsReadSerializer(KeyObjectsSerializer):
    saved_at = serializers.CharField(allow_null=True)
    may_save = serializers.BooleanField()


class KeyObjects(APIView):
    """GET: what the user saved on this study (parsed from their KO and SR). POST: save
    {key_images: [SOP Instance UIDs], measurements: [{kind, sop_uid, points, length|area|mean|sd}]}
    as a new Key Object Selection and TID 1500 Measurement Report in the study."""

    @extend_schema(responses=KeyObjectsReadSerializer)
    def get(self, request: Request, study_uid: str) -> Response:
        principal = principal_of(request)
        study = imaging_access.get_study_for(principal, study_uid)
        audit.read(request, study, "study.key_objects.view", imaging_access.basis_for(principal, study), via="api")
        found = key_objects.key_objects_of(study, principal.user.pk)
        return Response({**found, "may_save": access.may_save_key_objects(principal, study)})

    @extend_schema(request=KeyObjectsSerializer, responses={201: KeyObjectsReadSerializer})
    def post(self, request: Request, study_uid: str) -> Response:
        principal = principal_of(request)
        study = imaging_access.get_study_for(principal, study_uid)
        if not access.may_save_key_objects(principal, study):
            raise exceptions.PermissionDenied("Only the study's reader or a doctor of its institution may save.")
        data = request.data if isinstance(request.data, dict) else {}
        try:
            key_objects.key_objects_save(
                study=study,
                by=principal,
                key_images=data.get("key_images", []),
                measurements=data.get("measurements", []),
            )
        except key_objects.KeyObjectsInvalid as exc:
            raise Unsaveable(str(exc)) from None
        found = key_objects.key_objects_of(study, principal.user.pk)
        return Response({**found, "may_save": True}, status=status.HTTP_201_CREATED)

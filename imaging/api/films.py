"""/api/v1/films/: the institution's cloud film links (the patient side is pages only).

POST makes a link for a study (its UID) or a finished consult or referral (its id) and
answers, once, what the patient needs: url, code and, for a PIN check, the PIN.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance import audit
from alliance.access import principal_of
from imaging import access, films
from imaging.models import FilmLink


class FilmLinkSerializer(serializers.ModelSerializer):
    studies = serializers.SlugRelatedField(slug_field="study_uid", many=True, read_only=True)
    verify = serializers.CharField(read_only=True)

    class Meta:
        model = FilmLink
        fields = [
            "id",
            "kind",
            "verify",
            "case",
            "studies",
            "created_at",
            "expires_at",
            "max_openings",
            "openings",
            "revoked_at",
            "parent",
        ]


class FilmCreateSerializer(serializers.Serializer):
    study = serializers.CharField(required=False, max_length=64)
    consult = serializers.IntegerField(required=False, min_value=1)
    referral = serializers.IntegerField(required=False, min_value=1)
    expires_in_days = serializers.IntegerField(required=False, min_value=1, max_value=3650)
    verify = serializers.ChoiceField(choices=FilmLink.Verify.values, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("study", "consult", "referral") if attrs.get(k)]
        if len(given) != 1:
            raise serializers.ValidationError("Give one of study, consult or referral.")
        return attrs


class FilmIssuedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.URLField()
    code = serializers.CharField()
    pin = serializers.CharField(required=False)
    expires_at = serializers.DateTimeField()


class FilmList(generics.ListCreateAPIView):
    """GET ?study=<uid>: the caller's institution's links of that study; POST: a new link."""

    serializer_class = FilmLinkSerializer

    @extend_schema(parameters=[OpenApiParameter("study", str, description="Study Instance UID.")])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[FilmLink]:
        links = films.links_visible_to(principal_of(self.request)).prefetch_related("studies")
        uid = self.request.query_params.get("study")
        if uid:
            links = links.filter(studies__study_uid=uid)
        return links.order_by("-created_at", "-id")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        audit.record_many(
            read=True,
            actor=audit.actor_of(request),
            action="film.list",
            object_type="film",
            items=[(str(link.pk), str(link.patient_id), link.case) for link in page],
            source=audit.source_of(request),
            detail={"via": "api"},
        )
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=FilmCreateSerializer, responses={201: FilmIssuedSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        form = FilmCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        principal = principal_of(request)
        options = {"expires_in_days": data.get("expires_in_days"), "verify": data.get("verify")}
        if data.get("study"):
            study = access.get_study_for(principal, data["study"])
            made = films.film_create(studies=[study], by=principal, **options)
        else:
            kind = "consult" if data.get("consult") else "referral"
            made = films.film_create_for_case(case=f"{kind}:{data[kind]}", by=principal, **options)
        body = {"id": made.link.pk, "url": made.url, "code": made.code_display, "expires_at": made.link.expires_at}
        if made.pin:
            body["pin"] = made.pin
        return Response(FilmIssuedSerializer(body).data, status=status.HTTP_201_CREATED)


class FilmRevoke(APIView):
    """POST: the link (and the share links made from it) no longer open."""

    @extend_schema(request=None, responses={200: FilmLinkSerializer})
    def post(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        link = films.get_link_for(principal, pk)
        link = films.film_revoke(link=link, by=principal.actor, source=audit.source_of(request))
        return Response(FilmLinkSerializer(link).data)

"""/api/v1/tokens/: the caller's own REST API tokens, to list and revoke. A token is made on the
"API tokens" page, where its key is shown once; the API never shows a key."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from alliance import access, accounts
from alliance.models import ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    expired = serializers.BooleanField(source="is_expired", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "prefix", "name", "created_at", "expires_at", "expired"]
        read_only_fields = fields


class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The caller's tokens that are not revoked (expired ones too, marked). DELETE revokes one."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI schema's, without a user
            return ApiToken.objects.none()
        return accounts.tokens_of(self.request.user)

    def destroy(self, request: Request, pk: Any = None) -> Response:
        token = self.get_object()
        accounts.token_revoke(token=token, by=access.principal_of(request).actor)
        return Response(status=204)

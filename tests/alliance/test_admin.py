"""The Django admin (operators only) offers no page for DRF's plain-text tokens: API tokens
are alliance.accounts' hashed ApiToken rows, and a key made there would be one more secret
kept in the clear."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token, TokenProxy


def test_drf_tokens_have_no_admin_page() -> None:
    assert not admin.site.is_registered(TokenProxy)
    assert not admin.site.is_registered(Token)


@pytest.mark.django_db
def test_the_admin_index_does_not_list_them(client: Any) -> None:
    operator = get_user_model().objects.create_superuser("operator", "op@example.org", "x-long-password-1")
    client.force_login(operator)
    assert client.get("/django-admin/authtoken/tokenproxy/").status_code == 404
    assert "authtoken" not in client.get("/django-admin/").content.decode()

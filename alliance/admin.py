"""The Django admin, for operators. rest_framework.authtoken stays installed only so that
migration 0005 can move its old plain-text tokens into hashed ApiToken rows
(alliance.accounts); its admin page, which would show and make plain-text keys the API no
longer takes, is removed (the admin loads apps in INSTALLED_APPS order, authtoken's first)."""

from __future__ import annotations

from django.contrib import admin
from rest_framework.authtoken.models import TokenProxy

if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)

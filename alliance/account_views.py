"""My account: password, second factor (enrolment, the code after the password, recovery codes)
and REST API tokens. The writes are alliance.accounts' services."""

from __future__ import annotations

from typing import Any

import django_otp
import segno
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext_lazy
from django.views.decorators.http import require_POST

from alliance import access, accounts, audit, reauth
from alliance.forms import apply_service_errors


class CodeForm(forms.Form):
    code = forms.CharField(
        label=pgettext_lazy("one-time code", "Code"),
        max_length=20,
        # no numeric keypad: a recovery code has letters
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True}),
    )


class TokenForm(forms.Form):
    name = forms.CharField(
        label=gettext_lazy("What is it for?"),
        max_length=100,
        required=False,
        help_text=gettext_lazy("For example the name of the workstation or script that uses it."),
    )


def _actor(request: HttpRequest) -> audit.Actor:
    return access.principal_of(request).actor


def _next(request: HttpRequest, default: str) -> HttpResponseRedirect:
    target = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()})
    return redirect(target if safe and target.startswith("/") else default)


@login_required
def account(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    context = {
        "second_factor": accounts.has_second_factor(user),
        "second_factor_required": access.second_factor_required(access.principal_of(request)),
        "recovery_left": accounts.recovery_codes_left(user),
        "tokens": accounts.tokens_of(user).count(),
    }
    return render(request, "account/index.html", context)


@login_required
def password(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    form = PasswordChangeForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            accounts.password_change(user=user, new_password=form.cleaned_data["new_password1"], by=_actor(request))
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            update_session_auth_hash(request, user)
            messages.success(request, _("Your password is changed."))
            return _next(request, reverse("account:index"))
    doctor = access.principal_of(request).doctor
    forced = doctor is not None and doctor.must_change_password
    return render(request, "account/password.html", {"form": form, "forced": forced})


@login_required
def two_factor(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator: its QR code, then a code it shows; the recovery codes once."""
    user: Any = request.user
    if accounts.has_second_factor(user):
        return render(request, "account/two_factor.html", {"enabled": True, **_status(request)})
    device = accounts.totp_begin(user=user, by=_actor(request))
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            codes = accounts.totp_confirm(user=user, device=device, code=form.cleaned_data["code"], by=_actor(request))
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            django_otp.login(request, device)
            return render(request, "account/recovery_codes.html", {"codes": codes, "next": _safe_next(request)})
    context = {
        "form": form,
        "qr": segno.make(device.config_url, error="m").svg_data_uri(scale=5, border=2),
        "secret": _grouped(_base32(device.bin_key)),
        "required": access.second_factor_required(access.principal_of(request)),
        "next": _safe_next(request),
    }
    return render(request, "account/two_factor.html", context)


def _status(request: HttpRequest) -> dict[str, Any]:
    return {"recovery_left": accounts.recovery_codes_left(request.user)}


def _base32(key: bytes) -> str:
    from base64 import b32encode

    return b32encode(key).decode().rstrip("=")


def _grouped(text: str) -> str:
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()})
    return target if safe and target.startswith("/") else ""


@require_POST
@login_required
def recovery_codes(request: HttpRequest) -> HttpResponse:
    try:
        codes = accounts.recovery_codes_renew(user=request.user, by=_actor(request))
    except ValidationError:
        return redirect("account:two_factor")
    return render(request, "account/recovery_codes.html", {"codes": codes, "next": ""})


@login_required
def verify(request: HttpRequest) -> HttpResponse:
    """The code after the password, for a user with an authenticator. A wrong code counts toward
    the sign-in lockout as a wrong password does; once locked, the session ends."""
    user: Any = request.user
    if user.is_verified() or not accounts.has_second_factor(user):
        return _next(request, reverse("home"))
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if reauth.is_locked(request, user):
            return _locked_out(request)
        device = accounts.verify_second_factor(user, form.cleaned_data["code"])
        if device is not None:
            django_otp.login(request, device)
            audit.record(actor=_actor(request), action="login.second_factor", source=audit.source_of(request))
            return _next(request, reverse("home"))
        user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=request)
        if reauth.is_locked(request, user):
            return _locked_out(request)
        form.add_error("code", _("That code is not right. Use the code your authenticator shows now."))
    return render(request, "account/verify.html", {"form": form, "next": _safe_next(request)})


def _locked_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    messages.error(request, _("Too many wrong codes: sign-in is locked for a while."))
    return redirect("login")


# --- API tokens -----------------------------------------------------------------------


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        issued = accounts.token_issue(user=request.user, name=form.cleaned_data["name"], by=_actor(request))
        form = TokenForm()
    context = {
        "form": form,
        "issued": issued,
        "tokens": accounts.tokens_of(request.user),
        "api_token_days": settings.API_TOKEN_DAYS,
    }
    return render(request, "account/tokens.html", context)


@require_POST
@login_required
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(accounts.tokens_of(request.user), pk=pk)
    accounts.token_revoke(token=token, by=_actor(request))
    messages.success(request, _("The token that begins with %(prefix)s no longer works.") % {"prefix": token.prefix})
    return redirect("account:tokens")

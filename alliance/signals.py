"""Sign-ins, failed sign-ins and sign-outs go to the audit trail (IHE ATNA "user authentication")."""

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from alliance import audit
from alliance.models import AuditEvent


@receiver(user_logged_in)
def audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit.record(actor=audit.Actor.for_user(user), action="login", source=audit.source_of(request))


@receiver(user_logged_out)
def audit_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record(actor=audit.Actor.for_user(user), action="logout", source=audit.source_of(request))


@receiver(user_login_failed)
def audit_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))
    audit.record(
        actor=audit.Actor("user", name=username),
        action="login",
        source=audit.source_of(request),
        outcome=AuditEvent.Outcome.FAILURE,
        # django-axes marks the request when this attempt is refused by (or triggers) the lockout
        detail={"locked_out": True} if getattr(request, "axes_locked_out", False) else {},
    )

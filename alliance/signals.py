"""Sign-ins, failed sign-ins and sign-outs go to the audit trail (IHE ATNA "user authentication")."""

from datetime import datetime
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed
from django.dispatch import receiver
from django.utils import timezone

from alliance import audit
from alliance.models import AuditEvent, Pool, PoolMembership


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


def _now() -> datetime:
    """When a doctor joins a desk (tests that run a case on another clock set this one too)."""
    return timezone.now()


@receiver(m2m_changed, sender=Pool.members.through)
def keep_pool_memberships(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any) -> None:
    """PoolMembership (since when one sits on a desk) follows Pool.members, whichever way the
    membership was changed; a doctor who leaves and joins again starts again from then."""
    if action not in {"post_add", "post_remove", "post_clear"}:
        return
    if action == "post_clear":
        rows = (
            PoolMembership.objects.filter(doctor=instance) if reverse else PoolMembership.objects.filter(pool=instance)
        )
        rows.delete()
        return
    pairs = [(instance.pk, pk) if not reverse else (pk, instance.pk) for pk in pk_set or ()]
    if action == "post_remove":
        for pool_id, doctor_id in pairs:
            PoolMembership.objects.filter(pool_id=pool_id, doctor_id=doctor_id).delete()
        return
    now = _now()
    PoolMembership.objects.bulk_create(
        [PoolMembership(pool_id=pool_id, doctor_id=doctor_id, since=now) for pool_id, doctor_id in pairs],
        ignore_conflicts=True,
    )

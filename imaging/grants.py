"""The only writers of study grants: a case (consult, referral) or break-glass opens a study
to a group or a user, and closing the case revokes what it opened.

Grants are rows of StudyGroupGrant and StudyUserGrant, each naming its basis ("consult:12"),
an expiry and a revocation; imaging/access.py reads only the live ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal, institution_admins_of, settings_of
from alliance.models import Institution, Pool
from imaging.access import (
    READ,
    WRITE,
    break_glass_studies_for,
    live,
    may_break_glass,
    may_review_break_glass,
    studies_visible_to_devices_of,
)
from imaging.models import BreakGlassReview, Study, StudyGroupGrant, StudyUserGrant

BREAK_GLASS_MIN_REASON = 10


@dataclass(frozen=True)
class Grantee:
    """Who receives a case's access: a group (an institution's or a pool's) or one user."""

    group: Group | None = None
    user: Any = None

    @classmethod
    def institution(cls, institution: Institution) -> Grantee:
        return cls(group=institution.group)

    @classmethod
    def pool(cls, pool: Pool) -> Grantee:
        return cls(group=pool.group)

    @property
    def audit_name(self) -> str:
        return f"group:{self.group.pk}" if self.group is not None else f"user:{self.user.pk}"


def _permission(codename: str) -> Permission:
    return Permission.objects.get(codename=codename, content_type__app_label="imaging")


def _write_grant(study: Study, grantee: Grantee, permission: Permission, basis: str, values: dict[str, Any]) -> None:
    if grantee.group is not None:
        StudyGroupGrant.objects.update_or_create(
            group=grantee.group, content_object=study, permission=permission, basis=basis, defaults=values
        )
    else:
        StudyUserGrant.objects.update_or_create(
            user=grantee.user, content_object=study, permission=permission, basis=basis, defaults=values
        )


@transaction.atomic
def grant_study(
    *,
    study: Study,
    grantee: Grantee,
    basis: str,
    by: audit.Actor,
    write: bool = False,
    expires_at: datetime | None = None,
    reason: str = "",
) -> None:
    """Open the study to the grantee for a case (read, and write while the case is worked)."""
    values: dict[str, Any] = {"expires_at": expires_at, "revoked_at": None}
    if grantee.group is None:
        values["reason"] = reason
    for codename in [READ, WRITE] if write else [READ]:
        _write_grant(study, grantee, _permission(codename), basis, values)
    audit.record(
        actor=by,
        action="grant.create",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        basis=basis,
        detail={"grantee": grantee.audit_name, "write": write, "expires_at": str(expires_at or "")},
    )


@transaction.atomic
def revoke_grants(*, basis: str, by: audit.Actor, write_only: bool = False) -> int:
    """End a case's access (write_only: drop to read-only, as when a report is signed)."""
    now = timezone.now()
    count = 0
    for model in (StudyGroupGrant, StudyUserGrant):
        rows = model.objects.filter(basis=basis, revoked_at__isnull=True)
        if write_only:
            rows = rows.filter(permission__codename=WRITE)
        count += rows.update(revoked_at=now)
    audit.record(
        actor=by,
        action="grant.revoke",
        object_type="basis",
        object_id=basis,
        basis=basis,
        detail={"grants": count, "write_only": write_only},
    )
    return count


def _live_of(basis: str) -> list[QuerySet[Any]]:
    return [model.objects.filter(live(), basis=basis) for model in (StudyGroupGrant, StudyUserGrant)]


def narrow_grants(
    *, basis: str, studies: Iterable[Study], grantees: Iterable[Grantee], by: audit.Actor, write: bool = True
) -> int:
    """The case's access goes to exactly these grantees: each gets read (and write) on every
    study, and every other live grant of the basis is revoked (a claim narrows a pool's
    grant to the claimer; a release widens it back). Returns how many grants were revoked."""
    grantees = list(grantees)
    studies = list(studies)
    values: dict[str, Any] = {"expires_at": None, "revoked_at": None}
    for study in studies:
        for grantee in grantees:
            for codename in [READ, WRITE] if write else [READ]:
                _write_grant(study, grantee, _permission(codename), basis, values)
    groups = [g.group.pk for g in grantees if g.group is not None]
    users = [g.user.pk for g in grantees if g.group is None]
    group_rows, user_rows = _live_of(basis)
    now = timezone.now()
    # The receiving institution's devices keep theirs (open_to_devices): a claim moves the reading, not the PACS.
    revoked = group_rows.exclude(group_id__in=groups).exclude(devices_only=True).update(revoked_at=now)
    revoked += user_rows.exclude(user_id__in=users).update(revoked_at=now)
    audit.record(
        actor=by,
        action="grant.narrow",
        object_type="basis",
        object_id=basis,
        patient=audit.patients(s.patient_id for s in studies),
        basis=basis,
        detail={"grantees": [g.audit_name for g in grantees], "write": write, "revoked": revoked},
    )
    return revoked


@transaction.atomic
def extend_case_grants(*, basis: str, study: Study, by: audit.Actor) -> int:
    """A study that joins a case later (the exam the case asked for came) is opened as the
    case's other studies are now: to each grantee of the basis's live grants, with the same
    permission and expiry (the longest, where they differ). Returns how many grants it got."""
    groups: dict[tuple[int, int], tuple[datetime | None, bool]] = {}
    for group_id, permission_id, expires_at, devices_only in StudyGroupGrant.objects.filter(
        live(), basis=basis
    ).values_list("group_id", "permission_id", "expires_at", "devices_only"):
        key = (group_id, permission_id)
        groups[key] = (_later(groups[key][0], expires_at) if key in groups else expires_at, devices_only)
    users: dict[tuple[int, int], datetime | None] = {}
    for user_id, permission_id, expires_at in StudyUserGrant.objects.filter(live(), basis=basis).values_list(
        "user_id", "permission_id", "expires_at"
    ):
        key = (user_id, permission_id)
        users[key] = _later(users[key], expires_at) if key in users else expires_at
    for (group_id, permission_id), (expires_at, devices_only) in groups.items():
        StudyGroupGrant.objects.update_or_create(
            group_id=group_id,
            permission_id=permission_id,
            content_object=study,
            basis=basis,
            defaults={"expires_at": expires_at, "revoked_at": None, "devices_only": devices_only},
        )
    for (user_id, permission_id), expires_at in users.items():
        StudyUserGrant.objects.update_or_create(
            user_id=user_id,
            permission_id=permission_id,
            content_object=study,
            basis=basis,
            defaults={"expires_at": expires_at, "revoked_at": None},
        )
    audit.record(
        actor=by,
        action="grant.extend",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        basis=basis,
        detail={
            "grantees": sorted({f"group:{g}" for g, _p in groups} | {f"user:{u}" for u, _p in users}),
            "grants": len(groups) + len(users),
        },
    )
    return len(groups) + len(users)


def _later(one: datetime | None, other: datetime | None) -> datetime | None:
    """The later of two expiries, where None (no expiry) is the latest."""
    return None if one is None or other is None else max(one, other)


@transaction.atomic
def open_to_devices(*, studies: Iterable[Study], institution: Institution, basis: str, by: audit.Actor) -> int:
    """Let the institution's DICOM devices (not its doctors) read a case's studies, for as long
    as the case's other grants last (the basis is the case's: revoking or closing it ends this
    too). Its destinations then receive them (imaging.routing) and its PACS may retrieve them.
    A study the devices see already is left alone. Returns how many studies were opened."""
    studies = list(studies)
    visible = studies_visible_to_devices_of(institution).filter(pk__in=[s.pk for s in studies])
    seen = set(visible.values_list("pk", flat=True))
    opened = [s for s in studies if s.pk not in seen]
    permission = _permission(READ)
    for study in opened:
        StudyGroupGrant.objects.update_or_create(
            group=institution.group,
            content_object=study,
            permission=permission,
            basis=basis,
            defaults={"expires_at": None, "revoked_at": None, "devices_only": True},
        )
    if opened:
        audit.record(
            actor=by,
            action="grant.devices",
            object_type="basis",
            object_id=basis,
            patient=",".join(sorted({str(s.patient_id) for s in opened}))[:200],
            basis=basis,
            detail={"institution": institution.pk, "studies": [s.study_uid for s in opened]},
        )
    return len(opened)


@transaction.atomic
def close_case_grants(*, basis: str, read_until: datetime, by: audit.Actor) -> int:
    """The work of a case is done (a report signed): write access ends now and read access
    at `read_until` (the alliance's reader_access_days). Returns how many grants changed."""
    now = timezone.now()
    changed = 0
    for rows in _live_of(basis):
        changed += rows.filter(permission__codename=WRITE).update(revoked_at=now)
        reads = rows.filter(permission__codename=READ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=read_until))
        changed += reads.update(expires_at=read_until)
    audit.record(
        actor=by,
        action="grant.close",
        object_type="basis",
        object_id=basis,
        basis=basis,
        detail={"grants": changed, "read_until": read_until.isoformat()},
    )
    return changed


@transaction.atomic
def break_glass(*, by: Principal, study: Study, reason: str, source: str = "") -> BreakGlassReview:
    """Emergency access to a study outside the doctor's grants: needs a reason, lasts the
    alliance's break_glass_hours, and waits for the review of an admin of the institution
    that owns the study (told in the app and by e-mail)."""
    if not may_break_glass(by):
        raise AccessDenied(_("Only an active clinician or specialist may use emergency access."))
    reason = (reason or "").strip()
    if len(reason) < BREAK_GLASS_MIN_REASON:
        raise ValidationError(
            {
                "reason": _("Emergency access needs a reason of at least %(n)d characters.")
                % {"n": BREAK_GLASS_MIN_REASON}
            }
        )
    if not break_glass_studies_for(by).filter(pk=study.pk).exists():
        raise AccessDenied(_("Emergency access is for studies of your alliance that you cannot see otherwise."))
    now = timezone.now()
    doctor = by.doctor
    assert doctor is not None  # may_break_glass
    hours = settings_of(doctor.institution.alliance_id).break_glass_hours
    record = BreakGlassReview.objects.create(
        study=study,
        owner_institution_id=study.institution_id,
        user=by.user,
        user_institution=doctor.institution,
        reason=reason,
        opened_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    grant_study(
        study=study,
        grantee=Grantee(user=by.user),
        basis=record.basis,
        by=by.actor,
        reason=reason,
        expires_at=record.expires_at,
    )
    audit.record(
        actor=by.actor,
        action="break-glass",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        basis=record.basis,
        source=source,
        detail={"reason": reason, "hours": hours, "owner_institution": study.institution_id},
    )
    _mail_admins_after_commit(record)
    return record


def _mail_admins_after_commit(record: BreakGlassReview) -> None:
    from imaging import tasks  # tasks call services; this is the one way back

    def queue() -> None:  # named: a robust on_commit logs its callback's __qualname__
        tasks.send_break_glass_email.delay(record.pk)

    transaction.on_commit(queue, robust=True)


@transaction.atomic
def break_glass_review(
    *, by: Principal, review: BreakGlassReview, approve: bool, comment: str = ""
) -> BreakGlassReview:
    """The owning institution's admin approves an emergency access, or flags it with a comment;
    a flagged access that is still running ends at once."""
    review = BreakGlassReview.objects.select_for_update().get(pk=review.pk)
    if not may_review_break_glass(by, review):
        raise AccessDenied(_("Only an admin of the institution that owns the study reviews its emergency access."))
    if review.state != BreakGlassReview.State.PENDING:
        raise ValidationError({"state": _("This emergency access was reviewed already.")})
    comment = (comment or "").strip()
    if not approve and not comment:
        raise ValidationError({"comment": _("Say what is wrong with this emergency access.")})
    now = timezone.now()
    review.state = BreakGlassReview.State.APPROVED if approve else BreakGlassReview.State.FLAGGED
    review.comment, review.reviewed_by, review.reviewed_at = comment, by.user, now
    review.save(update_fields=["state", "comment", "reviewed_by", "reviewed_at"])
    grants = StudyUserGrant.objects.filter(basis=review.basis)
    grants.update(reviewed_at=now)
    ended = 0 if approve else grants.filter(live()).update(revoked_at=now)
    audit.record(
        actor=by.actor,
        action="break-glass.review",
        object_type="study",
        object_id=review.study.study_uid,
        patient=str(review.study.patient_id),
        basis=review.basis,
        detail={"state": review.state, "comment": comment, "ended": bool(ended)},
    )
    return review


@transaction.atomic
def break_glass_emailed(*, review: BreakGlassReview) -> list[Any]:
    """The admins to mail about an emergency access not mailed yet (and it is marked mailed);
    [] when another run mailed it already."""
    row = BreakGlassReview.objects.select_for_update(skip_locked=True).filter(pk=review.pk, emailed_at=None).first()
    if row is None:
        return []
    row.emailed_at = timezone.now()
    row.save(update_fields=["emailed_at"])
    return [d.user for d in institution_admins_of(row.owner_institution_id) if d.user.email]

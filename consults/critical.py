"""Critical results (危急值): the reader flags, the requesting side reads back, the admin is told.

The reader of a case flags a finding from the alliance's list for the consult's modality,
or in free text (critical_flag). The requesting institution's clinicians get a notice and
an e-mail at once. A clinician of that institution acknowledges by reading the finding
back (critical_acknowledge). A flag nobody acknowledged within the setting
CRITICAL_ESCALATE_MINUTES goes to the requesting institution's admins, once
(critical_escalate_due, the beat job). Every step writes one audit event; notices are
consults.Notification rows and their e-mail follows the consults' outbox (services.notify).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.timezone import localtime
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal, institution_admins_of, with_role
from alliance.models import Alliance, Doctor, Role
from consults import access, clock, services
from consults.models import Consult, CriticalFinding, CriticalResult
from consults.services import IllegalTransition

TEXT_MAX = 300


def _audit(by: audit.Actor, action: str, result: CriticalResult, **detail: Any) -> None:
    consult = result.consult
    audit.record(
        actor=by,
        action=f"consult.{action}",
        object_type="consult",
        object_id=consult.pk,
        patient=consult.audit_patient,
        basis=consult.basis,
        detail={"critical_result": result.pk, "finding": result.text, **detail},
    )


def _clinicians_of(institution_id: int) -> list[Any]:
    doctors = Doctor.objects.filter(active=True, institution_id=institution_id).select_related("user")
    return [d.user for d in with_role(doctors, Role.CLINICIAN)]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _read_back_matches(read_back: str, finding: str) -> bool:
    """The whole finding, or one language of a bilingual one ("气胸 (Pneumothorax)")."""
    forms = {_norm(finding)}
    named = re.fullmatch(r"(.+?)\s*\((.+)\)", finding.strip())
    if named:
        forms |= {_norm(named.group(1)), _norm(named.group(2))}
    return _norm(read_back) in forms


# --- flag ---------------------------------------------------------------------------------


def _finding_text(consult: Consult, finding: CriticalFinding | None, text: str) -> str:
    if finding is not None:
        if not access.critical_findings_for(consult).filter(pk=finding.pk).exists():
            raise ValidationError(
                {"finding": _("This finding is not on the list for %(modality)s.") % {"modality": consult.modality}}
            )
        return finding.name
    text = " ".join((text or "").split())
    if not text:
        raise ValidationError({"text": _("Choose a finding from the list or describe it.")})
    if len(text) > TEXT_MAX:
        raise ValidationError({"text": _("Describe the finding in at most %(n)s characters.") % {"n": TEXT_MAX}})
    return text


@transaction.atomic
def critical_flag(
    *, consult: Consult, by: Principal, finding: CriticalFinding | None = None, text: str = ""
) -> CriticalResult:
    """The reader flags a critical finding; the requesting institution's clinicians are told at once."""
    consult = services.locked(consult)
    if not access.may_flag_critical(by, consult):
        raise AccessDenied(_("Only the reader of consult #%(id)s flags a critical result on it.") % {"id": consult.pk})
    now = clock.now()
    result = CriticalResult.objects.create(
        consult=consult,
        finding=finding,
        text=_finding_text(consult, finding, text),
        modality=consult.modality,
        flagged_by=services.acting_doctor(by),
        flagged_at=now,
    )
    _audit(by.actor, "critical_flag", result, listed=finding is not None)
    told = [consult.requester.user, *_clinicians_of(consult.requesting_institution_id)]
    services.notify(consult, told, "critical", now, by)
    _audit(audit.SYSTEM, "critical_notify", result, users=sorted({u.pk for u in told if u.pk != by.user_id}))
    return result


# --- acknowledge --------------------------------------------------------------------------


@transaction.atomic
def critical_acknowledge(*, result: CriticalResult, by: Principal, read_back: str) -> CriticalResult:
    """A clinician of the requesting side reads the finding back; who and when are kept."""
    result = CriticalResult.objects.select_for_update(of=("self",)).select_related("consult").get(pk=result.pk)
    if not access.may_acknowledge_critical(by, result):
        raise AccessDenied(_("Only a clinician of the requesting institution acknowledges a critical result."))
    if result.is_acknowledged:
        raise IllegalTransition(
            _("This critical result was already acknowledged by %(name)s at %(at)s.")
            % {"name": result.acknowledged_by, "at": localtime(result.acknowledged_at).strftime("%Y-%m-%d %H:%M")}
        )
    read_back = " ".join((read_back or "").split())
    if not read_back:
        raise ValidationError({"read_back": _("Read the finding back: type or choose it.")})
    if not _read_back_matches(read_back, result.text):
        raise ValidationError({"read_back": _("What you read back is not the finding flagged. Read it again.")})
    now = clock.now()
    result.acknowledged_by = by.doctor
    result.acknowledged_at = now
    result.read_back = read_back[:TEXT_MAX]
    result.save(update_fields=["acknowledged_by", "acknowledged_at", "read_back"])
    _audit(by.actor, "critical_ack", result, read_back=result.read_back)
    services.notify(result.consult, [result.flagged_by.user], "critical_ack", now, by)
    return result


# --- escalate -----------------------------------------------------------------------------


def escalate_after() -> timedelta:
    return timedelta(minutes=settings.CRITICAL_ESCALATE_MINUTES)


def _waiting(now: datetime) -> Any:
    return CriticalResult.objects.filter(
        acknowledged_at=None, escalated_at=None, flagged_at__lte=now - escalate_after()
    )


def _escalate_one(pk: int, now: datetime) -> bool:
    with transaction.atomic():
        result = _waiting(now).select_for_update(of=("self",), skip_locked=True).filter(pk=pk).first()
        if result is None:  # acknowledged, escalated or being escalated by another run meanwhile
            return False
        result.escalated_at = now
        result.save(update_fields=["escalated_at"])
        consult = result.consult
        admins = [d.user for d in institution_admins_of(consult.requesting_institution_id)]
        services.notify(consult, admins, "critical_escalate", now)
        _audit(audit.SYSTEM, "critical_escalate", result, users=sorted(u.pk for u in admins))
        return True


def critical_escalate_due(*, now: datetime | None = None) -> int:
    """The beat job: every flag unacknowledged past the setting goes to the requesting
    institution's admins, once. Safe to run twice or at once: each row is locked and re-read."""
    now = now or clock.now()
    ids = list(_waiting(now).order_by("flagged_at").values_list("pk", flat=True))
    return sum(_escalate_one(pk, now) for pk in ids)


# --- the alliance's list ------------------------------------------------------------------


def _finding_fields(modality: str, name: str) -> dict[str, str]:
    modality = (modality or "").strip().upper()
    name = " ".join((name or "").split())
    errors = {}
    if not modality:
        errors["modality"] = _("Give the modality, e.g. CT.")
    if not name:
        errors["name"] = _("Name the finding.")
    if errors:
        raise ValidationError(errors)
    return {"modality": modality, "name": name}


@transaction.atomic
def critical_finding_create(*, alliance: Alliance, modality: str, name: str, actor: audit.Actor) -> CriticalFinding:
    """An entry of the alliance's list (seed_demo and the console page)."""
    fields = _finding_fields(modality, name)
    if CriticalFinding.objects.filter(alliance=alliance, **fields).exists():
        raise ValidationError({"name": _("This finding is on the list already.")})
    finding = CriticalFinding.objects.create(alliance=alliance, **fields)
    audit.record(
        actor=actor,
        action="consult.critical_finding_create",
        object_type="critical_finding",
        object_id=finding.pk,
        detail={"alliance": alliance.pk, **fields},
    )
    return finding


@transaction.atomic
def critical_finding_save(
    *, by: Principal, finding: CriticalFinding | None = None, modality: str, name: str, active: bool = True
) -> CriticalFinding:
    """The alliance admin adds an entry (finding=None), or renames or (de)activates one of theirs.
    An entry is never deleted: flags made from it keep pointing at it."""
    if not access.may_manage_critical_findings(by):
        raise AccessDenied(_("Only an alliance admin keeps the list of critical findings."))
    if finding is None:
        alliance = by.alliance
        if alliance is None:  # may_manage_critical_findings holds for an alliance's admin only
            raise AccessDenied(_("Only an alliance admin keeps the list of critical findings."))
        return critical_finding_create(alliance=alliance, modality=modality, name=name, actor=by.actor)
    finding = access.critical_findings_managed_by(by).select_for_update().get(pk=finding.pk)
    fields = _finding_fields(modality, name)
    clash = CriticalFinding.objects.filter(alliance_id=finding.alliance_id, **fields).exclude(pk=finding.pk)
    if clash.exists():
        raise ValidationError({"name": _("This finding is on the list already.")})
    for field, value in {**fields, "active": active}.items():
        setattr(finding, field, value)
    finding.save()
    audit.record(
        actor=by.actor,
        action="consult.critical_finding_update",
        object_type="critical_finding",
        object_id=finding.pk,
        detail={**fields, "active": active},
    )
    return finding

"""THE access policy (C7). Every "may this user (or device) see or do this" is answered here.

Pages, the REST API, DICOMweb and the DICOM server all call these functions; there is
no second copy of a rule anywhere else.

- A doctor sees their own institution's studies (clinical roles only).
- Another institution's study is visible only through an unexpired, unrevoked grant
  (StudyGroupGrant to the doctor's institution or pool, or StudyUserGrant to the doctor)
  that a consult, referral or break-glass created; the grant names its basis.
- An alliance admin sees no images by default.
- A DICOM device acts for its institution: its institution's studies plus those granted
  to the institution's group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from alliance import audit
from alliance.models import Alliance, AuditEvent, Department, Device, Doctor, Institution, Pool, Role

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    from imaging.models import Study

    AnyUser = AbstractBaseUser | AnonymousUser

CLINICAL_ROLES = {Role.CLINICIAN, Role.SPECIALIST, Role.INSTITUTION_ADMIN}
READ = "read_study"
WRITE = "change_study"
BREAK_GLASS_HOURS = 24


class StudyRef(Protocol):
    """What a policy decision needs of a study: a Study row, or a light stand-in for one."""

    pk: Any
    institution_id: Any


class AccessDenied(Exception):
    """Raised by services when the actor may not do what it asked."""


# --- who is asking --------------------------------------------------------------------


def doctor_of(user: Any) -> Doctor | None:
    """The active doctor behind a user, or None (anonymous, inactive, or their institution is off)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if hasattr(user, "_active_doctor"):  # set below or by remember_doctor: a Doctor or None
        cached: Doctor | None = user._active_doctor
        return cached
    doctor = (
        Doctor.objects.select_related("institution", "institution__alliance")
        .filter(user=user, active=True, institution__active=True)
        .first()
    )
    user._active_doctor = doctor
    return doctor


def remember_doctor(user: Any, doctor: Doctor | None) -> None:
    """Let doctor_of answer from a doctor already loaded (with its institution and alliance)
    together with the user, as token authentication does: one query fewer per request."""
    usable = doctor is not None and doctor.active and doctor.institution.active
    user._active_doctor = doctor if usable else None


def is_alliance_admin(user: Any) -> bool:
    doctor = doctor_of(user)
    return bool(doctor and doctor.has_role(Role.ALLIANCE_ADMIN))


def alliance_of(user: Any) -> Alliance | None:
    doctor = doctor_of(user)
    return doctor.institution.alliance if doctor else None


def has_clinical_role(user: Any) -> bool:
    doctor = doctor_of(user)
    return bool(doctor and CLINICAL_ROLES.intersection(doctor.roles))


def has_module(user: Any, module: str) -> bool:
    """Whether the user's institution has this capability switched on (C11: what is off is absent)."""
    doctor = doctor_of(user)
    return bool(doctor and module in doctor.institution.modules)


# --- membership administration --------------------------------------------------------


def institutions_managed_by(user: Any) -> QuerySet[Institution]:
    """Institutions whose members, departments, pools and devices the user may manage."""
    doctor = doctor_of(user)
    if doctor is None:
        return Institution.objects.none()
    if doctor.has_role(Role.ALLIANCE_ADMIN):
        return Institution.objects.filter(alliance_id=doctor.institution.alliance_id)
    if doctor.has_role(Role.INSTITUTION_ADMIN):
        return Institution.objects.filter(pk=doctor.institution_id)
    return Institution.objects.none()


def institutions_visible_to(user: Any) -> QuerySet[Institution]:
    """Every member of the user's alliance is listed (names and levels are not patient data)."""
    doctor = doctor_of(user)
    if doctor is None:
        return Institution.objects.none()
    return Institution.objects.filter(alliance_id=doctor.institution.alliance_id)


def may_manage_institution(user: Any, institution: Institution) -> bool:
    return institutions_managed_by(user).filter(pk=institution.pk).exists()


def may_manage_alliance(user: Any) -> bool:
    """Create institutions, set levels and modules, read the audit log."""
    return is_alliance_admin(user)


def may_read_audit(user: Any) -> bool:
    return is_alliance_admin(user)


def departments_managed_by(user: Any) -> QuerySet[Department]:
    return Department.objects.filter(institution__in=institutions_managed_by(user))


def doctors_managed_by(user: Any) -> QuerySet[Doctor]:
    return Doctor.objects.filter(institution__in=institutions_managed_by(user))


def pools_managed_by(user: Any) -> QuerySet[Pool]:
    return Pool.objects.filter(institution__in=institutions_managed_by(user))


def devices_managed_by(user: Any) -> QuerySet[Device]:
    return Device.objects.filter(institution__in=institutions_managed_by(user))


def may_assign_role(user: Any, role: str) -> bool:
    """Only an alliance admin makes alliance admins; institution admins grant the rest."""
    if role == Role.ALLIANCE_ADMIN:
        return is_alliance_admin(user)
    return institutions_managed_by(user).exists()


def assignable_roles(user: Any) -> list[str]:
    return [role for role in Role.values if may_assign_role(user, role)]


def may_change_doctor(user: Any, doctor: Doctor) -> bool:
    """An institution admin manages their colleagues, but not an alliance admin among them."""
    if not doctors_managed_by(user).filter(pk=doctor.pk).exists():
        return False
    return is_alliance_admin(user) or not doctor.has_role(Role.ALLIANCE_ADMIN)


def audit_events_visible_to(user: Any) -> QuerySet[AuditEvent]:
    """The alliance's audit trail: its members' events and those with no institution (system,
    devices not yet known, failed sign-ins). Only alliance admins read it."""
    if not may_read_audit(user):
        return AuditEvent.objects.none()
    members = Institution.objects.filter(alliance_id=doctor_of(user).institution.alliance_id).values("pk")  # type: ignore[union-attr]
    return AuditEvent.objects.filter(Q(actor_institution_id__in=members) | Q(actor_institution_id__isnull=True))


def may_switch_off_doctor(user: Any, doctor: Doctor) -> bool:
    """Nobody deactivates themselves (an admin would lock themselves out)."""
    return doctor.user_id != getattr(user, "pk", None)


def may_switch_off_institution(user: Any, institution: Institution) -> bool:
    """Nobody switches off their own institution (they would lose access with it)."""
    doctor = doctor_of(user)
    return doctor is not None and doctor.institution_id != institution.pk


def may_set_roles(user: Any, before: list[str], after: list[str]) -> bool:
    """Every role given or taken away must be one the user may assign."""
    return all(may_assign_role(user, role) for role in set(before) ^ set(after))


def departments_visible_to(user: Any) -> QuerySet[Department]:
    """Departments of every member (a referral names the receiving department)."""
    return Department.objects.filter(institution__in=institutions_visible_to(user))


def pools_visible_to(user: Any) -> QuerySet[Pool]:
    """Specialist desks of every member (a consult is sent to one)."""
    return Pool.objects.filter(institution__in=institutions_visible_to(user))


# --- studies --------------------------------------------------------------------------


def _live(prefix: str = "") -> Q:
    now = timezone.now()
    return Q(**{f"{prefix}revoked_at__isnull": True}) & (
        Q(**{f"{prefix}expires_at__isnull": True}) | Q(**{f"{prefix}expires_at__gt": now})
    )


def _group_ids_of(doctor: Doctor) -> QuerySet[Group, Any]:
    """The groups whose grants reach the doctor: their institution's and their active pools'.

    A subquery, not a list: the policy's queries stay one round trip to the database.
    """
    own = Q(pk=doctor.institution.group_id)
    return Group.objects.filter(own | Q(pool__active=True, pool__members=doctor)).values("pk")


def _granted(group_ids: list[int] | QuerySet[Group, Any], user_id: int | None) -> Q:
    from imaging.models import StudyGroupGrant, StudyUserGrant

    group_grants = StudyGroupGrant.objects.filter(
        _live(), content_object=OuterRef("pk"), group_id__in=group_ids, permission__codename=READ
    )
    q = Q(Exists(group_grants))
    if user_id is not None:
        user_grants = StudyUserGrant.objects.filter(
            _live(), content_object=OuterRef("pk"), user_id=user_id, permission__codename=READ
        )
        q |= Q(Exists(user_grants))
    return q


def studies_visible_to(user: Any) -> QuerySet[Study]:
    from imaging.models import Study

    doctor = doctor_of(user)
    if doctor is None:
        return Study.objects.none()
    own = Q(institution_id=doctor.institution_id) if CLINICAL_ROLES.intersection(doctor.roles) else Q(pk__in=[])
    return Study.objects.filter(own | _granted(_group_ids_of(doctor), user.pk))


def studies_visible_to_device(device: Device) -> QuerySet[Study]:
    from imaging.models import Study

    if not device.active or not device.institution.active:
        return Study.objects.none()
    inst = device.institution
    return Study.objects.filter(Q(institution_id=inst.pk) | _granted([inst.group_id], None))


def get_study_for(user: Any, study_uid: str) -> Study:
    """The study if the user may see it; the same 404 whether it is missing or forbidden."""
    study = studies_visible_to(user).select_related("patient", "institution").filter(study_uid=study_uid).first()
    if study is None:
        raise Http404("No such study.")
    return study


def basis_for(user: Any, study: Study) -> str:
    """On what basis the user sees this study, for the audit trail ("" when they do not)."""
    from imaging.models import StudyGroupGrant, StudyUserGrant

    doctor = doctor_of(user)
    if doctor is None:
        return ""
    if study.institution_id == doctor.institution_id and CLINICAL_ROLES.intersection(doctor.roles):
        return "own-institution"
    grant = (
        StudyUserGrant.objects.filter(_live(), content_object=study, user_id=user.pk, permission__codename=READ)
        .values_list("basis", flat=True)
        .first()
    ) or (
        StudyGroupGrant.objects.filter(
            _live(), content_object=study, group_id__in=_group_ids_of(doctor), permission__codename=READ
        )
        .values_list("basis", flat=True)
        .first()
    )
    return grant or ""


def bases_for(user: Any, studies: Sequence[StudyRef]) -> dict[int, str]:
    """basis_for over many studies at once (a QIDO-RS answer): study pk -> basis, "" when none.

    Own-institution studies need no query; the rest take one query per kind of grant.
    """
    from imaging.models import StudyGroupGrant, StudyUserGrant

    doctor = doctor_of(user)
    if doctor is None:
        return {s.pk: "" for s in studies}
    clinical = bool(CLINICAL_ROLES.intersection(doctor.roles))
    found = {s.pk: "own-institution" for s in studies if clinical and s.institution_id == doctor.institution_id}
    for model, who in (
        (StudyUserGrant, Q(user_id=user.pk)),
        (StudyGroupGrant, Q(group_id__in=_group_ids_of(doctor))),
    ):
        missing = [s.pk for s in studies if s.pk not in found]
        if not missing:
            break
        grants = model.objects.filter(_live(), who, content_object_id__in=missing, permission__codename=READ)
        for study_pk, basis in grants.values_list("content_object_id", "basis"):
            found.setdefault(study_pk, basis)
    return {s.pk: found.get(s.pk, "") for s in studies}


def basis_for_device(device: Device, study: Study) -> str:
    from imaging.models import StudyGroupGrant

    if study.institution_id == device.institution_id:
        return "own-institution"
    grant = (
        StudyGroupGrant.objects.filter(
            _live(), content_object=study, group_id=device.institution.group_id, permission__codename=READ
        )
        .values_list("basis", flat=True)
        .first()
    )
    return grant or ""


def bases_for_device(device: Device, studies: Sequence[StudyRef]) -> dict[int, str]:
    """basis_for_device over many studies at once (a C-FIND or C-MOVE answer): pk -> basis."""
    from imaging.models import StudyGroupGrant

    found = {s.pk: "own-institution" for s in studies if s.institution_id == device.institution_id}
    missing = [s.pk for s in studies if s.pk not in found]
    if missing:
        grants = StudyGroupGrant.objects.filter(
            _live(), content_object_id__in=missing, group_id=device.institution.group_id, permission__codename=READ
        )
        for study_pk, basis in grants.values_list("content_object_id", "basis"):
            found.setdefault(study_pk, basis)
    return {s.pk: found.get(s.pk, "") for s in studies}


def may_write_study(user: Any, study: Study) -> bool:
    """Annotate or attach to a study: own institution, or a live grant with write."""
    from imaging.models import StudyGroupGrant, StudyUserGrant

    doctor = doctor_of(user)
    if doctor is None:
        return False
    if study.institution_id == doctor.institution_id and CLINICAL_ROLES.intersection(doctor.roles):
        return True
    return (
        StudyUserGrant.objects.filter(
            _live(), content_object=study, user_id=user.pk, permission__codename=WRITE
        ).exists()
        or StudyGroupGrant.objects.filter(
            _live(), content_object=study, group_id__in=_group_ids_of(doctor), permission__codename=WRITE
        ).exists()
    )


def may_upload_to(user: Any, institution: Institution) -> bool:
    """Studies uploaded in the browser (or by STOW-RS) belong to the uploader's own
    institution, and only while its image store is switched on (C11)."""
    doctor = doctor_of(user)
    return bool(
        doctor
        and doctor.institution_id == institution.pk
        and CLINICAL_ROLES.intersection(doctor.roles)
        and IMAGE_STORE_MODULE in institution.modules
    )


# --- devices (DICOM network) ----------------------------------------------------------


def device_for_association(*, calling_ae: str, called_ae: str, host: str, check_host: bool) -> Device | None:
    """The registered, active device that may associate, or None (reject the association)."""
    device = (
        Device.objects.select_related("institution", "institution__alliance")
        .filter(ae_title=calling_ae.strip(), active=True, institution__active=True)
        .first()
    )
    if device is None or device.institution.ae_title != called_ae.strip():
        return None
    if check_host and device.host not in {host, "*"}:
        return None
    return device


def move_destination_for(device: Device, destination_ae: str) -> Device | None:
    """C-MOVE sends only to an active registered device of the requester's own institution."""
    return Device.objects.filter(
        ae_title=destination_ae.strip(), active=True, institution_id=device.institution_id
    ).first()


# --- grants ---------------------------------------------------------------------------


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


def _permission(codename: str) -> Permission:
    return Permission.objects.get(codename=codename, content_type__app_label="imaging")


@transaction.atomic
def grant_study(
    *,
    study: Study,
    grantee: Grantee,
    basis: str,
    by: audit.Actor,
    write: bool = False,
    expires_at: Any = None,
    reason: str = "",
) -> None:
    from imaging.models import StudyGroupGrant, StudyUserGrant

    for codename in [READ, WRITE] if write else [READ]:
        permission = _permission(codename)
        values: dict[str, Any] = {"expires_at": expires_at, "revoked_at": None}
        if grantee.group is not None:
            StudyGroupGrant.objects.update_or_create(
                group=grantee.group, content_object=study, permission=permission, basis=basis, defaults=values
            )
        else:
            StudyUserGrant.objects.update_or_create(
                user=grantee.user,
                content_object=study,
                permission=permission,
                basis=basis,
                defaults={**values, "reason": reason},
            )
    target = f"group:{grantee.group.pk}" if grantee.group is not None else f"user:{grantee.user.pk}"
    audit.record(
        actor=by,
        action="grant.create",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        basis=basis,
        detail={"grantee": target, "write": write, "expires_at": str(expires_at or "")},
    )


@transaction.atomic
def revoke_grants(*, basis: str, by: audit.Actor, write_only: bool = False) -> int:
    """End a case's access (write_only: drop to read-only, as when a report is signed)."""
    from imaging.models import StudyGroupGrant, StudyUserGrant

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


def break_glass(*, user: Any, study: Study, reason: str, source: str = "") -> None:
    """Emergency access to a study outside the user's grants: needs a reason, expires, is reviewed."""
    doctor = doctor_of(user)
    if doctor is None or not CLINICAL_ROLES.intersection(doctor.roles):
        raise AccessDenied("Only an active clinician or specialist may use emergency access.")
    if len(reason.strip()) < 10:
        raise AccessDenied("Emergency access needs a reason of at least 10 characters.")
    with transaction.atomic():
        grant_study(
            study=study,
            grantee=Grantee(user=user),
            basis=f"break-glass:{user.pk}",
            by=audit.Actor.for_user(user),
            reason=reason.strip(),
            expires_at=timezone.now() + timedelta(hours=BREAK_GLASS_HOURS),
        )
        audit.record(
            actor=audit.Actor.for_user(user),
            action="break-glass",
            object_type="study",
            object_id=study.study_uid,
            patient=str(study.patient_id),
            basis=f"break-glass:{user.pk}",
            source=source,
            detail={"reason": reason.strip()},
        )


# --- consults (C5) --------------------------------------------------------------------
IMAGE_STORE_MODULE = "image_store"
CONSULTS_MODULE = "consults"
# The workflow table lives on the model (consults.models.TRANSITIONS); these functions
# answer who the user is to a consult, which consults they see and which moves they may make.


def _pool_ids_of(doctor: Doctor) -> list[int]:
    if not doctor.has_role(Role.SPECIALIST):
        return []
    cached: list[int] | None = getattr(doctor, "_active_pool_ids", None)
    if cached is None:
        cached = list(doctor.pools.filter(active=True).values_list("pk", flat=True))
        setattr(doctor, "_active_pool_ids", cached)  # noqa: B010 - a per-request cache, not a field
    return cached


def _candidate_q(doctor: Doctor) -> Q:
    """Consults this doctor may claim: named to them, or sent (or widened) to one of their pools."""
    pool_wide = Q(specialist__isnull=True) | Q(widened_at__isnull=False)
    q = Q(pool_id__in=_pool_ids_of(doctor)) & pool_wide
    if doctor.has_role(Role.SPECIALIST):
        q |= Q(specialist_id=doctor.pk)
    return q


def _receiving_admin_q(doctor: Doctor) -> Q:
    if not doctor.has_role(Role.INSTITUTION_ADMIN):
        return Q(pk__in=[])
    return Q(pool__institution_id=doctor.institution_id) | Q(
        pool__isnull=True, specialist__institution_id=doctor.institution_id
    )


def consults_visible_to(user: Any) -> QuerySet[Any]:
    """The requesting institution sees its requests (drafts only their author); the specialist
    side sees what it may claim and what it owns; after cancel or reject it sees nothing."""
    from consults.models import OPEN_STATUSES, Consult, Status

    doctor = doctor_of(user)
    if doctor is None or not has_module(user, CONSULTS_MODULE):
        return Consult.objects.none()
    q = Q(requester_id=doctor.pk)
    if CLINICAL_ROLES.intersection(doctor.roles):
        q |= Q(requesting_institution_id=doctor.institution_id) & ~Q(status=Status.DRAFT)
    q |= Q(owner_id=doctor.pk) & ~Q(status__in=[Status.CANCELLED, Status.REJECTED])
    q |= Q(status=Status.REQUESTED) & _candidate_q(doctor)
    q |= Q(status__in=OPEN_STATUSES) & _receiving_admin_q(doctor)
    return Consult.objects.filter(q)


def get_consult_for(user: Any, pk: Any) -> Any:
    """The consult if the user may see it; the same 404 whether it is missing or forbidden."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such consult.") from None
    consult = (
        consults_visible_to(user)
        .select_related(
            "requester__user", "requesting_institution", "pool__institution", "specialist__user", "owner__user"
        )
        .filter(pk=pk)
        .first()
    )
    if consult is None:
        raise Http404("No such consult.")
    return consult


def parties_of(user: Any, consult: Any) -> frozenset[str]:
    """Who the user is to this consult (consults.models.Party values)."""
    from consults.models import Party

    doctor = doctor_of(user)
    if doctor is None or not has_module(user, CONSULTS_MODULE):
        return frozenset()
    parties = set()
    if consult.requester_id == doctor.pk and CLINICAL_ROLES.intersection(doctor.roles):
        parties.add(Party.REQUESTER)
    if consult.owner_id == doctor.pk:
        parties.add(Party.OWNER)
    if consult.specialist_id == doctor.pk and doctor.has_role(Role.SPECIALIST):
        parties.update({Party.NAMED, Party.CANDIDATE})
    pool_wide = consult.specialist_id is None or consult.widened_at is not None
    if pool_wide and consult.pool_id in _pool_ids_of(doctor):
        parties.add(Party.CANDIDATE)
    if doctor.has_role(Role.INSTITUTION_ADMIN) and receiving_institution_id(consult) == doctor.institution_id:
        parties.add(Party.POOL_ADMIN)
    return frozenset(parties)


def receiving_institution_id(consult: Any) -> int | None:
    if consult.pool_id is not None:
        return consult.pool.institution_id
    return consult.specialist.institution_id if consult.specialist_id is not None else None


def may_act(user: Any, consult: Any, action: str) -> bool:
    """May the user make this move now (right party and right status)?"""
    from consults.models import TRANSITIONS

    move = TRANSITIONS[action]
    return consult.status in move.sources and bool(move.parties & parties_of(user, consult))


def actions_for(user: Any, consult: Any) -> list[str]:
    """Every move the user may make on the consult now (for the case page and the API)."""
    from consults.models import TRANSITIONS

    parties = parties_of(user, consult)
    return [a for a, m in TRANSITIONS.items() if a != "create" and consult.status in m.sources and m.parties & parties]


def may_claim(user: Any, consult: Any) -> bool:
    return may_act(user, consult, "claim")


def may_set_consult_policy(user: Any) -> bool:
    """The turnaround policy (deadline and claim timeout per priority) belongs to the alliance admin."""
    return may_manage_alliance(user)


def may_manage_report_templates(user: Any) -> bool:
    """Report templates are shared by the whole alliance; its admin keeps them."""
    return may_manage_alliance(user)


def report_templates_managed_by(user: Any) -> QuerySet[Any]:
    from consults.models import ReportTemplate

    if not may_manage_report_templates(user):
        return ReportTemplate.objects.none()
    return ReportTemplate.objects.filter(alliance=alliance_of(user))


def may_request_consult(user: Any) -> bool:
    """Any active doctor with a clinical role may ask for a reading of their institution's studies."""
    return has_clinical_role(user) and has_module(user, CONSULTS_MODULE)


def may_post_message(user: Any, consult: Any) -> bool:
    """The thread is between the requester and the owner while the case is open."""
    from consults.models import OPEN_STATUSES, Party

    return consult.status in OPEN_STATUSES and bool({Party.REQUESTER, Party.OWNER} & parties_of(user, consult))


def may_read_report(user: Any, consult: Any) -> bool:
    """A signed report is read by those who see the case (and its draft by the owner only)."""
    return consults_visible_to(user).filter(pk=consult.pk).exists()


def studies_requestable_by(user: Any) -> QuerySet[Study]:
    """Studies a doctor may attach to a consult: visible to them and owned by their institution."""
    doctor = doctor_of(user)
    if doctor is None or not may_request_consult(user):
        return studies_visible_to(None)
    return studies_visible_to(user).filter(institution_id=doctor.institution_id)


def _with_role(doctors: QuerySet[Doctor], role: str) -> QuerySet[Doctor]:
    """Doctors holding a role (JSON list containment; SQLite has no JSON __contains)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return doctors.filter(roles__contains=[role])
    return doctors.filter(roles__icontains=f'"{role}"')


def consult_targets_for(user: Any) -> tuple[QuerySet[Pool], QuerySet[Doctor]]:
    """Pools and specialists of the user's alliance that a consult may be sent to."""
    alliance = alliance_of(user)
    if alliance is None:
        return Pool.objects.none(), Doctor.objects.none()
    live = {"institution__alliance": alliance, "institution__active": True}
    receiving = Institution.objects.filter(alliance=alliance, active=True)
    receiving_ids = [i.pk for i in receiving.only("pk", "modules") if CONSULTS_MODULE in i.modules]
    pools = Pool.objects.filter(active=True, institution_id__in=receiving_ids, **live).select_related("institution")
    doctors = _with_role(Doctor.objects.filter(active=True, institution_id__in=receiving_ids, **live), Role.SPECIALIST)
    return pools, doctors.select_related("user", "institution")


def institution_admins_of(institution_id: int) -> QuerySet[Doctor]:
    """Whom the deadline job tells when a consult sent to the institution is late."""
    admins = Doctor.objects.filter(active=True, institution_id=institution_id).select_related("user")
    return _with_role(admins, Role.INSTITUTION_ADMIN)


def consult_worklist_tabs(user: Any) -> dict[str, Q]:
    """The worklist tabs a user has, each a filter within consults_visible_to(user).

    Specialists: their pools' unclaimed cases, their own open cases, what they signed.
    Clinicians: their institution's requests by status (drafts: their own).
    The receiving institution's admin: every open case sent to the institution.
    """
    from consults.models import CLOSED_STATUSES, OWNED_STATUSES, Status

    doctor = doctor_of(user)
    if doctor is None or not has_module(user, CONSULTS_MODULE):
        return {}
    tabs: dict[str, Q] = {}
    if doctor.has_role(Role.SPECIALIST):
        tabs["unclaimed"] = Q(status=Status.REQUESTED) & _candidate_q(doctor)
        tabs["mine"] = Q(owner_id=doctor.pk, status__in=OWNED_STATUSES)
        tabs["signed"] = Q(owner_id=doctor.pk, status=Status.COMPLETED)
    if doctor.has_role(Role.CLINICIAN):
        ours = Q(requesting_institution_id=doctor.institution_id)
        tabs["waiting"] = ours & Q(status__in=[Status.REQUESTED, Status.ACCEPTED])
        tabs["reading"] = ours & Q(status=Status.IN_PROGRESS)
        tabs["questions"] = ours & Q(status=Status.ON_HOLD)
        tabs["reports"] = ours & Q(status=Status.COMPLETED)
        tabs["closed"] = ours & Q(status__in=CLOSED_STATUSES)
        tabs["drafts"] = Q(requester_id=doctor.pk, status=Status.DRAFT)
    if doctor.has_role(Role.INSTITUTION_ADMIN):
        from consults.models import OPEN_STATUSES

        tabs["desk"] = Q(status__in=OPEN_STATUSES) & _receiving_admin_q(doctor)
    return tabs

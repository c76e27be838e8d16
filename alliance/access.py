"""Who is asking (the principal), membership and devices.

The ground floor of the access rules. A `Principal` is resolved once per request by
alliance.middleware (or by the token authentication of the REST API) as `request.principal`,
and once per DICOM request from the associated device; every app's access functions take it:
imaging/access.py (may this principal see this study), consults/access.py (this consult),
and the membership rules below. This module imports no other app.
"""

from __future__ import annotations

import hmac
from datetime import timedelta
from functools import cached_property
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext

from alliance import audit
from alliance.joined import Joined, Part
from alliance.models import (
    MODULE_LABELS,
    Alliance,
    AuditEvent,
    Department,
    Device,
    Doctor,
    Institution,
    Pool,
    PoolMembership,
    PrivilegeChange,
    Role,
)

CLINICAL_ROLES: frozenset[str] = frozenset({Role.CLINICIAN, Role.SPECIALIST, Role.INSTITUTION_ADMIN})


class AccessDenied(Exception):
    """Raised by services when the actor may not do what it asked."""


# --- who is asking --------------------------------------------------------------------


class Principal:
    """A doctor (loaded with their institution and alliance), a DICOM device acting for its
    institution, a patient's film link after its check (imaging.films: it sees that link's
    studies and nothing else, and acts for no institution), or nobody. Built once and passed
    to every access function."""

    def __init__(
        self, *, user: Any = None, doctor: Doctor | None = None, device: Device | None = None, film: Any = None
    ) -> None:
        self.user = user
        self.doctor = doctor
        self.device = device
        self.film = film

    @classmethod
    def for_doctor(cls, user: Any, doctor: Doctor | None) -> Principal:
        """The doctor already loaded with the user (token authentication), if they may act."""
        if doctor is None or not doctor.active or not doctor.institution.active or not user.is_active:
            return cls(user=user)
        return cls(user=user, doctor=doctor)

    @classmethod
    def for_device(cls, device: Device) -> Principal:
        """A device switched off, or whose institution is, acts for nobody."""
        if not device.active or not device.institution.active:
            return NOBODY
        return cls(device=device)

    @classmethod
    def for_film(cls, link: Any, user: Any) -> Principal:
        """A verified film link (imaging.films decides that); user is the anonymous user the
        request carries, so that principal_of keeps this principal."""
        return cls(user=user, film=link)

    @property
    def user_id(self) -> int | None:
        return self.user.pk if self.user is not None and self.user.is_authenticated else None

    @property
    def institution(self) -> Institution | None:
        acting = self.doctor or self.device
        return acting.institution if acting is not None else None

    @property
    def institution_id(self) -> int | None:
        acting = self.doctor or self.device
        return acting.institution_id if acting is not None else None

    @property
    def alliance(self) -> Alliance | None:
        return self.doctor.institution.alliance if self.doctor is not None else None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.doctor.roles) if self.doctor is not None else frozenset()

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_clinical(self) -> bool:
        return bool(CLINICAL_ROLES & self.roles)

    @property
    def is_alliance_admin(self) -> bool:
        return self.has_role(Role.ALLIANCE_ADMIN)

    def has_module(self, module: str) -> bool:
        """Whether the doctor's institution has this capability switched on (C11: what is off is absent)."""
        return self.doctor is not None and module_on(self, module)

    @property
    def sees_own_institution(self) -> bool:
        """Clinicians see their institution's studies; so does a device, for its institution."""
        return self.is_clinical or self.device is not None

    @property
    def group_ids(self) -> QuerySet[Group, Any] | list[int]:
        """The groups whose grants reach the principal: a doctor's institution's and their active
        pools' (a subquery, so that a policy query stays one round trip); a device's institution's."""
        if self.device is not None:
            return [self.device.institution.group_id]
        if self.doctor is None:
            return []
        own = Q(pk=self.doctor.institution.group_id)
        return Group.objects.filter(own | Q(pool__active=True, pool__members=self.doctor)).values("pk")

    @cached_property
    def pool_seats(self) -> dict[int, tuple[int, Any]]:
        """The active pools a specialist reads for: pool id -> (the pool's group, the time they
        joined it). A pool's cases, and its group's grants (imaging.access), reach a member only
        from then on (one query, the first time it is asked)."""
        if self.doctor is None or not self.has_role(Role.SPECIALIST):
            return {}
        rows = PoolMembership.objects.filter(doctor=self.doctor, pool__active=True, pool__members=self.doctor)
        return {pool: (group, since) for pool, group, since in rows.values_list("pool_id", "pool__group_id", "since")}

    @property
    def pool_since(self) -> dict[int, Any]:
        """pool_seats without the groups: pool id -> the time the specialist joined it."""
        return {pool: since for pool, (_group, since) in self.pool_seats.items()}

    @property
    def pool_ids(self) -> list[int]:
        """The active pools a specialist reads for."""
        return list(self.pool_since)

    def in_pool_since(self, pool_id: int | None, when: Any) -> bool:
        """Whether the principal was a member of the pool when a case was sent to it."""
        since = self.pool_since.get(pool_id) if pool_id is not None else None
        return since is not None and when is not None and since <= when

    @property
    def actor(self) -> audit.Actor:
        """Who the audit trail names for what this principal does."""
        if self.device is not None:
            return audit.Actor.for_device(self.device)
        if self.film is not None:
            actor: audit.Actor = self.film.actor
            return actor
        if self.user is None or not getattr(self.user, "is_authenticated", False):
            return audit.ANONYMOUS
        institution_id = self.doctor.institution_id if self.doctor is not None else None
        return audit.Actor("user", str(self.user.pk), self.user.get_username(), institution_id)


NOBODY = Principal()


def resolve_principal(user: Any) -> Principal:
    """The principal of a signed-in user: their active doctor of an active institution, if any."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Principal(user=user)
    doctor = (
        # The alliance's settings come along (a LEFT JOIN): the account gate reads its policy.
        Doctor.objects.select_related("institution", "institution__alliance", "institution__alliance__settings")
        .filter(user=user, active=True, institution__active=True)
        .first()
    )
    return Principal(user=user, doctor=doctor)


def principal_of(request: Any) -> Principal:
    """The request's principal, resolved once: by alliance.middleware for the session's user,
    by the API's token authentication for the token's, or here, once, for a user that another
    authentication put on the request after the middleware ran."""
    principal: Principal | None = getattr(request, "principal", None)
    user = request.user
    if principal is None or principal.user is not user:
        principal = resolve_principal(user)
        request.principal = principal
    return principal


# --- module switches (C11) ------------------------------------------------------------

IMAGE_STORE = "image_store"
CONSULTS = "consults"
REFERRALS = "referrals"
CLOUD_FILM = "cloud_film"
TEACHING = "teaching"
SCREENING = "screening"

# Which module switches the views of a Python package on and off, by the longest matching
# prefix of the view's module: every page, REST endpoint and DICOMweb route of an app
# obeys its switch without a line in the app (alliance.middleware.ModuleSwitchMiddleware
# for pages, alliance.api.permissions.IsActiveDoctor for the REST API and DICOMweb).
# A view elsewhere names its module with alliance.access.switched_by.
MODULE_OF_PACKAGE: dict[str, str] = {
    "imaging": IMAGE_STORE,
    "imaging.films": CLOUD_FILM,
    "imaging.film_desk": CLOUD_FILM,
    "imaging.api.films": CLOUD_FILM,
    # The patient's film pages: no doctor's switch applies (a doctor signed in in the same
    # browser changes nothing); imaging.films checks the link's own institution.
    "imaging.film_views": "",
    "consults": CONSULTS,
    "referrals": REFERRALS,
    # Teaching cases live inside consults (a specialist's finished case becomes one) but have
    # their own switch.
    "consults.teaching": TEACHING,
    "consults.screening": SCREENING,
}


def module_on(principal: Principal, module: str) -> bool:
    """Whether the principal's institution (a doctor's or a device's) has the module switched on."""
    institution = principal.institution
    return institution is not None and module in institution.modules


def module_of_view(view: Any) -> str | None:
    """The module that switches a view (a function, an as_view() function or a view instance)."""
    named = getattr(view, "switched_by", None) or getattr(getattr(view, "view_class", None), "switched_by", None)
    if named:
        return str(named)
    package = getattr(view, "__module__", "") or type(view).__module__
    found = [prefix for prefix in MODULE_OF_PACKAGE if package == prefix or package.startswith(prefix + ".")]
    return MODULE_OF_PACKAGE[max(found, key=len)] or None if found else None


def switched_by(module: str) -> Any:
    """Mark a view (function or class) outside MODULE_OF_PACKAGE as part of a module."""

    def mark(view: Any) -> Any:
        view.switched_by = module
        return view

    return mark


def module_refused(principal: Principal, view: Any) -> str | None:
    """The module a view belongs to when it is switched off for the principal's institution
    (None: the view may run, and its own access functions decide). Nobody signed in is
    left to the view, which sends them to sign in."""
    module = module_of_view(view)
    if module is None or principal.institution is None or module_on(principal, module):
        return None
    return module


def module_off_message(module: str, institution: Any) -> str:
    """What a refused request of a switched-off module is told (page, REST API, DICOMweb)."""
    return gettext("%(module)s is switched off for %(institution)s.") % {
        "module": MODULE_LABELS.get(module, module),
        "institution": institution,
    }


# --- membership administration --------------------------------------------------------


def institutions_managed_by(principal: Principal) -> QuerySet[Institution]:
    """Institutions whose members, departments, pools and devices the principal may manage."""
    doctor = principal.doctor
    if doctor is None:
        return Institution.objects.none()
    if doctor.has_role(Role.ALLIANCE_ADMIN):
        return Institution.objects.filter(alliance_id=doctor.institution.alliance_id)
    if doctor.has_role(Role.INSTITUTION_ADMIN):
        return Institution.objects.filter(pk=doctor.institution_id)
    return Institution.objects.none()


def institutions_visible_to(principal: Principal) -> QuerySet[Institution]:
    """Every member of the principal's alliance is listed (names and levels are not patient data)."""
    if principal.doctor is None:
        return Institution.objects.none()
    return Institution.objects.filter(alliance_id=principal.doctor.institution.alliance_id)


def may_manage_institution(principal: Principal, institution: Institution) -> bool:
    return institutions_managed_by(principal).filter(pk=institution.pk).exists()


def may_manage_alliance(principal: Principal) -> bool:
    """Create institutions, set levels and modules, read the audit log, keep alliance-wide settings."""
    return principal.is_alliance_admin


def figures_institutions_for(principal: Principal) -> QuerySet[Institution]:
    """Whose figures the principal sees (alliance.figures): every member of the alliance for
    the alliance admin, their own institution for an institution admin, none for anyone else."""
    doctor = principal.doctor
    if doctor is None:
        return Institution.objects.none()
    if principal.is_alliance_admin:
        return Institution.objects.filter(alliance_id=doctor.institution.alliance_id)
    if principal.has_role(Role.INSTITUTION_ADMIN):
        return Institution.objects.filter(pk=doctor.institution_id)
    return Institution.objects.none()


def may_see_figures(principal: Principal) -> bool:
    """The figures pages (and their menu entry) are for the alliance and institution admins."""
    return principal.doctor is not None and (principal.is_alliance_admin or principal.has_role(Role.INSTITUTION_ADMIN))


def may_read_audit(principal: Principal) -> bool:
    return principal.is_alliance_admin


def departments_managed_by(principal: Principal) -> QuerySet[Department]:
    return Department.objects.filter(institution__in=institutions_managed_by(principal))


def doctors_managed_by(principal: Principal) -> QuerySet[Doctor]:
    return Doctor.objects.filter(institution__in=institutions_managed_by(principal))


def pools_managed_by(principal: Principal) -> QuerySet[Pool]:
    return Pool.objects.filter(institution__in=institutions_managed_by(principal))


def devices_managed_by(principal: Principal) -> QuerySet[Device]:
    return Device.objects.filter(institution__in=institutions_managed_by(principal))


def may_assign_role(principal: Principal, role: str) -> bool:
    """Only an alliance admin makes alliance admins; institution admins grant the rest."""
    if role == Role.ALLIANCE_ADMIN:
        return principal.is_alliance_admin
    return institutions_managed_by(principal).exists()


def assignable_roles(principal: Principal) -> list[str]:
    return [role for role in Role.values if may_assign_role(principal, role)]


def may_change_doctor(principal: Principal, doctor: Doctor) -> bool:
    """An institution admin manages their colleagues, but not an alliance admin among them."""
    if not doctors_managed_by(principal).filter(pk=doctor.pk).exists():
        return False
    return principal.is_alliance_admin or not doctor.has_role(Role.ALLIANCE_ADMIN)


def audit_events_visible_to(principal: Principal) -> QuerySet[AuditEvent]:
    """The alliance's audit trail: its members' events (an event of the system about a patient is
    filed under the patient's institution, alliance.audit.build) and those of no institution
    that name no patient (devices not yet known, failed sign-ins, the system's own jobs). Only
    alliance admins read it."""
    if not may_read_audit(principal) or principal.doctor is None:
        return AuditEvent.objects.none()
    members = Institution.objects.filter(alliance_id=principal.doctor.institution.alliance_id).values("pk")
    unattributed = Q(actor_institution_id__isnull=True, patient="")
    return AuditEvent.objects.filter(Q(actor_institution_id__in=members) | unattributed)


def may_switch_off_doctor(principal: Principal, doctor: Doctor) -> bool:
    """Nobody deactivates themselves (an admin would lock themselves out)."""
    return doctor.user_id != principal.user_id


def may_switch_off_institution(principal: Principal, institution: Institution) -> bool:
    """Nobody switches off their own institution (they would lose access with it)."""
    return principal.doctor is not None and principal.doctor.institution_id != institution.pk


def may_set_roles(principal: Principal, before: list[str], after: list[str]) -> bool:
    """Every role given or taken away must be one the principal may assign."""
    return all(may_assign_role(principal, role) for role in set(before) ^ set(after))


# --- privilege changes (issue #22: nobody grants themselves images) ------------------------

ADMIN_ROLES: frozenset[str] = frozenset({Role.INSTITUTION_ADMIN, Role.ALLIANCE_ADMIN})


def may_change_privileges_of(principal: Principal, doctor: Doctor) -> bool:
    """Nobody changes their own roles, institution or specialist desks: another admin does."""
    return principal.doctor is not None and principal.doctor.pk != doctor.pk


def may_set_pool_members(principal: Principal, before: set[Doctor], after: set[Doctor]) -> bool:
    """Nobody seats themselves on a desk (or takes themselves off one)."""
    return principal.doctor is not None and principal.doctor not in set(before) ^ set(after)


def needs_second_admin(doctor: Doctor, kind: str, *, roles: list[str] | None = None) -> bool:
    """Whether a change gives an admin account clinical access, which a second admin must
    approve: clinical roles for an admin who has none, a move of an admin who has clinical
    roles (they would see the new institution's patients), a seat on a specialist desk."""
    if not ADMIN_ROLES & set(doctor.roles):
        return False
    clinical_now = bool(CLINICAL_ROLES & set(doctor.roles))
    if kind == PrivilegeChange.Kind.ROLES:
        return not clinical_now and bool(CLINICAL_ROLES & set(roles or []))
    if kind == PrivilegeChange.Kind.MOVE:
        return clinical_now
    return kind == PrivilegeChange.Kind.POOL


def privilege_changes_visible_to(principal: Principal) -> QuerySet[PrivilegeChange]:
    """Changes of doctors the principal manages (the subject's or, for a move, the target's admins)."""
    managed = institutions_managed_by(principal)
    return PrivilegeChange.objects.filter(subject__institution__in=managed).select_related(
        "subject__user", "subject__institution", "requested_by__user", "decided_by__user"
    )


def may_decide_privilege_change(principal: Principal, change: PrivilegeChange) -> bool:
    """A second admin: one who manages the doctor (and the target of a move), is neither the
    one who asked nor the doctor concerned, and the change still waits."""
    if change.state != PrivilegeChange.State.PENDING or principal.doctor is None:
        return False
    if principal.doctor.pk in {change.requested_by_id, change.subject_id}:
        return False
    if not may_change_doctor(principal, change.subject):
        return False
    if change.kind == PrivilegeChange.Kind.MOVE:
        return institutions_managed_by(principal).filter(pk=change.payload.get("institution")).exists()
    if change.kind == PrivilegeChange.Kind.POOL:
        return pools_managed_by(principal).filter(pk=change.payload.get("pool")).exists()
    return True


def departments_visible_to(principal: Principal) -> QuerySet[Department]:
    """Departments of every member (a referral names the receiving department)."""
    return Department.objects.filter(institution__in=institutions_visible_to(principal))


def pools_visible_to(principal: Principal) -> QuerySet[Pool]:
    """Specialist desks of every member (a consult is sent to one)."""
    return Pool.objects.filter(institution__in=institutions_visible_to(principal))


def with_role(doctors: QuerySet[Doctor], role: str) -> QuerySet[Doctor]:
    """Doctors holding a role (JSON list containment; SQLite has no JSON __contains)."""
    if connection.vendor == "postgresql":
        return doctors.filter(roles__contains=[role])
    return doctors.filter(roles__icontains=f'"{role}"')


def institution_admins_of(institution_id: int) -> QuerySet[Doctor]:
    """Whom to tell about what concerns an institution (e.g. a late consult sent to it)."""
    admins = Doctor.objects.filter(active=True, institution_id=institution_id).select_related("user")
    return with_role(admins, Role.INSTITUTION_ADMIN)


# --- devices (DICOM network) ----------------------------------------------------------


def device_for_association(
    *, calling_ae: str, called_ae: str, host: str, check_host: bool, client_cert_sha256: str = ""
) -> Device | None:
    """The registered, active device that may associate, or None (reject the association).

    A device with a pinned client certificate (PS3.15 B.1, for a clinic behind NAT whose
    address changes) associates only over TLS with that very certificate, from any address;
    any other device from its registered host (or any, registered as "*")."""
    device = _active_device(calling_ae.strip())
    if device is None or device.institution.ae_title != called_ae.strip():
        return None
    if device.tls_client_sha256:
        return device if hmac.compare_digest(device.tls_client_sha256, client_cert_sha256.lower()) else None
    if check_host and device.host not in {host, "*"}:
        return None
    return device


def _device_parts() -> list[Part]:
    return [
        Part(Device, "d", f'FROM "{Device._meta.db_table}" d'),
        Part(Institution, "i", f'JOIN "{Institution._meta.db_table}" i ON i."id" = d."institution_id"'),
        Part(Alliance, "a", f'JOIN "{Alliance._meta.db_table}" a ON a."id" = i."alliance_id"'),
    ]


# Every association looks its device up: the join is written once (alliance.joined), as
# Device.objects.select_related("institution", "institution__alliance").filter(ae_title=...,
# active=True, institution__active=True).first() would write it on each association.
_ACTIVE_DEVICE = Joined(_device_parts, 'WHERE d."ae_title" = %s AND d."active" AND i."active" ORDER BY d."id" LIMIT 1')


def _active_device(ae_title: str) -> Device | None:
    loaded = _ACTIVE_DEVICE.first([ae_title])
    if loaded is None:
        return None
    device, institution, alliance = loaded
    assert isinstance(device, Device)
    device.institution = institution  # type: ignore[assignment]
    institution.alliance = alliance  # type: ignore[union-attr]
    return device


def move_destination_for(device: Device, destination_ae: str) -> Device | None:
    """C-MOVE sends only to an active registered device of the requester's own institution."""
    return Device.objects.filter(
        ae_title=destination_ae.strip(), active=True, institution_id=device.institution_id
    ).first()


def settings_of(alliance_id: int) -> Any:
    """The alliance's settings row (AllianceSettings), made with the defaults the first time."""
    from alliance.models import AllianceSettings

    row, _created = AllianceSettings.objects.get_or_create(alliance_id=alliance_id)
    return row


# --- accounts: second factor, sign-in locks ---------------------------------------------

SECOND_FACTOR_ROLES: frozenset[str] = frozenset({Role.SPECIALIST, Role.INSTITUTION_ADMIN, Role.ALLIANCE_ADMIN})


def second_factor_required(principal: Principal) -> bool:
    """The alliance's policy asks this doctor (a specialist or an admin) for a second factor."""
    from alliance.models import AllianceSettings, default_second_factor_required

    doctor = principal.doctor
    if doctor is None or not SECOND_FACTOR_ROLES & set(doctor.roles):
        return False
    try:
        return bool(doctor.institution.alliance.settings.second_factor_required)
    except AllianceSettings.DoesNotExist:  # not made yet: the default it would be made with
        return default_second_factor_required()


def may_reset_second_factor(principal: Principal, doctor: Doctor) -> bool:
    """Another admin resets a lost second factor: an institution admin for their doctors, an
    alliance admin for anyone of the alliance; never one's own (that needs a second person)."""
    if doctor.user_id == principal.user_id:
        return False
    return may_change_doctor(principal, doctor)


def address_refused(address: str) -> bool:
    """One client address that failed to sign in too often lately (any usernames) is refused for
    every username until its failures age out or an alliance admin lifts the lock."""
    return bool(address) and address_failures(address) >= django_settings.LOGIN_ADDRESS_FAILURE_LIMIT


def address_failures(address: str) -> int:
    """Failed sign-ins from one address within the lockout window (django-axes' per-pair rows)."""
    from axes.models import AccessAttempt

    since = timezone.now() - timedelta(hours=django_settings.AXES_COOLOFF_TIME)
    rows = AccessAttempt.objects.filter(ip_address=address, attempt_time__gte=since)
    return int(rows.aggregate(n=Sum("failures_since_start"))["n"] or 0)


def sign_in_locks_visible_to(principal: Principal) -> QuerySet[Any]:
    """Locked (username, address) pairs an admin sees: an alliance admin all of them (a username
    nobody has included), an institution admin those of the doctors they manage."""
    from axes.models import AccessAttempt

    since = timezone.now() - timedelta(hours=django_settings.AXES_COOLOFF_TIME)
    locked = AccessAttempt.objects.filter(
        attempt_time__gte=since, failures_since_start__gte=django_settings.AXES_FAILURE_LIMIT
    ).order_by("-attempt_time")
    if principal.is_alliance_admin:
        return locked
    usernames = doctors_managed_by(principal).values("user__username")
    return locked.filter(username__in=usernames) if principal.doctor is not None else locked.none()


def may_see_address_locks(principal: Principal) -> bool:
    """Addresses refused for every username concern no one institution: the alliance admin's."""
    return principal.is_alliance_admin

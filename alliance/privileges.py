"""Changes to who may see what (roles, institution, specialist desks), as the console and the
REST API both make them (issue #22: nobody grants themselves images).

Each function asks alliance.access what the principal may do, then calls the services: a
change that would give an admin account clinical access is put on hold for a second admin
(alliance.services.privilege_change_request) instead of being made. They raise
alliance.access.AccessDenied (a 403 in the API, a message on the page) for a refusal.
Each is one transaction: a refusal halfway (a held change already waiting, a bad department,
a reviewer who is not a member) leaves nothing changed, whichever page or API called it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from alliance import access, services
from alliance.models import Department, Doctor, Institution, Pool, PrivilegeChange, Specialty

Kind = PrivilegeChange.Kind


def _own(principal: access.Principal, doctor: Doctor) -> None:
    if not access.may_change_privileges_of(principal, doctor):
        raise access.AccessDenied(
            _("Nobody changes their own roles, institution or specialist desks: ask another admin.")
        )


@transaction.atomic
def update_doctor(
    *, principal: access.Principal, doctor: Doctor, roles: list[str] | None = None, **fields: Any
) -> PrivilegeChange | None:
    """Change a doctor's record (one audited update); new roles are given now, or put on hold
    for a second admin when they give an admin account clinical access (the change returned)."""
    held = None
    if roles is not None and set(roles) != set(doctor.roles):
        _own(principal, doctor)
        if access.needs_second_admin(doctor, Kind.ROLES, roles=roles):
            assert principal.doctor is not None
            held = services.privilege_change_request(
                subject=doctor,
                kind=Kind.ROLES,
                payload={"roles": sorted(set(roles))},
                requested_by=principal.doctor,
                by=principal.actor,
            )
        else:
            fields["roles"] = roles
    services.doctor_update(doctor=doctor, by=principal.actor, **fields)
    return held


@transaction.atomic
def move(
    *, principal: access.Principal, doctor: Doctor, institution: Institution, department: Department | None
) -> PrivilegeChange | None:
    _own(principal, doctor)
    if access.needs_second_admin(doctor, Kind.MOVE):
        assert principal.doctor is not None
        return services.privilege_change_request(
            subject=doctor,
            kind=Kind.MOVE,
            payload={"institution": institution.pk, "department": department.pk if department else None},
            requested_by=principal.doctor,
            by=principal.actor,
        )
    services.doctor_move(doctor=doctor, institution=institution, department=department, by=principal.actor)
    return None


@transaction.atomic
def set_pool_members(*, principal: access.Principal, pool: Pool, members: list[Doctor]) -> list[PrivilegeChange]:
    """Seat and unseat desk members; admin accounts joining wait for a second admin."""
    before = set(pool.members.all())
    after = set(members)
    if before == after:
        return []
    if not access.may_set_pool_members(principal, before, after):
        raise access.AccessDenied(
            _("Nobody seats themselves on a specialist desk (or removes themselves): ask another admin.")
        )
    held = [d for d in after - before if access.needs_second_admin(d, Kind.POOL)]
    services.pool_set_members(pool=pool, members=list(after - set(held)), by=principal.actor)
    changes = []
    for doctor in held:
        assert principal.doctor is not None
        changes.append(
            services.privilege_change_request(
                subject=doctor,
                kind=Kind.POOL,
                payload={"pool": pool.pk},
                requested_by=principal.doctor,
                by=principal.actor,
            )
        )
    return changes


@transaction.atomic
def create_pool(
    *,
    principal: access.Principal,
    institution: Institution,
    specialty: Specialty,
    name: str,
    members: list[Doctor],
    two_level_signoff: bool = False,
    reviewers: list[Doctor] | None = None,
) -> tuple[Pool, list[PrivilegeChange]]:
    """A new desk with its members and reviewers, or no desk at all."""
    pool = services.pool_create(
        institution=institution, specialty=specialty, name=name, two_level_signoff=two_level_signoff, by=principal.actor
    )
    held = set_pool_members(principal=principal, pool=pool, members=members)
    if reviewers:
        services.pool_set_reviewers(pool=pool, reviewers=reviewers, by=principal.actor)
    return pool, held


@transaction.atomic
def update_pool(
    *,
    principal: access.Principal,
    pool: Pool,
    members: list[Doctor] | None = None,
    reviewers: list[Doctor] | None = None,
    **fields: Any,
) -> list[PrivilegeChange]:
    """Change a desk's record, members and reviewers together (None leaves that part as it is)."""
    services.pool_update(pool=pool, by=principal.actor, **fields)
    held = set_pool_members(principal=principal, pool=pool, members=members) if members is not None else []
    if reviewers is not None and set(reviewers) != set(pool.reviewers.all()):
        services.pool_set_reviewers(pool=pool, reviewers=reviewers, by=principal.actor)
    return held


@transaction.atomic
def decide(
    *, principal: access.Principal, change: PrivilegeChange, approve: bool, comment: str = ""
) -> PrivilegeChange:
    if not access.may_decide_privilege_change(principal, change):
        raise access.AccessDenied(
            _("A second admin decides this: one who manages the doctor and did not ask for the change.")
        )
    assert principal.doctor is not None
    return services.privilege_change_decide(
        change=change, approve=approve, decided_by=principal.doctor, by=principal.actor, comment=comment
    )

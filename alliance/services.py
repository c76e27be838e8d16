"""Writes to the alliance's membership. Each is atomic and records one audit event.

Views, the REST API and the provisioning commands call these; none saves a model itself.
Validation errors are django.core.exceptions.ValidationError naming the field.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import accounts, audit
from alliance.models import (
    Alliance,
    AllianceSettings,
    Department,
    Device,
    Doctor,
    Institution,
    Pool,
    PrivilegeChange,
    Role,
    Specialty,
)

User = get_user_model()


def _changes(obj: Any, fields: dict[str, Any]) -> dict[str, list[str]]:
    changed = {}
    for name, value in fields.items():
        old = getattr(obj, name)
        if old != value:
            changed[name] = [str(old), str(value)]
            setattr(obj, name, value)
    return changed


def _check_name_free(rows: Any, name: str, owner: str, exclude: Any = None) -> None:
    """A duplicate name is refused on the name field (not as an anonymous constraint error)."""
    if rows.filter(name=name).exclude(pk=getattr(exclude, "pk", None)).exists():
        raise ValidationError(
            {"name": _("The name %(name)s is already used in %(owner)s.") % {"owner": owner, "name": name}}
        )


def _unique_group(prefix: str) -> Group:
    return Group.objects.create(name=f"{prefix}:{secrets.token_hex(6)}")


# --- alliance and institutions --------------------------------------------------------


@transaction.atomic
def alliance_get_or_create(*, name: str, by: audit.Actor) -> Alliance:
    alliance, created = Alliance.objects.get_or_create(name=name)
    if created:
        audit.record(actor=by, action="alliance.create", object_type="alliance", object_id=alliance.pk)
    return alliance


def _check_parent(alliance: Alliance, parent: Institution | None, institution: Institution | None = None) -> None:
    if parent is None:
        return
    if parent.alliance_id != alliance.pk:
        raise ValidationError({"parent": _("The parent institution belongs to another alliance.")})
    if institution is not None and institution.pk is not None:
        node: Institution | None = parent
        while node is not None:
            if node.pk == institution.pk:
                raise ValidationError({"parent": _("An institution cannot be its own ancestor.")})
            node = node.parent


@transaction.atomic
def institution_create(
    *,
    alliance: Alliance,
    name: str,
    level: str,
    ae_title: str,
    parent: Institution | None = None,
    modules: list[str] | None = None,
    by: audit.Actor,
) -> Institution:
    ae_title = ae_title.strip().upper()
    if Institution.objects.filter(ae_title=ae_title).exists() or Device.objects.filter(ae_title=ae_title).exists():
        raise ValidationError({"ae_title": _("The AE title %(ae)s is already in use.") % {"ae": ae_title}})
    _check_parent(alliance, parent)
    _check_name_free(alliance.institutions.all(), name.strip(), str(alliance))
    institution = Institution(
        alliance=alliance,
        name=name.strip(),
        level=level,
        ae_title=ae_title,
        parent=parent,
        modules=modules if modules is not None else list(ALL_MODULES),
    )
    institution.full_clean(exclude=["group"])
    institution.group = _unique_group("institution")
    institution.save()
    audit.record(
        actor=by,
        action="institution.create",
        object_type="institution",
        object_id=institution.pk,
        detail={"name": institution.name, "level": level, "ae_title": ae_title},
    )
    return institution


ALL_MODULES = ("image_store", "consults", "referrals", "cloud_film", "teaching", "screening")


@transaction.atomic
def institution_update(*, institution: Institution, by: audit.Actor, **fields: Any) -> Institution:
    if "ae_title" in fields:
        fields["ae_title"] = fields["ae_title"].strip().upper()
        clash = Device.objects.filter(ae_title=fields["ae_title"]).exists()
        if clash:
            raise ValidationError(
                {"ae_title": _("The AE title %(ae)s is already in use.") % {"ae": fields["ae_title"]}}
            )
    if "parent" in fields:
        _check_parent(institution.alliance, fields["parent"], institution)
    if "name" in fields:
        fields["name"] = fields["name"].strip()
        _check_name_free(
            institution.alliance.institutions.all(), fields["name"], str(institution.alliance), institution
        )
    if "modules" in fields and not set(fields["modules"]) <= set(ALL_MODULES):
        raise ValidationError({"modules": _("Unknown module.")})
    changed = _changes(institution, fields)
    if changed:
        institution.full_clean(exclude=["group"])
        institution.save()
        audit.record(
            actor=by, action="institution.update", object_type="institution", object_id=institution.pk, detail=changed
        )
    return institution


@transaction.atomic
def department_create(*, institution: Institution, name: str, by: audit.Actor) -> Department:
    _check_name_free(institution.departments.all(), name.strip(), str(institution))
    department = Department(institution=institution, name=name.strip())
    department.full_clean()
    department.save()
    audit.record(
        actor=by,
        action="department.create",
        object_type="department",
        object_id=department.pk,
        detail={"institution": institution.pk, "name": department.name},
    )
    return department


@transaction.atomic
def department_update(*, department: Department, by: audit.Actor, **fields: Any) -> Department:
    if "name" in fields:
        fields["name"] = fields["name"].strip()
        _check_name_free(
            department.institution.departments.all(), fields["name"], str(department.institution), department
        )
    changed = _changes(department, fields)
    if changed:
        department.full_clean()
        department.save()
        audit.record(
            actor=by, action="department.update", object_type="department", object_id=department.pk, detail=changed
        )
    return department


@transaction.atomic
def specialty_get_or_create(*, code: str, name: str = "", by: audit.Actor) -> Specialty:
    specialty, created = Specialty.objects.get_or_create(code=code, defaults={"name": name or code})
    if created:
        audit.record(actor=by, action="specialty.create", object_type="specialty", object_id=specialty.pk)
    return specialty


# --- doctors --------------------------------------------------------------------------


def _check_roles(roles: list[str]) -> list[str]:
    unknown = [r for r in roles if r not in Role.values]
    if unknown or not roles:
        raise ValidationError({"roles": _("Choose one or more of: %(roles)s.") % {"roles": ", ".join(Role.values)}})
    return sorted(set(roles))


def _check_department(institution: Institution, department: Department | None) -> None:
    if department is not None and department.institution_id != institution.pk:
        raise ValidationError({"department": _("The department belongs to another institution.")})


@transaction.atomic
def doctor_create(
    *,
    institution: Institution,
    username: str,
    roles: list[str],
    by: audit.Actor,
    password: str | None = None,
    full_name: str = "",
    email: str = "",
    department: Department | None = None,
    title: str = "",
    specialties: list[Specialty] | None = None,
    password_temporary: bool = False,
) -> Doctor:
    """`password_temporary`: an admin chose the password, so the doctor changes it at first sign-in."""
    username = username.strip()
    if not username:
        raise ValidationError({"username": _("A username is required.")})
    if User.objects.filter(username=username).exists():
        raise ValidationError({"username": _("The username %(u)s is taken.") % {"u": username}})
    roles = _check_roles(roles)
    _check_department(institution, department)
    first, _sep, last = full_name.strip().partition(" ")
    user = User(username=username, email=email, first_name=first[:150], last_name=last[:150])
    if password:
        from django.contrib.auth.password_validation import validate_password

        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise ValidationError({"password": exc.messages}) from None
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    doctor = Doctor.objects.create(
        user=user,
        institution=institution,
        department=department,
        title=title,
        roles=roles,
        must_change_password=bool(password) and password_temporary,
    )
    if specialties:
        doctor.specialties.set(specialties)
    user.groups.add(institution.group)
    audit.record(
        actor=by,
        action="doctor.create",
        object_type="doctor",
        object_id=doctor.pk,
        detail={"username": username, "institution": institution.pk, "roles": roles},
    )
    return doctor


@transaction.atomic
def doctor_update(
    *,
    doctor: Doctor,
    by: audit.Actor,
    roles: list[str] | None = None,
    specialties: list[Specialty] | None = None,
    full_name: str | None = None,
    email: str | None = None,
    **fields: Any,
) -> Doctor:
    if roles is not None:
        fields["roles"] = _check_roles(roles)
    _check_department(doctor.institution, fields.get("department", doctor.department))
    changed = _changes(doctor, fields)
    changed.update(_update_account(doctor.user, full_name=full_name, email=email))
    if specialties is not None and set(specialties) != set(doctor.specialties.all()):
        doctor.specialties.set(specialties)
        changed["specialties"] = [", ".join(s.code for s in specialties)]
    if changed:
        doctor.save()
        audit.record(actor=by, action="doctor.update", object_type="doctor", object_id=doctor.pk, detail=changed)
    return doctor


def _update_account(user: Any, *, full_name: str | None, email: str | None) -> dict[str, list[str]]:
    fields: dict[str, Any] = {}
    if full_name is not None:
        first, _sep, last = full_name.strip().partition(" ")
        fields.update(first_name=first[:150], last_name=last.strip()[:150])
    if email is not None:
        fields["email"] = email.strip()
    changed = _changes(user, fields)
    if changed:
        user.full_clean(exclude=["password"])
        user.save(update_fields=list(changed))
    return changed


def _end_sessions(user: Any) -> None:
    accounts.revoke_all_tokens(user)
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(session.get_decoded().get("_auth_user_id")) == str(user.pk):
            session.delete()


@transaction.atomic
def doctor_set_active(*, doctor: Doctor, active: bool, by: audit.Actor) -> Doctor:
    """Deactivation ends the doctor's sessions and tokens at once."""
    if doctor.active == active:
        return doctor
    doctor.active = active
    doctor.save(update_fields=["active"])
    doctor.user.is_active = active
    doctor.user.save(update_fields=["is_active"])
    if not active:
        _end_sessions(doctor.user)
    audit.record(
        actor=by, action="doctor.activate" if active else "doctor.deactivate", object_type="doctor", object_id=doctor.pk
    )
    return doctor


@transaction.atomic
def doctor_move(
    *, doctor: Doctor, institution: Institution, by: audit.Actor, department: Department | None = None
) -> Doctor:
    """Move to another institution: old group and pools are left, so old access ends."""
    _check_department(institution, department)
    old = doctor.institution
    doctor.user.groups.remove(old.group)
    for pool in doctor.pools.all():
        pool.members.remove(doctor)
        doctor.user.groups.remove(pool.group)
    doctor.institution = institution
    doctor.department = department
    doctor.save(update_fields=["institution", "department"])
    doctor.user.groups.add(institution.group)
    audit.record(
        actor=by,
        action="doctor.move",
        object_type="doctor",
        object_id=doctor.pk,
        detail={"from": old.pk, "to": institution.pk},
    )
    return doctor


@transaction.atomic
def doctor_set_password(*, doctor: Doctor, password: str, by: audit.Actor, temporary: bool = True) -> None:
    """An admin's new password for a doctor: the doctor changes it at their next sign-in
    (`temporary`), unless it is the admin's own."""
    from django.contrib.auth.password_validation import validate_password

    try:
        validate_password(password, doctor.user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None
    doctor.user.set_password(password)
    doctor.user.save(update_fields=["password"])
    doctor.must_change_password = temporary
    doctor.save(update_fields=["must_change_password"])
    audit.record(actor=by, action="doctor.password", object_type="doctor", object_id=doctor.pk)


def token_create(*, doctor: Doctor, by: audit.Actor) -> accounts.IssuedToken:
    """A fresh API token (the doctor's others stop working); its key is in the result only."""
    return accounts.token_issue(user=doctor.user, by=by, name="token_create", replace=True)


# --- pools ----------------------------------------------------------------------------


@transaction.atomic
def pool_create(
    *,
    institution: Institution,
    specialty: Specialty,
    name: str,
    by: audit.Actor,
    members: list[Doctor] | None = None,
    two_level_signoff: bool = False,
) -> Pool:
    _check_name_free(institution.pools.all(), name.strip(), str(institution))
    pool = Pool(institution=institution, specialty=specialty, name=name.strip(), two_level_signoff=two_level_signoff)
    pool.full_clean(exclude=["group"])
    pool.group = _unique_group("pool")
    pool.save()
    audit.record(
        actor=by,
        action="pool.create",
        object_type="pool",
        object_id=pool.pk,
        detail={"institution": institution.pk, "name": pool.name},
    )
    if members:
        pool_set_members(pool=pool, members=members, by=by)
    return pool


@transaction.atomic
def pool_update(*, pool: Pool, by: audit.Actor, **fields: Any) -> Pool:
    if "name" in fields:
        fields["name"] = fields["name"].strip()
        _check_name_free(pool.institution.pools.all(), fields["name"], str(pool.institution), pool)
    changed = _changes(pool, fields)
    if changed:
        pool.full_clean(exclude=["group"])
        pool.save()
        audit.record(actor=by, action="pool.update", object_type="pool", object_id=pool.pk, detail=changed)
    return pool


@transaction.atomic
def pool_set_members(*, pool: Pool, members: list[Doctor], by: audit.Actor) -> Pool:
    strangers = [d for d in members if d.institution_id != pool.institution_id]
    if strangers:
        raise ValidationError({"members": _("Pool members must be doctors of the pool's institution.")})
    before = set(pool.members.all())
    after = set(members)
    for doctor in before - after:
        doctor.user.groups.remove(pool.group)
    for doctor in after - before:
        doctor.user.groups.add(pool.group)
    pool.members.set(after)
    pool.reviewers.remove(*(before - after))  # a reviewer is a member of the pool
    audit.record(
        actor=by,
        action="pool.members",
        object_type="pool",
        object_id=pool.pk,
        detail={"members": sorted(d.pk for d in after)},
    )
    return pool


@transaction.atomic
def pool_set_reviewers(*, pool: Pool, reviewers: list[Doctor], by: audit.Actor) -> Pool:
    """The members who verify the others' reports when the pool has two-level sign-off."""
    members = set(pool.members.all())
    if any(d not in members for d in reviewers):
        raise ValidationError({"reviewers": _("Reviewers must be members of the pool.")})
    pool.reviewers.set(reviewers)
    audit.record(
        actor=by,
        action="pool.reviewers",
        object_type="pool",
        object_id=pool.pk,
        detail={"reviewers": sorted(d.pk for d in reviewers)},
    )
    return pool


# --- privilege changes that wait for a second admin (issue #22) -----------------------


@transaction.atomic
def privilege_change_request(
    *, subject: Doctor, kind: str, payload: dict[str, Any], requested_by: Doctor, by: audit.Actor
) -> PrivilegeChange:
    """Put on hold a change that would give an admin account clinical access (the caller asked
    alliance.access.needs_second_admin); a second admin decides it. The admins of the
    institutions concerned are told at once."""
    if PrivilegeChange.objects.filter(subject=subject, kind=kind, state=PrivilegeChange.State.PENDING).exists():
        raise ValidationError(
            {
                "privileges": _("A change of this kind for %(name)s already waits for a second admin.")
                % {"name": subject.display_name}
            }
        )
    change = PrivilegeChange.objects.create(subject=subject, kind=kind, payload=payload, requested_by=requested_by)
    audit.record(
        actor=by,
        action="privilege.request",
        object_type="doctor",
        object_id=subject.pk,
        detail={"change": change.pk, "kind": kind, **payload},
    )
    _notify_privilege_change(change)
    return change


@transaction.atomic
def privilege_change_decide(
    *, change: PrivilegeChange, approve: bool, decided_by: Doctor, by: audit.Actor, comment: str = ""
) -> PrivilegeChange:
    """Approve (the change is made now, as if the first admin had made it) or refuse it."""
    change = PrivilegeChange.objects.select_for_update().select_related("subject__user").get(pk=change.pk)
    if change.state != PrivilegeChange.State.PENDING:
        raise ValidationError({"state": _("This change was already decided.")})
    if approve:
        _apply_privilege_change(change, by)
    change.state = PrivilegeChange.State.APPROVED if approve else PrivilegeChange.State.REFUSED
    change.decided_by = decided_by
    change.decided_at = timezone.now()
    change.comment = comment.strip()
    change.save(update_fields=["state", "decided_by", "decided_at", "comment"])
    audit.record(
        actor=by,
        action="privilege.approve" if approve else "privilege.refuse",
        object_type="doctor",
        object_id=change.subject_id,
        detail={"change": change.pk, "kind": change.kind, "requested_by": change.requested_by_id, **change.payload},
    )
    _notify_privilege_change(change)
    return change


def _apply_privilege_change(change: PrivilegeChange, by: audit.Actor) -> None:
    doctor = change.subject
    if change.kind == PrivilegeChange.Kind.ROLES:
        doctor_update(doctor=doctor, roles=list(change.payload["roles"]), by=by)
    elif change.kind == PrivilegeChange.Kind.MOVE:
        institution = Institution.objects.get(pk=change.payload["institution"])
        department_id = change.payload.get("department")
        department = Department.objects.get(pk=department_id) if department_id else None
        doctor_move(doctor=doctor, institution=institution, department=department, by=by)
    else:
        pool = Pool.objects.get(pk=change.payload["pool"])
        if doctor.institution_id != pool.institution_id:
            raise ValidationError({"members": _("Pool members must be doctors of the pool's institution.")})
        pool_set_members(pool=pool, members=[*pool.members.all(), doctor], by=by)


def _notify_privilege_change(change: PrivilegeChange) -> None:
    """After the commit, queue the notice; with the broker away the change stands and beat's
    sweep (tasks.send_unsent_privilege_notices) mails it later."""
    from alliance import tasks

    def queue_privilege_notice() -> None:  # named: a robust on_commit logs its callback's __qualname__
        tasks.privilege_change_notice.delay(change.pk)

    transaction.on_commit(queue_privilege_notice, robust=True)


# --- devices --------------------------------------------------------------------------


def _check_device_ae(ae_title: str, device: Device | None = None) -> str:
    ae_title = ae_title.strip().upper()
    others = Device.objects.filter(ae_title=ae_title)
    taken = (others.exclude(pk=device.pk) if device is not None else others).exists()
    if taken or Institution.objects.filter(ae_title=ae_title).exists():
        raise ValidationError({"ae_title": _("The AE title %(ae)s is already in use.") % {"ae": ae_title}})
    return ae_title


def fingerprint(value: str) -> str:
    """A certificate fingerprint as Device.tls_client_sha256 keeps it: what `openssl x509
    -fingerprint -sha256` prints ("AB:CD:...") in lower-case hex without colons."""
    return value.replace(":", "").replace(" ", "").strip().lower()


@transaction.atomic
def device_create(
    *,
    institution: Institution,
    ae_title: str,
    host: str,
    port: int,
    by: audit.Actor,
    description: str = "",
    tls_client_sha256: str = "",
) -> Device:
    device = Device(
        institution=institution,
        ae_title=_check_device_ae(ae_title),
        host=host.strip(),
        port=port,
        description=description,
        tls_client_sha256=fingerprint(tls_client_sha256),
    )
    device.full_clean()
    device.save()
    audit.record(
        actor=by,
        action="device.create",
        object_type="device",
        object_id=device.pk,
        detail={
            "institution": institution.pk,
            "ae_title": device.ae_title,
            "host": host,
            "port": port,
            "tls_client_sha256": device.tls_client_sha256,
        },
    )
    return device


@transaction.atomic
def device_update(*, device: Device, by: audit.Actor, **fields: Any) -> Device:
    if "ae_title" in fields:
        fields["ae_title"] = _check_device_ae(fields["ae_title"], device)
    if "tls_client_sha256" in fields:
        fields["tls_client_sha256"] = fingerprint(fields["tls_client_sha256"] or "")
    changed = _changes(device, fields)
    if changed:
        device.full_clean()
        device.save()
        audit.record(actor=by, action="device.update", object_type="device", object_id=device.pk, detail=changed)
    return device


# --- alliance-wide settings -------------------------------------------------------------

SETTINGS_FIELDS = (
    "reader_access_days",
    "referral_access_days",
    "break_glass_hours",
    "film_check",
    "film_expiry_days",
    "film_max_openings",
    "film_on_sign",
    "film_show_doctor_names",
    "film_sheets",
    "film_sheet_cost",
    "second_factor_required",
)


def _check_film_sheets(sheets: Any) -> None:
    valid = isinstance(sheets, dict) and all(
        isinstance(k, str) and k.strip() and isinstance(v, int) and 0 <= v <= 100 for k, v in sheets.items()
    )
    if not valid:
        raise ValidationError({"film_sheets": _("Give whole numbers of sheets (0 to 100) per modality, e.g. CT: 2.")})


@transaction.atomic
def alliance_settings_update(*, alliance: Alliance, by: audit.Actor, **fields: Any) -> AllianceSettings:
    """Change the alliance's knobs (alliance.access.settings_of reads them); only what changed is audited."""
    unknown = set(fields) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValidationError({name: _("Unknown setting.") for name in sorted(unknown)})
    if "film_sheets" in fields:
        _check_film_sheets(fields["film_sheets"])
    row, _created = AllianceSettings.objects.select_for_update().get_or_create(alliance=alliance)
    changed = _changes(row, fields)
    if changed:
        row.full_clean()
        row.save()
        audit.record(
            actor=by, action="alliance.settings", object_type="alliance", object_id=alliance.pk, detail=changed
        )
    return row

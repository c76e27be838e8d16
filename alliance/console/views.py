"""The admin console (C1, C9): institutions, departments, doctors, pools, devices, specialties.

Who may manage what comes from alliance.access (*_managed_by); an object outside the
user's reach is a 404, a page their role does not use is a 403. Every write goes
through alliance.services, which validates, saves and audits in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance import access, accounts, audit, privileges, services
from alliance.console import forms
from alliance.forms import apply_service_errors
from alliance.models import Doctor, Institution, Pool, PrivilegeChange, Role, Specialty
from alliance.modules import open_cases

PAGE_SIZE = 25
View = Callable[..., HttpResponse]


def manager_required(view: View) -> View:
    """Signed in, and managing at least one institution (institution or alliance admin)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not access.institutions_managed_by(access.principal_of(request)).exists():
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def alliance_admin_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not access.may_manage_alliance(access.principal_of(request)):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def _actor(request: HttpRequest) -> audit.Actor:
    return access.principal_of(request).actor


def _back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    target = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()})
    return redirect(target if safe and target.startswith("/") else default)


def _save(form: Any, write: Callable[[], Any]) -> Any:
    """Run service writes as one transaction; on a ValidationError nothing is saved, the
    error is shown on the form, and None is returned."""
    try:
        with transaction.atomic():
            return write()
    except ValidationError as exc:
        apply_service_errors(form, exc)
        return None
    except access.AccessDenied as exc:
        form.add_error(None, str(exc))
        return None


def _held_message(request: HttpRequest, held: list[PrivilegeChange]) -> None:
    for change in held:
        messages.warning(
            request,
            _("%(change)s for %(name)s waits for a second admin: it gives an admin account access to patients.")
            % {"change": change.get_kind_display(), "name": change.subject.display_name},
        )


def _active_flag(request: HttpRequest) -> bool:
    return request.POST.get("active") == "1"


# --- lists ----------------------------------------------------------------------------


def _listing(
    request: HttpRequest, rows: QuerySet[Any], search: list[str], *, by_institution: bool = True
) -> dict[str, Any]:
    """Search box (q), institution and active filters, and a page of rows."""
    principal = access.principal_of(request)
    q = request.GET.get("q", "").strip()
    if q:
        match = Q()
        for field in search:
            match |= Q(**{f"{field}__icontains": q})
        rows = rows.filter(match)
    institutions = access.institutions_managed_by(principal)
    chosen = None
    if by_institution and request.GET.get("institution", "").isdigit():
        chosen = institutions.filter(pk=int(request.GET["institution"])).first()
        if chosen is not None:
            rows = rows.filter(institution=chosen)
    state = request.GET.get("active", "")
    if state in {"1", "0"}:
        rows = rows.filter(active=state == "1")
    if chosen is None and by_institution and institutions.count() == 1:
        chosen = institutions.first()
    query = request.GET.copy()
    query.pop("page", None)
    return {
        "page_obj": Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page")),
        "q": q,
        "state": state,
        "institutions": institutions,
        "chosen": chosen,
        "query_string": query.urlencode(),
        "is_alliance_admin": principal.is_alliance_admin,
    }


@manager_required
def index(request: HttpRequest) -> HttpResponse:
    principal = access.principal_of(request)
    institutions = access.institutions_managed_by(principal)
    if not principal.is_alliance_admin and institutions.count() == 1:
        return redirect("manage:institution_detail", pk=institutions.get().pk)
    figures = {
        "institutions": institutions.filter(active=True).count(),
        "doctors": access.doctors_managed_by(principal).filter(active=True).count(),
        "departments": access.departments_managed_by(principal).filter(active=True).count(),
        "pools": access.pools_managed_by(principal).filter(active=True).count(),
        "devices": access.devices_managed_by(principal).filter(active=True).count(),
        "specialties": Specialty.objects.count(),
    }
    return render(request, "manage/index.html", {"figures": figures})


# --- institutions ---------------------------------------------------------------------


@manager_required
def institution_list(request: HttpRequest) -> HttpResponse:
    rows = (
        access.institutions_managed_by(access.principal_of(request))
        .select_related("parent")
        .annotate(n_doctors=Count("doctors", filter=Q(doctors__active=True), distinct=True))
        .annotate(n_devices=Count("devices", filter=Q(devices__active=True), distinct=True))
        .order_by("name")
    )
    level = request.GET.get("level", "")
    if level in Institution.Level.values:
        rows = rows.filter(level=level)
    context = _listing(request, rows, ["name", "ae_title"], by_institution=False)
    context.update(level=level, levels=Institution.Level.choices)
    return render(request, "manage/institution_list.html", context)


def _alliance_parents(request: HttpRequest, exclude: Institution | None = None) -> QuerySet[Institution]:
    parents = access.institutions_managed_by(access.principal_of(request))
    return parents.exclude(pk=exclude.pk) if exclude else parents


@alliance_admin_required
def institution_add(request: HttpRequest) -> HttpResponse:
    form = forms.InstitutionForm(
        request.POST or None, parents=_alliance_parents(request), initial={"modules": list(services.ALL_MODULES)}
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        alliance = access.principal_of(request).alliance
        if alliance is None:  # alliance_admin_required admits only an active doctor, who has an alliance
            raise RuntimeError("institution_add: the alliance administrator has no alliance")
        institution = _save(
            form,
            lambda: services.institution_create(
                alliance=alliance,
                name=data["name"],
                level=data["level"],
                ae_title=data["ae_title"],
                parent=data["parent"],
                modules=data["modules"],
                by=_actor(request),
            ),
        )
        if institution is not None:
            messages.success(request, _("%(name)s joined the alliance.") % {"name": institution.name})
            return redirect("manage:institution_detail", pk=institution.pk)
    return render(
        request, "manage/form.html", {"form": form, "title": _("Add an institution"), "section": "institutions"}
    )


@manager_required
def institution_detail(request: HttpRequest, pk: int) -> HttpResponse:
    principal = access.principal_of(request)
    institution = get_object_or_404(
        access.institutions_managed_by(principal).select_related("parent", "alliance"), pk=pk
    )
    figures = {
        "doctors": institution.doctors.filter(active=True).count(),
        "departments": institution.departments.filter(active=True).count(),
        "pools": institution.pools.filter(active=True).count(),
        "devices": institution.devices.filter(active=True).count(),
    }
    modules = [(label, code in institution.modules) for code, label in forms.MODULE_LABELS.items()]
    children = institution.children.order_by("name")
    return render(
        request,
        "manage/institution_detail.html",
        {
            "institution": institution,
            "figures": figures,
            "modules": modules,
            "children": children,
            "is_alliance_admin": principal.is_alliance_admin,
        },
    )


@alliance_admin_required
def institution_edit(request: HttpRequest, pk: int) -> HttpResponse:
    institution = get_object_or_404(access.institutions_managed_by(access.principal_of(request)), pk=pk)
    initial = {
        "name": institution.name,
        "level": institution.level,
        "parent": institution.parent_id,
        "ae_title": institution.ae_title,
        "modules": institution.modules,
    }
    form = forms.InstitutionForm(
        request.POST or None, initial=initial, parents=_alliance_parents(request, exclude=institution)
    )
    left_open: list[Any] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        switched_off = set(institution.modules) - set(data["modules"])
        left_open = open_cases(institution, switched_off)
        if not left_open or request.POST.get("confirm") == "1":
            done = _save(form, lambda: services.institution_update(institution=institution, by=_actor(request), **data))
            if done is not None:
                messages.success(request, _("Saved."))
                return redirect("manage:institution_detail", pk=institution.pk)
    title = _("Edit %(name)s") % {"name": institution.name}
    context = {"form": form, "title": title, "section": "institutions", "institution": institution}
    return render(request, "manage/form.html", {**context, "confirm_switch_off": left_open})


@require_POST
@alliance_admin_required
def institution_active(request: HttpRequest, pk: int) -> HttpResponse:
    principal = access.principal_of(request)
    institution = get_object_or_404(access.institutions_managed_by(principal), pk=pk)
    active = _active_flag(request)
    if not active and not access.may_switch_off_institution(principal, institution):
        messages.error(request, _("You cannot switch off your own institution."))
    else:
        services.institution_update(institution=institution, active=active, by=_actor(request))
        text = _("%(name)s is active again.") if active else _("%(name)s is switched off: its doctors lost access.")
        messages.success(request, text % {"name": institution.name})
    return redirect("manage:institution_detail", pk=institution.pk)


def _institution_for_add(request: HttpRequest, pk: int) -> Institution:
    return get_object_or_404(access.institutions_managed_by(access.principal_of(request)).filter(active=True), pk=pk)


# --- departments ----------------------------------------------------------------------


@manager_required
def department_list(request: HttpRequest) -> HttpResponse:
    rows = (
        access.departments_managed_by(access.principal_of(request))
        .select_related("institution")
        .annotate(n_doctors=Count("doctors", filter=Q(doctors__active=True)))
        .order_by("institution__name", "name")
    )
    return render(request, "manage/department_list.html", _listing(request, rows, ["name", "institution__name"]))


@manager_required
def department_add(request: HttpRequest, institution: int) -> HttpResponse:
    owner = _institution_for_add(request, institution)
    form = forms.DepartmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        name = form.cleaned_data["name"]
        if _save(form, lambda: services.department_create(institution=owner, name=name, by=_actor(request))):
            messages.success(request, _("Department %(name)s added.") % {"name": name})
            return redirect(f"{reverse('manage:department_list')}?institution={owner.pk}")
    title = _("Add a department to %(name)s") % {"name": owner.name}
    return render(
        request, "manage/form.html", {"form": form, "title": title, "section": "departments", "institution": owner}
    )


@manager_required
def department_edit(request: HttpRequest, pk: int) -> HttpResponse:
    department = get_object_or_404(
        access.departments_managed_by(access.principal_of(request)).select_related("institution"), pk=pk
    )
    form = forms.DepartmentForm(request.POST or None, initial={"name": department.name})
    if request.method == "POST" and form.is_valid():
        name = form.cleaned_data["name"].strip()
        if _save(form, lambda: services.department_update(department=department, name=name, by=_actor(request))):
            messages.success(request, _("Saved."))
            return redirect(f"{reverse('manage:department_list')}?institution={department.institution_id}")
    context = {
        "form": form,
        "title": _("Edit department %(name)s") % {"name": department.name},
        "section": "departments",
        "institution": department.institution,
        "toggle": {"url": reverse("manage:department_active", args=[department.pk]), "active": department.active},
    }
    return render(request, "manage/form.html", context)


@require_POST
@manager_required
def department_active(request: HttpRequest, pk: int) -> HttpResponse:
    department = get_object_or_404(access.departments_managed_by(access.principal_of(request)), pk=pk)
    services.department_update(department=department, active=_active_flag(request), by=_actor(request))
    messages.success(request, _("Saved."))
    return _back(request, f"{reverse('manage:department_list')}?institution={department.institution_id}")


# --- doctors --------------------------------------------------------------------------


@manager_required
def doctor_list(request: HttpRequest) -> HttpResponse:
    rows = (
        access.doctors_managed_by(access.principal_of(request))
        .select_related("user", "institution", "department")
        .prefetch_related("specialties")
        .order_by("institution__name", "user__username")
    )
    role = request.GET.get("role", "")
    if role in Role.values:
        rows = rows.filter(roles__contains=[role])
    search = ["user__username", "user__first_name", "user__last_name", "user__email", "title"]
    context = _listing(request, rows, search)
    context.update(role=role, role_choices=Role.choices)
    return render(request, "manage/doctor_list.html", context)


def _doctor_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "full_name": data["full_name"],
        "email": data["email"],
        "roles": list(data["roles"]),
        "department": data["department"],
        "title": data["title"].strip(),
        "specialties": list(data["specialties"]),
    }


@manager_required
def doctor_add(request: HttpRequest, institution: int) -> HttpResponse:
    owner = _institution_for_add(request, institution)
    form = forms.DoctorCreateForm(
        request.POST or None,
        roles=access.assignable_roles(access.principal_of(request)),
        departments=owner.departments.filter(active=True),
        initial={"roles": ["clinician"]},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        doctor = _save(
            form,
            lambda: services.doctor_create(
                institution=owner,
                username=data["username"],
                password=data["password"],
                password_temporary=True,
                by=_actor(request),
                **_doctor_fields(data),
            ),
        )
        if doctor is not None:
            messages.success(request, _("%(name)s can sign in now.") % {"name": doctor.display_name})
            return redirect("manage:doctor_edit", pk=doctor.pk)
    title = _("Add a doctor to %(name)s") % {"name": owner.name}
    return render(
        request, "manage/form.html", {"form": form, "title": title, "section": "doctors", "institution": owner}
    )


def _changeable_doctor(request: HttpRequest, pk: int) -> Doctor:
    principal = access.principal_of(request)
    doctor = get_object_or_404(
        access.doctors_managed_by(principal).select_related("user", "institution", "department"),
        pk=pk,
    )
    if not access.may_change_doctor(principal, doctor):
        raise PermissionDenied
    return doctor


@manager_required
def doctor_edit(request: HttpRequest, pk: int) -> HttpResponse:
    principal = access.principal_of(request)
    doctor = _changeable_doctor(request, pk)
    initial = {
        "full_name": doctor.user.get_full_name(),
        "email": doctor.user.email,
        "roles": doctor.roles,
        "department": doctor.department_id,
        "title": doctor.title,
        "specialties": list(doctor.specialties.all()),
    }
    form = forms.DoctorForm(
        request.POST or None,
        initial=initial,
        roles=access.assignable_roles(principal),
        departments=doctor.institution.departments.filter(Q(active=True) | Q(pk=doctor.department_id)),
    )
    if request.method == "POST" and form.is_valid():
        fields = _doctor_fields(form.cleaned_data)

        def write() -> list[PrivilegeChange]:
            change = privileges.update_doctor(principal=principal, doctor=doctor, **fields)
            return [change] if change is not None else []

        held = _save(form, write)
        if held is not None:
            messages.success(request, _("Saved."))
            _held_message(request, held)
            return redirect("manage:doctor_edit", pk=doctor.pk)
    context = {
        "form": form,
        "doctor": doctor,
        "pools": doctor.pools.select_related("institution"),
        "may_move": access.institutions_managed_by(principal).count() > 1,
        "is_self": not access.may_switch_off_doctor(principal, doctor),
        "may_reset_second_factor": doctor.second_factor and access.may_reset_second_factor(principal, doctor),
    }
    return render(request, "manage/doctor_edit.html", context)


@require_POST
@manager_required
def doctor_active(request: HttpRequest, pk: int) -> HttpResponse:
    doctor = _changeable_doctor(request, pk)
    active = _active_flag(request)
    if not active and not access.may_switch_off_doctor(access.principal_of(request), doctor):
        messages.error(request, _("You cannot deactivate yourself."))
    else:
        services.doctor_set_active(doctor=doctor, active=active, by=_actor(request))
        text = (
            _("%(name)s can sign in again.") if active else _("%(name)s is deactivated and was signed out everywhere.")
        )
        messages.success(request, text % {"name": doctor.display_name})
    return _back(request, reverse("manage:doctor_edit", args=[doctor.pk]))


@manager_required
def doctor_move(request: HttpRequest, pk: int) -> HttpResponse:
    principal = access.principal_of(request)
    doctor = _changeable_doctor(request, pk)
    targets = access.institutions_managed_by(principal).filter(active=True).exclude(pk=doctor.institution_id)
    if not targets.exists():
        raise PermissionDenied
    form = forms.MoveForm(
        request.POST or None,
        institutions=targets,
        departments=access.departments_managed_by(principal).filter(active=True, institution__in=targets),
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        moved = _save(
            form,
            lambda: [
                privileges.move(
                    principal=principal, doctor=doctor, institution=data["institution"], department=data["department"]
                )
            ],
        )
        if moved is not None:
            held = [change for change in moved if change is not None]
            if held:
                _held_message(request, held)
            else:
                messages.success(
                    request,
                    _("%(name)s now works at %(inst)s.")
                    % {"name": doctor.display_name, "inst": data["institution"].name},
                )
            return redirect("manage:doctor_edit", pk=doctor.pk)
    title = _("Move %(name)s to another institution") % {"name": doctor.display_name}
    lead = _("They leave the specialist desks of %(inst)s and lose access to its studies at once.") % {
        "inst": doctor.institution.name
    }
    return render(request, "manage/form.html", {"form": form, "title": title, "lead": lead, "section": "doctors"})


@manager_required
def doctor_password(request: HttpRequest, pk: int) -> HttpResponse:
    doctor = _changeable_doctor(request, pk)
    form = forms.PasswordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        password = form.cleaned_data["password"]
        done = _save(
            form,
            lambda: services.doctor_set_password(
                doctor=doctor, password=password, by=_actor(request), temporary=doctor.user_id != request.user.pk
            )
            or True,
        )
        if done:
            if doctor.user_id == request.user.pk:
                update_session_auth_hash(request, doctor.user)
            messages.success(
                request,
                _("The password of %(name)s is reset; their other sessions ended.") % {"name": doctor.display_name},
            )
            return redirect("manage:doctor_edit", pk=doctor.pk)
    title = _("Reset the password of %(name)s") % {"name": doctor.display_name}
    return render(request, "manage/form.html", {"form": form, "title": title, "section": "doctors"})


@require_POST
@manager_required
def doctor_second_factor_reset(request: HttpRequest, pk: int) -> HttpResponse:
    """Another admin removes a doctor's authenticator and recovery codes (asked to confirm first)."""
    doctor = _changeable_doctor(request, pk)
    if not access.may_reset_second_factor(access.principal_of(request), doctor):
        raise PermissionDenied
    accounts.second_factor_reset(doctor=doctor, by=_actor(request))
    messages.success(
        request,
        _("The second factor of %(name)s is removed; they set up a new one at their next sign-in.")
        % {"name": doctor.display_name},
    )
    return redirect("manage:doctor_edit", pk=doctor.pk)


# --- sign-in locks --------------------------------------------------------------------


@manager_required
def sign_in_locks(request: HttpRequest) -> HttpResponse:
    principal = access.principal_of(request)
    context = {
        "locks": access.sign_in_locks_visible_to(principal)[:200],
        "addresses": accounts.refused_addresses() if access.may_see_address_locks(principal) else None,
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "address_limit": settings.LOGIN_ADDRESS_FAILURE_LIMIT,
        "lockout_minutes": round(settings.AXES_COOLOFF_TIME * 60),
        "section": "locks",
    }
    return render(request, "manage/sign_in_locks.html", context)


@require_POST
@manager_required
def sign_in_lock_lift(request: HttpRequest) -> HttpResponse:
    principal = access.principal_of(request)
    address = request.POST.get("address", "")
    username = request.POST.get("username")
    if username is None:
        if not access.may_see_address_locks(principal):
            raise PermissionDenied
    elif not access.sign_in_locks_visible_to(principal).filter(username=username, ip_address=address).exists():
        raise Http404
    accounts.sign_in_lock_lift(by=_actor(request), address=address, username=username)
    messages.success(request, _("The lock is lifted."))
    return redirect("manage:sign_in_locks")


# --- pools ----------------------------------------------------------------------------


@manager_required
def pool_list(request: HttpRequest) -> HttpResponse:
    rows = (
        access.pools_managed_by(access.principal_of(request))
        .select_related("institution", "specialty")
        .annotate(n_members=Count("members", filter=Q(members__active=True)))
        .order_by("institution__name", "name")
    )
    return render(
        request, "manage/pool_list.html", _listing(request, rows, ["name", "specialty__name", "institution__name"])
    )


def _pool_candidates(institution: Institution, pool: Pool | None = None) -> QuerySet[Doctor]:
    current = Q(pools=pool) if pool is not None else Q(pk__in=[])
    return Doctor.objects.filter(Q(institution=institution) & (Q(active=True) | current)).distinct()


@manager_required
def pool_add(request: HttpRequest, institution: int) -> HttpResponse:
    owner = _institution_for_add(request, institution)
    form = forms.PoolForm(request.POST or None, doctors=_pool_candidates(owner))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data

        def create() -> tuple[Pool, list[PrivilegeChange]]:
            return privileges.create_pool(
                principal=access.principal_of(request),
                institution=owner,
                specialty=data["specialty"],
                name=data["name"],
                two_level_signoff=data["two_level_signoff"],
                members=list(data["members"]),
                reviewers=list(data["reviewers"]),
            )

        made = _save(form, create)
        if made is not None:
            pool, held = made
            messages.success(request, _("Pool %(name)s created.") % {"name": pool.name})
            _held_message(request, held)
            return redirect(f"{reverse('manage:pool_list')}?institution={owner.pk}")
    title = _("Add a specialist pool to %(name)s") % {"name": owner.name}
    context = {
        "form": form,
        "title": title,
        "section": "pools",
        "institution": owner,
        "no_specialties": not Specialty.objects.exists(),
    }
    return render(request, "manage/form.html", context)


@manager_required
def pool_edit(request: HttpRequest, pk: int) -> HttpResponse:
    pool = get_object_or_404(access.pools_managed_by(access.principal_of(request)).select_related("institution"), pk=pk)
    initial = {
        "name": pool.name,
        "specialty": pool.specialty_id,
        "members": list(pool.members.all()),
        "two_level_signoff": pool.two_level_signoff,
        "reviewers": list(pool.reviewers.all()),
    }
    form = forms.PoolForm(request.POST or None, initial=initial, doctors=_pool_candidates(pool.institution, pool))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data

        def write() -> list[PrivilegeChange]:
            return privileges.update_pool(
                principal=access.principal_of(request),
                pool=pool,
                name=data["name"].strip(),
                specialty=data["specialty"],
                two_level_signoff=data["two_level_signoff"],
                members=list(data["members"]),
                reviewers=list(data["reviewers"]),
            )

        held = _save(form, write)
        if held is not None:
            messages.success(request, _("Saved."))
            _held_message(request, held)
            return redirect(f"{reverse('manage:pool_list')}?institution={pool.institution_id}")
    context = {
        "form": form,
        "title": _("Edit pool %(name)s") % {"name": pool.name},
        "section": "pools",
        "institution": pool.institution,
        "toggle": {"url": reverse("manage:pool_active", args=[pool.pk]), "active": pool.active},
    }
    return render(request, "manage/form.html", context)


@require_POST
@manager_required
def pool_active(request: HttpRequest, pk: int) -> HttpResponse:
    pool = get_object_or_404(access.pools_managed_by(access.principal_of(request)), pk=pk)
    services.pool_update(pool=pool, active=_active_flag(request), by=_actor(request))
    messages.success(request, _("Saved."))
    return _back(request, f"{reverse('manage:pool_list')}?institution={pool.institution_id}")


# --- devices --------------------------------------------------------------------------


@manager_required
def device_list(request: HttpRequest) -> HttpResponse:
    rows = (
        access.devices_managed_by(access.principal_of(request))
        .select_related("institution")
        .order_by("institution__name", "ae_title")
    )
    context = _listing(request, rows, ["ae_title", "host", "description", "institution__name"])
    return render(request, "manage/device_list.html", context)


@manager_required
def device_add(request: HttpRequest, institution: int) -> HttpResponse:
    owner = _institution_for_add(request, institution)
    form = forms.DeviceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        device = _save(form, lambda: services.device_create(institution=owner, by=_actor(request), **data))
        if device is not None:
            messages.success(request, _("Device %(ae)s registered: it may now connect.") % {"ae": device.ae_title})
            return redirect(f"{reverse('manage:device_list')}?institution={owner.pk}")
    title = _("Register a DICOM device of %(name)s") % {"name": owner.name}
    lead = _("Point the device at AE title %(ae)s on this server; only registered devices may connect.") % {
        "ae": owner.ae_title
    }
    return render(
        request,
        "manage/form.html",
        {"form": form, "title": title, "lead": lead, "section": "devices", "institution": owner},
    )


@manager_required
def device_edit(request: HttpRequest, pk: int) -> HttpResponse:
    device = get_object_or_404(
        access.devices_managed_by(access.principal_of(request)).select_related("institution"), pk=pk
    )
    initial = {
        "ae_title": device.ae_title,
        "host": device.host,
        "port": device.port,
        "description": device.description,
        "tls_client_sha256": device.tls_client_sha256,
    }
    form = forms.DeviceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if _save(form, lambda: services.device_update(device=device, by=_actor(request), **data)):
            messages.success(request, _("Saved."))
            return redirect(f"{reverse('manage:device_list')}?institution={device.institution_id}")
    context = {
        "form": form,
        "title": _("Edit device %(ae)s") % {"ae": device.ae_title},
        "section": "devices",
        "institution": device.institution,
        "toggle": {"url": reverse("manage:device_active", args=[device.pk]), "active": device.active},
    }
    return render(request, "manage/form.html", context)


@require_POST
@manager_required
def device_active(request: HttpRequest, pk: int) -> HttpResponse:
    device = get_object_or_404(access.devices_managed_by(access.principal_of(request)), pk=pk)
    services.device_update(device=device, active=_active_flag(request), by=_actor(request))
    messages.success(request, _("Saved."))
    return _back(request, f"{reverse('manage:device_list')}?institution={device.institution_id}")


# --- specialties ----------------------------------------------------------------------


@alliance_admin_required
def specialty_list(request: HttpRequest) -> HttpResponse:
    rows = Specialty.objects.annotate(
        n_doctors=Count("doctors", distinct=True), n_pools=Count("pools", distinct=True)
    ).order_by("code")
    context = _listing(request, rows, ["code", "name"], by_institution=False)
    return render(request, "manage/specialty_list.html", context)


@alliance_admin_required
def specialty_add(request: HttpRequest) -> HttpResponse:
    form = forms.SpecialtyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if _save(
            form, lambda: services.specialty_get_or_create(code=data["code"], name=data["name"], by=_actor(request))
        ):
            messages.success(request, _("Specialty %(name)s added.") % {"name": data["name"]})
            return redirect("manage:specialty_list")
    return render(request, "manage/form.html", {"form": form, "title": _("Add a specialty"), "section": "specialties"})


# --- alliance-wide settings -----------------------------------------------------------


@alliance_admin_required
def alliance_settings(request: HttpRequest) -> HttpResponse:
    alliance = access.principal_of(request).alliance
    assert alliance is not None  # an alliance admin is a doctor of the alliance
    row = access.settings_of(alliance.pk)
    form = forms.AllianceSettingsForm(request.POST or None, instance=row)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in services.SETTINGS_FIELDS}
        row.refresh_from_db()  # the form wrote onto the instance; the service compares with what is stored
        done = _save(form, lambda: services.alliance_settings_update(alliance=alliance, by=_actor(request), **fields))
        if done is not None:
            messages.success(request, _("Saved."))
            return redirect("manage:alliance_settings")
    context = {
        "form": form,
        "title": _("Alliance settings"),
        "lead": _("How long access lasts, emergency access and cloud film, for every member of %(name)s.")
        % {"name": alliance.name},
        "section": "settings",
    }
    return render(request, "manage/form.html", context)


# --- privilege changes waiting for a second admin -------------------------------------


@manager_required
def privilege_list(request: HttpRequest) -> HttpResponse:
    principal = access.principal_of(request)
    rows = access.privilege_changes_visible_to(principal)
    pending = [c for c in rows.filter(state=PrivilegeChange.State.PENDING)]
    decidable = {c.pk for c in pending if access.may_decide_privilege_change(principal, c)}
    context = {
        "pending": pending,
        "decidable": decidable,
        "decided": rows.exclude(state=PrivilegeChange.State.PENDING)[:50],
        "section": "privileges",
    }
    return render(request, "manage/privilege_list.html", context)


@manager_required
def privilege_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """The confirmation page of one change: what it gives, then approve or refuse."""
    principal = access.principal_of(request)
    change = get_object_or_404(access.privilege_changes_visible_to(principal), pk=pk)
    form = forms.PrivilegeDecisionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        approve = request.POST.get("decision") == "approve"
        decided = _save(
            form,
            lambda: privileges.decide(
                principal=principal, change=change, approve=approve, comment=form.cleaned_data["comment"]
            ),
        )
        if decided is not None:
            text = _("Approved: the change is made.") if approve else _("Refused: nothing changes.")
            messages.success(request, text)
            return redirect("manage:privilege_list")
    context = {
        "change": change,
        "form": form,
        "may_decide": access.may_decide_privilege_change(principal, change),
        "target": _privilege_target(change),
        "section": "privileges",
    }
    return render(request, "manage/privilege_decide.html", context)


def _privilege_target(change: PrivilegeChange) -> str:
    """What the change gives, in words."""
    if change.kind == PrivilegeChange.Kind.ROLES:
        labels = dict(Role.choices)
        return ", ".join(str(labels.get(r, r)) for r in change.payload.get("roles", []))
    if change.kind == PrivilegeChange.Kind.MOVE:
        institution = Institution.objects.filter(pk=change.payload.get("institution")).first()
        return institution.name if institution else ""
    pool = Pool.objects.filter(pk=change.payload.get("pool")).select_related("institution").first()
    return str(pool) if pool else ""

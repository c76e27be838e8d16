"""May this principal see (or write to) this study? One function per decision.

- A doctor sees their own institution's studies (clinical roles only); a DICOM device its
  institution's.
- Another institution's study is visible only through an unexpired, unrevoked grant
  (StudyGroupGrant to the institution's or a pool's group, or StudyUserGrant to the doctor)
  that a consult, referral or break-glass created (imaging/grants.py); the grant names its basis.
- An alliance admin sees no images by default.
- A patient's film link, once checked (imaging.films), sees the studies it was made for and
  nothing else: no other study of the same patient, no institution's.

Pages, the REST API, DICOMweb and the DICOM server all call these functions with the
principal they resolved once (alliance.access.Principal); no rule lives anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

from django.db import connections
from django.db.models import BooleanField, Exists, Expression, F, Func, IntegerField, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from alliance import audit
from alliance.access import Principal
from alliance.models import Device, Institution, Role
from imaging.models import BreakGlassReview, Patient, ScheduledStep, Study, StudyGroupGrant, StudyUserGrant

READ = "read_study"
WRITE = "change_study"
IMAGE_STORE_MODULE = "image_store"
OWN_INSTITUTION = "own-institution"


class StudyRef(Protocol):
    """What a decision needs of a study: a Study row, or a light stand-in for one."""

    pk: Any
    institution_id: Any


def live(now: datetime | None = None) -> Q:
    """Grants in force (at `now`, by default the present): not revoked, not expired."""
    at = timezone.now() if now is None else now
    return Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=at))


def _grants(principal: Principal, codename: str, now: datetime | None = None) -> list[QuerySet[Any]]:
    """The live grants of one permission that reach the principal: to its groups and to its user."""
    found: list[QuerySet[Any]] = [
        StudyGroupGrant.objects.filter(live(now), _reaching_groups(principal), permission__codename=codename)
    ]
    if principal.doctor is not None:
        found.append(StudyUserGrant.objects.filter(live(now), user_id=principal.user.pk, permission__codename=codename))
    return found


# --- the granted studies' ids as SQL written once per principal ----------------------------
# studies_visible_to runs on every page, API call, QIDO-RS and C-FIND. Its grant subqueries
# depend only on who the principal is (groups, pool seats, user) and on the present moment,
# so they are built and compiled by the ORM once per principal and kept (per process) with a
# stand-in for "now", which each use fills with the present (timezone.now(), as live() has it).

NOW_STAND_IN = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
_COMPILED: dict[tuple[Any, ...], list[tuple[str, list[Any], list[int]]]] = {}
_COMPILED_MAX = 4096  # principals kept per process; more and the cache starts again


def _principal_key(principal: Principal) -> tuple[Any, ...]:
    """Everything _grants reads of the principal."""
    if principal.doctor is None:
        return ("groups", tuple(principal.group_ids))
    seats = tuple(sorted(principal.pool_seats.values()))
    return ("doctor", principal.user.pk, principal.doctor.institution.group_id, seats)


def _granted_ids(principal: Principal, codename: str, now: datetime | None = None) -> list[Expression]:
    """The subqueries of _grants' study ids, as _SQL expressions with the present (or `now`)
    filled in."""
    db = StudyGroupGrant.objects.db
    key = (db, codename, *_principal_key(principal))
    compiled = _COMPILED.get(key)
    if compiled is None:
        connection = connections[db]
        stand_in = connection.ops.adapt_datetimefield_value(NOW_STAND_IN)
        compiled = []
        for grants in _grants(principal, codename, now=NOW_STAND_IN):
            sql, params = grants.values("content_object_id").query.get_compiler(using=db).as_sql()
            compiled.append((sql, list(params), [i for i, p in enumerate(params) if p == stand_in]))
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = compiled
    present = connections[db].ops.adapt_datetimefield_value(timezone.now() if now is None else now)
    found: list[Expression] = []
    for sql, params, at in compiled:
        filled = list(params)
        for index in at:
            filled[index] = present
        found.append(_SQL(sql, filled))
    return found


class _SQL(Expression):
    """A compiled subquery, "(SELECT ...)" as the ORM's Subquery writes it."""

    output_field = IntegerField()

    def __init__(self, sql: str, params: list[Any]) -> None:
        super().__init__()
        self.sql, self.params = sql, params

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        return f"({self.sql})", list(self.params)

    def get_group_by_cols(self) -> list[Any]:
        return []


def _reaching_groups(principal: Principal) -> Q:
    """Group grants that reach the principal: its institution's; and a pool's only when the
    doctor sat on the desk (Principal.pool_seats: a specialist, an active pool) when the case
    was sent (the grant's creation), so that joining a desk opens none of its earlier cases
    (issue #22): the rule consults.access applies to the cases themselves."""
    if principal.doctor is None:
        return Q(group_id__in=principal.group_ids)  # a device: its institution's, devices_only too
    # A doctor: never the grants made for the institution's devices only (imaging.routing).
    reaching = Q(group_id=principal.doctor.institution.group_id, devices_only=False)
    for group_id, since in principal.pool_seats.values():
        reaching |= Q(group_id=group_id, created_at__gte=since, devices_only=False)
    return reaching


def _owns(principal: Principal, study: StudyRef) -> bool:
    return principal.sees_own_institution and study.institution_id == principal.institution_id


def film_basis(link: Any) -> str:
    """The basis of what a film link's holder sees ("film:<id>"), for the audit trail."""
    return f"film:{link.pk}"


def studies_visible_to(principal: Principal, *, now: datetime | None = None) -> QuerySet[Study]:
    """`now`: the moment grants are judged at (by default the present; a caller keeping the query
    compiled passes NOW_STAND_IN and fills the present in at each use, see visibility_key)."""
    if principal.film is not None:
        return Study.objects.filter(film_links=principal.film.pk, deleted_at__isnull=True)
    if principal.institution_id is None:
        return Study.objects.none()
    visible = Q(institution_id=principal.institution_id) if principal.sees_own_institution else Q(pk__in=[])
    for ids in _granted_ids(principal, READ, now):
        visible |= Q(_PkAmong(ids))
    return Study.objects.filter(visible, deleted_at__isnull=True)  # a deleted study is gone for everyone


def visibility_key(principal: Principal) -> tuple[Any, ...] | None:
    """Everything studies_visible_to reads of the principal: at one moment, principals with equal
    keys get the same query, parameters included, so a caller may keep a query built on it,
    compiled with `now=NOW_STAND_IN`, and fill the present in where that stand-in is (the
    grants themselves are read by the query when it runs). None where no such key is kept: a
    film link's holder, and a principal of no institution (who sees nothing)."""
    if principal.film is not None or principal.institution_id is None:
        return None
    return (principal.institution_id, principal.sees_own_institution, *_principal_key(principal))


class _PkAmong(Func):
    """The study's pk is one of the ids a subquery selects (its grants' studies): an
    uncorrelated condition, evaluated once per query, that any further filter combines with.

    On PostgreSQL `id = ANY(ARRAY(subquery))`: the array is an InitPlan, so the condition is
    an index condition on the primary key and the planner can OR it with the own-institution
    arm as a BitmapOr (the (institution, study_date) index for a clinic's date range) rather
    than filtering every study of the range or region through a subplan
    (bench/RESULTS.md, "Region capacity"). Elsewhere (SQLite) the plain `id IN (subquery)`."""

    output_field = BooleanField()
    template = "%(expressions)s"
    arg_joiner = " IN "

    def __init__(self, ids: Expression) -> None:
        super().__init__(F("pk"), ids)

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return self.as_sql(
            compiler, connection, template="%(expressions)s)", arg_joiner=" = ANY(ARRAY", **extra_context
        )


def studies_visible_to_devices_of(institution: Institution) -> QuerySet[Study]:
    """What any DICOM device of the institution sees: what routing may send to its destinations."""
    return studies_visible_to(Principal(device=Device(institution=institution)))


def get_study_for(principal: Principal, study_uid: str) -> Study:
    """The study if the principal may see it; the same 404 whether it is missing or forbidden."""
    visible = studies_visible_to(principal).select_related("patient", "institution")
    study = visible.filter(study_uid=study_uid).first()
    if study is None:
        refuse(
            principal,
            "study",
            Study.objects.filter(study_uid=study_uid, deleted_at__isnull=True),
            study_uid,
            "patient_id",
        )
    return study


def patients_visible_to(principal: Principal) -> QuerySet[Patient]:
    """A patient is seen by whoever sees one of their studies (the FHIR Patient resource)."""
    return Patient.objects.filter(Exists(studies_visible_to(principal).filter(patient_id=OuterRef("pk"))))


def get_patient_for(principal: Principal, pk: Any) -> Patient:
    """The patient if the principal sees one of their studies; the same 404 otherwise."""
    if not str(pk).isdigit() or len(str(pk)) > 18:
        raise Http404("No such patient.")
    patient = patients_visible_to(principal).select_related("issuer").filter(pk=int(pk)).first()
    if patient is None:
        refuse(principal, "patient", Patient.objects.filter(pk=int(pk)), str(pk), "pk")
    return patient


def refuse(principal: Principal, audit_type: str, existing: QuerySet[Any], audit_id: str, patient: str) -> NoReturn:
    """The 404 of an object the principal may not see. When it exists (existing: one indexed
    lookup, made for a missing object too), the refusal is audited as a denied read of it; the
    answer is the same either way. patient is the lookup of the object's patient pk. The
    consults and referrals apps refuse theirs through this too."""
    found = existing.values_list("pk", patient).first()
    if found is not None:
        audit.denied(principal.actor, audit_type, audit_id, "" if found[1] is None else str(found[1]))
    raise Http404(f"No such {audit_type}.")


def basis_for(principal: Principal, study: StudyRef) -> str:
    """On what basis the principal sees this study, for the audit trail ("" when it does not)."""
    return bases_for(principal, [study])[study.pk]


def bases_for(principal: Principal, studies: Sequence[StudyRef]) -> dict[Any, str]:
    """basis_for over many studies at once (a list page, a QIDO-RS or C-FIND answer):
    study pk -> basis, "" when none. Own-institution studies need no query; the rest take
    one query per kind of grant (the user's own first)."""
    if principal.film is not None:
        return {s.pk: film_basis(principal.film) for s in studies}
    found = {s.pk: OWN_INSTITUTION for s in studies if _owns(principal, s)}
    if principal.institution_id is not None and len(found) < len({s.pk for s in studies}):
        for grants in reversed(_grants(principal, READ)):  # built only when a study is not its own
            missing = [s.pk for s in studies if s.pk not in found]
            if not missing:
                break
            for study_pk, basis in grants.filter(content_object_id__in=missing).values_list(
                "content_object_id", "basis"
            ):
                found.setdefault(study_pk, basis)
    return {s.pk: found.get(s.pk, "") for s in studies}


def may_write_study(principal: Principal, study: Study) -> bool:
    """Annotate or attach to a study: own institution (a doctor's), or a live grant with write."""
    if principal.doctor is None:
        return False
    if _owns(principal, study):
        return True
    return any(grants.filter(content_object=study).exists() for grants in _grants(principal, WRITE))


def may_mark_own_study(principal: Principal, study: StudyRef) -> bool:
    """A doctor of the institution that owns the study keeps key images and measurements on
    it (a reader from elsewhere does so through their consult: consults.access)."""
    return principal.doctor is not None and principal.is_clinical and _owns(principal, study)


def may_upload_to(principal: Principal, institution: Institution) -> bool:
    """Studies uploaded in the browser (or by STOW-RS) belong to the uploader's own
    institution, and only while its image store is switched on (C11)."""
    return (
        principal.doctor is not None
        and principal.institution_id == institution.pk
        and principal.is_clinical
        and IMAGE_STORE_MODULE in institution.modules
    )


def upload_institution_of(principal: Principal) -> Institution | None:
    """The institution the principal's uploads go to, or None when it may not upload."""
    institution = principal.institution
    if institution is None or not may_upload_to(principal, institution):
        return None
    return institution


def live_grants_of(basis: str) -> QuerySet[StudyGroupGrant]:
    """A case's live read grants to groups (its basis, "referral:12"), with their studies:
    what the case opens now, to whom and until when (for the case page's access list)."""
    return (
        StudyGroupGrant.objects.filter(live(), basis=basis, permission__codename=READ)
        .select_related("content_object__patient", "content_object__institution", "group__institution")
        .order_by("created_at", "pk")
    )


# --- break-glass ----------------------------------------------------------------------


def may_break_glass(principal: Principal) -> bool:
    """Emergency access is for doctors with a clinical role whose institution has the image store."""
    return principal.doctor is not None and principal.is_clinical and principal.has_module(IMAGE_STORE_MODULE)


def break_glass_studies_for(principal: Principal) -> QuerySet[Study]:
    """Studies the principal may open by breaking the glass: their alliance's, outside their own institution."""
    if not may_break_glass(principal) or principal.doctor is None:
        return Study.objects.none()
    institution = principal.doctor.institution
    return Study.objects.filter(institution__alliance_id=institution.alliance_id).exclude(institution_id=institution.pk)


def break_glass_reviews_for(principal: Principal) -> QuerySet[BreakGlassReview]:
    """Emergency accesses to the studies of the institution the principal administers."""
    if principal.doctor is None or not principal.has_role(Role.INSTITUTION_ADMIN):
        return BreakGlassReview.objects.none()
    return BreakGlassReview.objects.filter(owner_institution_id=principal.institution_id)


def may_review_break_glass(principal: Principal, review: BreakGlassReview) -> bool:
    return break_glass_reviews_for(principal).filter(pk=review.pk).exists()


def active_break_glass(principal: Principal, study: StudyRef) -> BreakGlassReview | None:
    """The emergency access through which the principal sees the study now (the red banner), if any."""
    kind, _sep, number = basis_for(principal, study).partition(":")
    if kind != "break-glass" or not number.isdigit():
        return None
    return BreakGlassReview.objects.filter(pk=int(number), user=principal.user).first()


# --- study maintenance ----------------------------------------------------------------


def may_delete_study(principal: Principal, study: Study) -> bool:
    """An admin of the institution that owns the study deletes it (soft, with a reason)."""
    return (
        principal.doctor is not None
        and principal.has_role(Role.INSTITUTION_ADMIN)
        and study.institution_id == principal.institution_id
        and study.deleted_at is None
    )


def may_move_series(principal: Principal, study: Study) -> bool:
    """An admin of the institution that owns the study moves a misfiled series out of it."""
    return (
        principal.doctor is not None
        and principal.has_role(Role.INSTITUTION_ADMIN)
        and study.institution_id == principal.institution_id
        and study.deleted_at is None
    )


def may_correct_patient(principal: Principal, patient: Patient) -> bool:
    """An admin of the institution that issued the Patient ID corrects its demographics (one issuer)."""
    return (
        principal.doctor is not None
        and principal.has_role(Role.INSTITUTION_ADMIN)
        and patient.issuer_id == principal.institution_id
    )


# --- modality worklist ------------------------------------------------------------------


def steps_visible_to(principal: Principal) -> QuerySet[ScheduledStep]:
    """An institution's worklist: its devices read it (MWL C-FIND), its clinicians see and keep
    it; nobody else, whatever grants they hold (an order is the institution's own business)."""
    if principal.institution_id is None or not principal.sees_own_institution:
        return ScheduledStep.objects.none()
    return ScheduledStep.objects.filter(institution_id=principal.institution_id)


def get_step_for(principal: Principal, pk: int) -> ScheduledStep:
    """The step if it is on the principal's worklist; the same 404 whether missing or not theirs."""
    step = steps_visible_to(principal).select_related("patient__issuer").filter(pk=pk).first()
    if step is None:
        refuse(principal, "scheduled_step", ScheduledStep.objects.filter(pk=pk), str(pk), "patient_id")
    return step


def may_schedule(principal: Principal) -> bool:
    """A clinician puts exams on their own institution's worklist, and takes them off, while its
    image store is switched on (C11)."""
    return principal.doctor is not None and principal.is_clinical and principal.has_module(IMAGE_STORE_MODULE)


def may_schedule_at(principal: Principal, institution: Institution) -> bool:
    """An order that names the institution to perform it (FHIR ServiceRequest.performer) is
    taken as the REST API takes one: from a clinician who may schedule, for their own institution."""
    return may_schedule(principal) and principal.institution_id == institution.pk

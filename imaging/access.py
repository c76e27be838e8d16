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
from typing import Any, NoReturn, Protocol

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from alliance import audit
from alliance.access import Principal
from alliance.models import Institution, PoolMembership, Role
from imaging.models import BreakGlassReview, Patient, Study, StudyGroupGrant, StudyUserGrant

READ = "read_study"
WRITE = "change_study"
IMAGE_STORE_MODULE = "image_store"
OWN_INSTITUTION = "own-institution"


class StudyRef(Protocol):
    """What a decision needs of a study: a Study row, or a light stand-in for one."""

    pk: Any
    institution_id: Any


def live() -> Q:
    """Grants in force: not revoked, not expired."""
    return Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))


def _grants(principal: Principal, codename: str) -> list[QuerySet[Any]]:
    """The live grants of one permission that reach the principal: to its groups and to its user."""
    found: list[QuerySet[Any]] = [
        StudyGroupGrant.objects.filter(live(), _reaching_groups(principal), permission__codename=codename)
    ]
    if principal.doctor is not None:
        found.append(StudyUserGrant.objects.filter(live(), user_id=principal.user.pk, permission__codename=codename))
    return found


def _reaching_groups(principal: Principal) -> Q:
    """Group grants that reach the principal: its institution's; and a pool's only when the
    doctor was already a member when the case was sent (the grant's creation), so that joining
    a desk opens none of its earlier cases (issue #22)."""
    if principal.doctor is None:
        return Q(group_id__in=principal.group_ids)
    seated = PoolMembership.objects.filter(
        doctor_id=principal.doctor.pk,
        pool__active=True,
        pool__group_id=OuterRef("group_id"),
        since__lte=OuterRef("created_at"),
    )
    return Q(group_id=principal.doctor.institution.group_id) | Q(Exists(seated))


def _owns(principal: Principal, study: StudyRef) -> bool:
    return principal.sees_own_institution and study.institution_id == principal.institution_id


def film_basis(link: Any) -> str:
    """The basis of what a film link's holder sees ("film:<id>"), for the audit trail."""
    return f"film:{link.pk}"


def studies_visible_to(principal: Principal) -> QuerySet[Study]:
    if principal.film is not None:
        return Study.objects.filter(film_links=principal.film.pk, deleted_at__isnull=True)
    if principal.institution_id is None:
        return Study.objects.none()
    visible = Q(institution_id=principal.institution_id) if principal.sees_own_institution else Q(pk__in=[])
    for grants in _grants(principal, READ):
        visible |= Q(Exists(grants.filter(content_object=OuterRef("pk"))))
    return Study.objects.filter(visible, deleted_at__isnull=True)  # a deleted study is gone for everyone


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
    if principal.institution_id is not None:
        for grants in reversed(_grants(principal, READ)):
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

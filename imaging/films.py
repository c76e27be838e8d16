"""Cloud film (C8): a patient's link to their studies and report, on the phone.

A link is found by a random handle (the QR code, 256 bits) or a short code to type (50
bits); the database keeps only their SHA-256 hashes, and the PIN only as a password hash.
They are derived from a random per-link seed under a server key (HMAC-SHA256 of
SECRET_KEY), so that the institution can print the slip again, and a signed report PDF
made later can carry its QR, without the database alone being enough to open a link.

Before its check (date of birth or PIN) a link shows nothing about the patient. Wrong
answers are counted per link and per network address: at FILM_ATTEMPT_LIMIT the link (or
the address) is locked for FILM_LOCK_MINUTES, audited. After the check, the holder's browser
gets a short session bound to that one link (imaging.film_session); through it the holder
is a Principal.for_film, which imaging.access lets see that link's studies only.

Every decision about links is here (may_make_film, links_visible_to, is_usable...);
the services are keyword-only, atomic, one audit call each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal, settings_of
from alliance.models import AuditEvent, Doctor, Institution, Role
from imaging import access
from imaging.models import FilmAttemptSource, FilmLink, FilmSaving, Study

MODULE = "cloud_film"
SHARE_DAYS = (1, 7)
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32: no I, L, O, U
CODE_LENGTH = 10
_CODE_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def attempt_limit() -> int:
    return int(settings.FILM_ATTEMPT_LIMIT)


def lock_time() -> timedelta:
    return timedelta(minutes=int(settings.FILM_LOCK_MINUTES))


# --- handles, codes and PINs ------------------------------------------------------------


def _derive(seed: str, purpose: str) -> bytes:
    key = hashlib.sha256(f"imaging.films:{settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, f"{purpose}:{seed}".encode(), hashlib.sha256).digest()


def handle_of(link: FilmLink) -> str:
    return base64.urlsafe_b64encode(_derive(link.seed, "handle")).rstrip(b"=").decode()


def code_of(link: FilmLink) -> str:
    return "".join(CODE_ALPHABET[b % 32] for b in _derive(link.seed, "code")[:CODE_LENGTH])


def pin_of(link: FilmLink) -> str:
    return f"{int.from_bytes(_derive(link.seed, 'pin')[:8], 'big') % 1_000_000:06d}"


def spaced_code(code: str) -> str:
    """ABCDE-FGHJK: easier to read out and to type."""
    return f"{code[:5]}-{code[5:]}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normal_key(key: str) -> str:
    """A handle as it is; a typed code in upper case, without spaces or dashes, O read as 0."""
    if len(key) > CODE_LENGTH + 4:
        return key
    return "".join(c for c in key.upper() if c.isalnum()).translate(_CODE_READS_AS)


def find_link(key: str) -> FilmLink | None:
    """The link of a handle or a code, whatever its state (callers decide with is_usable)."""
    key = normal_key(key)
    if not key or len(key) > 64:
        return None
    digest = _digest(key)
    return (
        FilmLink.objects.select_related("institution__alliance", "patient", "parent")
        .filter(Q(handle_hash=digest) | Q(code_hash=digest))
        .first()
    )


def key_matches(link: FilmLink, key: str) -> bool:
    digest = _digest(normal_key(key))
    return hmac.compare_digest(digest, link.handle_hash) or hmac.compare_digest(digest, link.code_hash)


@dataclass(frozen=True)
class Issued:
    """A link as its maker sees it once: the URL of the QR code, the code, the PIN."""

    link: FilmLink
    handle: str
    code: str
    pin: str

    @property
    def path(self) -> str:
        return reverse("films:home", args=[self.handle])

    @property
    def url(self) -> str:
        return settings.SITE_URL + self.path

    @property
    def code_display(self) -> str:
        return spaced_code(self.code)


def issued(link: FilmLink) -> Issued:
    return Issued(link, handle_of(link), code_of(link), pin_of(link) if link.verify == FilmLink.Verify.PIN else "")


# --- cases: the studies of a finished consult or referral --------------------------------


@dataclass(frozen=True)
class FilmReport:
    """A signed report as the patient reads it: text sections and its PDF."""

    title: str
    sections: list[tuple[str, str]]
    signed_by: str
    signed_by_institution: str
    signed_at: datetime | None
    pdf: Callable[[], bytes] = field(repr=False, compare=False)


@dataclass(frozen=True)
class FilmCase:
    studies: list[Study]
    reports: list[FilmReport]


class CaseKind(Protocol):
    """What an app that owns cases (consults, referrals) hands to cloud film."""

    def finished_case(self, case_id: int, principal: Principal | None) -> FilmCase | None:
        """The studies and signed reports of a finished case the principal may see (None:
        no such case, not finished, or not theirs; principal None: for the link's holder)."""

    def reports_on(self, studies: Sequence[Study]) -> list[FilmReport]:
        """Signed reports of finished cases on these studies (for a link made for a study)."""


_CASE_KINDS: dict[str, CaseKind] = {}


def register_case_kind(kind: str, resolver: CaseKind) -> None:
    """Called from the owning app's AppConfig.ready(): imaging never imports it."""
    _CASE_KINDS[kind] = resolver


def case_kinds() -> list[str]:
    return sorted(_CASE_KINDS)


def _case(case: str, principal: Principal | None) -> FilmCase | None:
    kind, _sep, case_id = case.partition(":")
    resolver = _CASE_KINDS.get(kind)
    if resolver is None or not case_id.isdigit():
        return None
    return resolver.finished_case(int(case_id), principal)


def reports_of(link: FilmLink, studies: Sequence[Study]) -> list[FilmReport]:
    """The signed reports the link's holder reads: its case's, or those on its studies."""
    if link.case:
        found = _case(link.case, None)
        return found.reports if found is not None else []
    return [report for resolver in _CASE_KINDS.values() for report in resolver.reports_on(studies)]


# --- decisions ---------------------------------------------------------------------------


def module_on(institution: Institution) -> bool:
    return institution.active and MODULE in institution.modules


def may_make_film(principal: Principal, study: Study) -> bool:
    """A clinician of the study's institution, with cloud film switched on there."""
    institution = principal.institution
    return (
        principal.doctor is not None
        and principal.is_clinical
        and institution is not None
        and module_on(institution)
        and study.institution_id == institution.pk
    )


def may_make_case_film(principal: Principal) -> bool:
    """A finished case's link is made by a clinician whose institution has cloud film."""
    institution = principal.institution
    return principal.doctor is not None and principal.is_clinical and institution is not None and module_on(institution)


def links_visible_to(principal: Principal) -> QuerySet[FilmLink]:
    """The links of the principal's institution, while cloud film is on there."""
    institution = principal.institution
    if principal.doctor is None or not principal.is_clinical or institution is None or not module_on(institution):
        return FilmLink.objects.none()
    return FilmLink.objects.filter(institution_id=institution.pk)


def get_link_for(principal: Principal, pk: Any) -> FilmLink:
    if not str(pk).isdigit():
        raise Http404("No such film link.")
    link = links_visible_to(principal).filter(pk=pk).first()
    if link is None:
        access.refuse(principal, "film", FilmLink.objects.filter(pk=pk), str(pk), "patient_id")
    return link


def is_usable(link: FilmLink, now: datetime | None = None) -> bool:
    """Not revoked, not expired, openings left, cloud film on at its institution; a share
    link also needs the patient's link it came from to be usable."""
    now = now or timezone.now()
    if link.revoked_at is not None or link.expires_at <= now or not module_on(link.institution):
        return False
    if link.max_openings and link.openings >= link.max_openings:
        return False
    return link.parent is None or is_usable(link.parent, now)


def is_open_for_session(link: FilmLink, now: datetime | None = None) -> bool:
    """A verified session stays usable while the link is (the opening it took is not re-counted)."""
    now = now or timezone.now()
    if link.revoked_at is not None or link.expires_at <= now or not module_on(link.institution):
        return False
    return link.parent is None or is_open_for_session(link.parent, now)


def may_share(link: FilmLink) -> bool:
    """Only the patient's own link makes share links (a share is not shared further)."""
    return link.kind == FilmLink.Kind.PATIENT


def shares_of(link: FilmLink) -> QuerySet[FilmLink]:
    return link.shares.filter(kind=FilmLink.Kind.SHARE).order_by("-created_at")


# --- services ----------------------------------------------------------------------------


def _new_link(**fields: Any) -> Issued:
    link = FilmLink(seed=secrets.token_hex(16), **fields)
    made = issued(link)
    link.handle_hash = _digest(made.handle)
    link.code_hash = _digest(made.code)
    link.pin_hash = make_password(made.pin) if made.pin else ""
    link.save()
    return Issued(link, made.handle, made.code, made.pin)


def _patient_of(studies: Sequence[Study]) -> Any:
    patients = {s.patient_id for s in studies}
    if len(patients) != 1:
        raise ValidationError(_("A film link is for the studies of one patient."))
    return studies[0].patient


def _options(institution: Institution, expires_in_days: int | None, verify: str | None) -> dict[str, Any]:
    knobs = settings_of(institution.alliance_id)
    days = expires_in_days or knobs.film_expiry_days
    if not 1 <= days <= 3650:
        raise ValidationError({"expires_in_days": _("A film link lasts 1 to 3650 days.")})
    verify = verify or knobs.film_check
    if verify not in FilmLink.Verify.values:
        raise ValidationError({"verify": _("Check by date of birth (dob) or PIN (pin).")})
    return {
        "expires_at": timezone.now() + timedelta(days=days),
        "verify": verify,
        "max_openings": knobs.film_max_openings,
    }


@transaction.atomic
def film_create(
    *,
    studies: Sequence[Study],
    by: Principal,
    case: str = "",
    expires_in_days: int | None = None,
    verify: str | None = None,
) -> Issued:
    """A patient's link to these studies (of one patient), made by a clinician of their institution."""
    if not studies:
        raise ValidationError(_("Choose a study."))
    if case:
        if not may_make_case_film(by):
            raise AccessDenied(_("Cloud film is not switched on for your institution."))
    elif not all(may_make_film(by, s) for s in studies):
        raise AccessDenied(_("You may make film links for your own institution's studies only."))
    institution = by.institution
    assert institution is not None  # checked above
    patient = _patient_of(studies)
    if verify == FilmLink.Verify.BIRTH_DATE and patient.birth_date is None:
        raise ValidationError({"verify": _("The patient's birth date is not known: use a PIN.")})
    options = _options(institution, expires_in_days, verify)
    if options["verify"] == FilmLink.Verify.BIRTH_DATE and patient.birth_date is None:
        options["verify"] = FilmLink.Verify.PIN
    made = _new_link(
        kind=FilmLink.Kind.PATIENT,
        patient=patient,
        case=case,
        institution=institution,
        created_by=by.user if by.doctor is not None else None,
        **options,
    )
    made.link.studies.set(studies)
    _record(by.actor, "film.create", made.link, studies=[s.study_uid for s in studies], case=case)
    return made


@transaction.atomic
def film_create_for_case(
    *, case: str, by: Principal, expires_in_days: int | None = None, verify: str | None = None
) -> Issued:
    """A link to the studies of a finished case the clinician may see ("consult:12")."""
    found = _case(case, by)
    if found is None or not found.studies:
        raise ValidationError(_("No finished case %(case)s of yours.") % {"case": case})
    return film_create(studies=found.studies, by=by, case=case, expires_in_days=expires_in_days, verify=verify)


@transaction.atomic
def film_on_sign(*, case: str, studies: Sequence[Study], institution: Institution, by: audit.Actor) -> Issued | None:
    """The link a signed report makes for its patient (alliance setting film_on_sign), made for
    the institution that asked for the reading; None when switched off, or one exists."""
    if not studies or not module_on(institution) or not settings_of(institution.alliance_id).film_on_sign:
        return None
    if len({s.patient_id for s in studies}) != 1:
        return None
    existing = FilmLink.objects.filter(case=case, kind=FilmLink.Kind.PATIENT, revoked_at__isnull=True).first()
    if existing is not None:
        return None
    options = _options(institution, None, None)
    patient = studies[0].patient
    if options["verify"] == FilmLink.Verify.BIRTH_DATE and patient.birth_date is None:
        options["verify"] = FilmLink.Verify.PIN
    made = _new_link(kind=FilmLink.Kind.PATIENT, patient=patient, case=case, institution=institution, **options)
    made.link.studies.set(studies)
    _record(by, "film.create", made.link, studies=[s.study_uid for s in studies], case=case, on_sign=True)
    return made


def case_link(case: str) -> Issued | None:
    """The live patient's link made for a case, as its QR shows (for the report PDF)."""
    link = (
        FilmLink.objects.select_related("institution", "parent")
        .filter(case=case, kind=FilmLink.Kind.PATIENT, revoked_at__isnull=True)
        .order_by("-created_at")
        .first()
    )
    return issued(link) if link is not None and is_usable(link) else None


@transaction.atomic
def film_revoke(*, link: FilmLink, by: audit.Actor, source: str = "") -> FilmLink:
    link = FilmLink.objects.select_for_update().get(pk=link.pk)
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
        _record(by, "film.revoke", link, source=source)
    return link


@transaction.atomic
def film_share(*, parent: FilmLink, days: int, source: str = "") -> Issued:
    """A share link for another doctor, made by the patient from their link: 1 to 7 days
    (never beyond the patient's link), checked by a PIN the patient's phone shows."""
    if not may_share(parent) or not is_open_for_session(parent):
        raise AccessDenied(_("This link cannot be shared."))
    if not SHARE_DAYS[0] <= days <= SHARE_DAYS[1]:
        raise ValidationError({"days": _("A share lasts 1 to 7 days.")})
    made = _new_link(
        kind=FilmLink.Kind.SHARE,
        verify=FilmLink.Verify.PIN,
        patient=parent.patient,
        case=parent.case,
        parent=parent,
        institution=parent.institution,
        expires_at=min(timezone.now() + timedelta(days=days), parent.expires_at),
    )
    made.link.studies.set(parent.studies.all())
    _record(parent.actor, "film.share", made.link, source=source, parent=parent.pk, days=days)
    return made


class Verified(Enum):
    OPENED = "opened"
    WRONG = "wrong"
    LOCKED = "locked"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Verification:
    outcome: Verified
    link: FilmLink | None = None
    tries_left: int = 0


def _answer_ok(link: FilmLink, answer: str) -> bool:
    if link.verify == FilmLink.Verify.PIN:
        digits = "".join(c for c in answer if c.isdigit())
        return len(digits) == 6 and check_password(digits, link.pin_hash)
    try:
        given = date.fromisoformat(answer.strip())
    except ValueError:
        return False
    return link.patient.birth_date is not None and given == link.patient.birth_date


def _source_locked(source: str, now: datetime) -> bool:
    row = FilmAttemptSource.objects.filter(source=source).first()
    return row is not None and row.locked_until is not None and row.locked_until > now


def _count_source_failure(source: str, now: datetime) -> bool:
    """One more wrong answer (or unknown link) from this address; True when that locks it."""
    row, _created = FilmAttemptSource.objects.select_for_update().get_or_create(source=source[:255])
    if row.last_failure_at is not None and row.last_failure_at < now - lock_time():
        row.failed_attempts = 0
    row.failed_attempts += 1
    row.last_failure_at = now
    locked = row.failed_attempts >= attempt_limit()
    if locked:
        row.locked_until, row.failed_attempts = now + lock_time(), 0
    row.save()
    return locked


@transaction.atomic
def film_verify(*, key: str, answer: str, source: str) -> Verification:
    """Check the answer for the link of this key; on success count the opening."""
    now = timezone.now()
    if _source_locked(source, now):
        _record_attempt(None, source, "film.locked", AuditEvent.Outcome.DENIED, scope="source")
        return Verification(Verified.LOCKED)
    found = find_link(key)
    if found is None or not is_usable(found, now):
        if _count_source_failure(source, now):
            _record_attempt(None, source, "film.locked", AuditEvent.Outcome.DENIED, scope="source")
        return Verification(Verified.UNAVAILABLE)
    link = (
        FilmLink.objects.select_for_update(of=("self",))
        .select_related("institution__alliance", "patient", "parent")
        .get(pk=found.pk)
    )
    if link.locked_until is not None and link.locked_until > now:
        _record_attempt(link, source, "film.locked", AuditEvent.Outcome.DENIED, scope="link")
        return Verification(Verified.LOCKED, link)
    if not _answer_ok(link, answer):
        return _wrong(link, source, now)
    link.failed_attempts, link.locked_until = 0, None
    link.openings += 1
    link.last_opened_at = now
    link.save(update_fields=["failed_attempts", "locked_until", "openings", "last_opened_at"])
    studies = list(link.studies.filter(deleted_at__isnull=True))
    saved = _count_savings(link, studies, now)
    _record(link.actor, "film.open", link, source=source, studies=[s.study_uid for s in studies], saved=saved)
    return Verification(Verified.OPENED, link)


def _wrong(link: FilmLink, source: str, now: datetime) -> Verification:
    link.failed_attempts += 1
    locked = link.failed_attempts >= attempt_limit()
    if locked:
        link.locked_until, link.failed_attempts = now + lock_time(), 0
    link.save(update_fields=["failed_attempts", "locked_until"])
    source_locked = _count_source_failure(source, now)
    if locked or source_locked:
        _record_attempt(link, source, "film.locked", AuditEvent.Outcome.DENIED, scope="link" if locked else "source")
        return Verification(Verified.LOCKED, link)
    _record_attempt(link, source, "film.verify", AuditEvent.Outcome.FAILURE)
    return Verification(Verified.WRONG, link, attempt_limit() - link.failed_attempts)


def _record_attempt(link: FilmLink | None, source: str, action: str, outcome: str, **detail: Any) -> None:
    audit.record(
        actor=link.actor if link is not None else audit.ANONYMOUS,
        action=action,
        object_type="film",
        object_id=link.pk if link is not None else "",
        patient=str(link.patient_id) if link is not None else "",
        source=source,
        outcome=outcome,
        detail=detail or None,
    )


def _record(actor: audit.Actor, action: str, link: FilmLink, source: str = "", **detail: Any) -> None:
    audit.record(
        actor=actor,
        action=action,
        object_type="film",
        object_id=link.pk,
        patient=str(link.patient_id),
        basis=link.case,
        source=source,
        detail={"kind": link.kind, **detail},
    )


# --- reads through a link (audited with the link as the actor) ---------------------------


def record_read(*, link: FilmLink, action: str, studies: Sequence[Study], source: str, **detail: Any) -> None:
    """One event per read through a link (a page, the report, a download), naming its studies."""
    first = studies[0] if len(studies) == 1 else None
    audit.record(
        actor=link.actor,
        action=action,
        object_type="study" if first else "film",
        object_id=first.study_uid if first else link.pk,
        patient=str(link.patient_id),
        basis=access.film_basis(link),
        source=source,
        detail={"studies": [s.study_uid for s in studies], **detail},
    )


# --- film saved ----------------------------------------------------------------------------


def sheets_of(study: Study, sheets: dict[str, int]) -> int:
    return sum(int(sheets.get(m.upper(), 0)) for m in study.modality_list)


def _count_savings(link: FilmLink, studies: Sequence[Study], now: datetime) -> int:
    """Film not printed: each study of the patient's own link, counted once ever."""
    if link.kind != FilmLink.Kind.PATIENT:
        return 0
    knobs = settings_of(link.institution.alliance_id)
    counted = set(FilmSaving.objects.filter(study__in=studies).values_list("study_id", flat=True))
    rows = [
        FilmSaving(
            study=s,
            institution_id=s.institution_id,
            link=link,
            sheets=sheets_of(s, knobs.film_sheets),
            cost=Decimal(sheets_of(s, knobs.film_sheets)) * knobs.film_sheet_cost,
            counted_at=now,
        )
        for s in studies
        if s.pk not in counted
    ]
    FilmSaving.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def film_savings(institution_ids: Sequence[int], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Sheets and yuan saved per month in [start, end), newest month first, for these
    institutions (the institution admin's home; the figures page)."""
    rows = (
        FilmSaving.objects.filter(institution_id__in=institution_ids, counted_at__gte=start, counted_at__lt=end)
        .annotate(month=TruncMonth("counted_at"))
        .values("month")
        .annotate(studies=Count("pk"), sheets=Sum("sheets"), yuan=Sum("cost"))
        .order_by("-month")
    )
    return [
        {"month": r["month"], "studies": r["studies"], "sheets": r["sheets"] or 0, "yuan": r["yuan"] or Decimal(0)}
        for r in rows
    ]


# --- who looked at my images ----------------------------------------------------------------

LOOKED_ACTIONS = (
    "study.view",
    "film.open",
    "film.report",
    "film.download",
    "consult.view",
    "consult.report_pdf",
    "dicomweb.retrieve",
    "dicomweb.metadata",
    "dicomweb.frames",
    "dicomweb.rendered",
)


@dataclass
class Look:
    when: datetime
    who: str
    institution: str
    role: str
    why: str
    yours: bool


def basis_words(basis: str, link: FilmLink) -> str:
    """A grant basis in plain words for the patient."""
    kind, _sep, rest = basis.partition(":")
    if basis == access.OWN_INSTITUTION:
        return _("Your care at this hospital")
    if kind == "consult":
        return _("A remote consultation: a specialist read your images")
    if kind == "referral":
        return _("A referral to another hospital")
    if kind.startswith("break") or kind == "emergency":
        return _("Emergency access (break-glass), reviewed afterwards")
    if kind == "film":
        return _("Through your film link") if rest == str(link.pk) else _("Through a link you shared with a doctor")
    return _("Access on record")


def who_looked(link: FilmLink, limit: int = 200) -> list[Look]:
    """Every opening of this patient's studies in the audit trail, newest first; repeats of
    one actor on one basis within an hour are one look."""
    events = list(
        AuditEvent.objects.filter(
            patient=str(link.patient_id), action__in=LOOKED_ACTIONS, outcome=AuditEvent.Outcome.SUCCESS
        )
        .exclude(actor_type="system")
        .order_by("-time", "-id")[: limit * 5]
    )
    knobs = settings_of(link.institution.alliance_id)
    doctors = _doctors_of(events)
    names = dict(Institution.objects.filter(pk__in={e.actor_institution_id for e in events}).values_list("pk", "name"))
    own_links = {str(link.pk), *[str(pk) for pk in link.shares.values_list("pk", flat=True)]}
    if link.parent_id:
        own_links.add(str(link.parent_id))
    looks: list[Look] = []
    last: dict[tuple[str, str, str], datetime] = {}
    for event in events:
        # A link's holder is one looker whatever the event's basis (its opening names the case).
        key = (event.actor_type, event.actor_id, "" if event.actor_type == "share" else event.basis)
        if key in last and last[key] - event.time < timedelta(hours=1):
            continue
        last[key] = event.time
        looks.append(_look(event, link, doctors, names, own_links, knobs.film_show_doctor_names))
        if len(looks) >= limit:
            break
    return looks


def _doctors_of(events: Sequence[AuditEvent]) -> dict[str, Doctor]:
    ids = {int(e.actor_id) for e in events if e.actor_type == "user" and e.actor_id.isdigit()}
    return {str(d.user_id): d for d in Doctor.objects.filter(user_id__in=ids).select_related("user")}


def _look(
    event: AuditEvent,
    link: FilmLink,
    doctors: dict[str, Doctor],
    names: dict[int, str],
    own_links: set[str],
    show_names: bool,
) -> Look:
    institution = names.get(event.actor_institution_id or 0, "")
    if event.actor_type == "share":
        kind = event.actor_name.partition(":")[2]
        is_share = kind == FilmLink.Kind.SHARE
        who = _("A doctor you shared your images with") if is_share else _("You, with your film link")
        why = _("Through a link you shared with a doctor") if is_share else _("Through your film link")
        return Look(event.time, who, "" if is_share else institution, "", why, not is_share)
    doctor = doctors.get(event.actor_id)
    role = _role_words(doctor)
    who = doctor.display_name if doctor is not None and show_names else _("A doctor")
    if event.actor_type == "device":
        who, role = _("A DICOM device"), ""
    return Look(event.time, who, institution, role, basis_words(event.basis, link), False)


def _role_words(doctor: Doctor | None) -> str:
    if doctor is None:
        return ""
    for role in (Role.SPECIALIST, Role.CLINICIAN, Role.INSTITUTION_ADMIN, Role.ALLIANCE_ADMIN):
        if doctor.has_role(role):
            return str(role.label)
    return ""


@transaction.atomic
def note_unavailable(*, source: str) -> None:
    """An unknown, expired or revoked link was asked for: it counts against the address as a
    wrong answer does (guessing codes is guessing answers)."""
    if _count_source_failure(source, timezone.now()):
        _record_attempt(None, source, "film.locked", AuditEvent.Outcome.DENIED, scope="source")

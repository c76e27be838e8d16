"""Writes of the screening programme. Every function is keyword-only, runs in one transaction,
checks consults.screening.access, writes one audit event and leaves e-mail and the DICOM SR to
transaction.on_commit. Scans are opened to the reading pool only through imaging.grants.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal, institution_admins_of, settings_of
from alliance.models import Doctor, Institution, Pool
from alliance.reauth import confirm_identity
from consults.screening import access, lungrads
from consults.screening.models import (
    Consent,
    Lobe,
    Nodule,
    Participant,
    Programme,
    Reading,
    Round,
    ScreeningNotification,
)
from imaging import grants
from imaging.access import studies_visible_to
from imaging.models import Patient, Series, Study
from imaging.patients import linked_patient_ids, register_patient

MAX_NODULES = 20
MAX_AXIS_MM = Decimal("300")


def _now() -> datetime:
    return timezone.now()


def _doctor(by: Principal) -> Doctor:
    if by.doctor is None:
        raise AccessDenied(_("Only a doctor may do this."))
    return by.doctor


def _audit(by: audit.Actor, action: str, participant: Participant | None, **detail: Any) -> None:
    audit.record(
        actor=by,
        action=action,
        object_type=Participant.audit_type if participant is not None else "screening-programme",
        object_id=participant.pk if participant is not None else detail.pop("programme", ""),
        patient=str(participant.patient_id) if participant is not None else "",
        basis=participant.basis if participant is not None else "",
        detail=detail,
    )


# --- programmes (the alliance admin) --------------------------------------------------------


def _programme_fields(
    by: Principal, name: str, reading_pool: Pool | None, institutions: Iterable[Institution], window_days: int
) -> tuple[str, Pool, list[Institution]]:
    alliance_id = _doctor(by).institution.alliance_id
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": _("Give the programme a name.")})
    if reading_pool is None or reading_pool.institution.alliance_id != alliance_id or not reading_pool.active:
        raise ValidationError({"reading_pool": _("Choose an active specialist pool of the alliance.")})
    clinics = list(institutions)
    if not clinics:
        raise ValidationError({"institutions": _("Choose at least one participating institution.")})
    if any(i.alliance_id != alliance_id for i in clinics):
        raise ValidationError({"institutions": _("Only institutions of the alliance may take part.")})
    if not 1 <= int(window_days) <= 365:
        raise ValidationError({"window_days": _("The window is 1 to 365 days.")})
    return name, reading_pool, clinics


@transaction.atomic
def programme_create(
    *,
    by: Principal,
    name: str,
    reading_pool: Pool | None,
    institutions: Iterable[Institution],
    description: str = "",
    window_days: int = 30,
    active: bool = True,
) -> Programme:
    if not access.may_manage_programmes(by):
        raise AccessDenied(_("Only the alliance admin creates screening programmes."))
    name, pool, clinics = _programme_fields(by, name, reading_pool, institutions, window_days)
    alliance_id = _doctor(by).institution.alliance_id
    if Programme.objects.filter(alliance_id=alliance_id, name=name).exists():
        raise ValidationError({"name": _("The alliance has a programme of this name already.")})
    programme = Programme.objects.create(
        alliance_id=alliance_id,
        name=name,
        description=(description or "").strip(),
        reading_pool=pool,
        window_days=window_days,
        active=active,
        created_by=_doctor(by),
    )
    programme.institutions.set(clinics)
    _audit(by.actor, "screening.programme.create", None, programme=programme.pk, institutions=[i.pk for i in clinics])
    return programme


@transaction.atomic
def programme_update(
    *,
    programme: Programme,
    by: Principal,
    name: str,
    reading_pool: Pool | None,
    institutions: Iterable[Institution],
    description: str = "",
    window_days: int = 30,
    active: bool = True,
) -> Programme:
    if not access.programmes_managed_by(by).filter(pk=programme.pk).exists():
        raise AccessDenied(_("Only the alliance admin changes screening programmes."))
    name, pool, clinics = _programme_fields(by, name, reading_pool, institutions, window_days)
    if Programme.objects.filter(alliance_id=programme.alliance_id, name=name).exclude(pk=programme.pk).exists():
        raise ValidationError({"name": _("The alliance has a programme of this name already.")})
    programme.name, programme.description, programme.reading_pool = name, (description or "").strip(), pool
    programme.window_days, programme.active = window_days, active
    programme.save()
    programme.institutions.set(clinics)
    _audit(by.actor, "screening.programme.update", None, programme=programme.pk, institutions=[i.pk for i in clinics])
    return programme


# --- enrolment (the clinic) ------------------------------------------------------------------


def _enrolled_patient(by: Principal, patient: Patient | None, patient_data: dict[str, Any] | None) -> Patient:
    """The clinic's own patient (the clinic is the issuer of the ID), or one registered from the form."""
    institution = _doctor(by).institution
    if patient is not None:
        if patient.issuer_id != institution.pk:
            raise ValidationError({"patient_id": _("Enrol a patient by your institution's own patient ID.")})
        return patient
    if not patient_data:
        raise ValidationError({"patient_id": _("Give the patient's ID.")})
    return register_patient(issuer=institution, by=by.actor, **patient_data)


def _consent(consent_by: str, consent_at: Any, method: str) -> tuple[str, datetime]:
    consent_by = (consent_by or "").strip()
    if not consent_by:
        raise ValidationError({"consent_by": _("Say who gave consent (the participant or their representative).")})
    if method not in Consent.values:
        raise ValidationError({"consent_method": _("Say how consent was given.")})
    if not isinstance(consent_at, datetime):
        raise ValidationError({"consent_at": _("Give the date and time consent was given.")})
    if consent_at > _now() + timedelta(minutes=5):
        raise ValidationError({"consent_at": _("Consent cannot be given in the future.")})
    return consent_by[:200], consent_at


@transaction.atomic
def participant_enrol(
    *,
    by: Principal,
    programme: Programme,
    consent_by: str,
    consent_at: Any,
    consent_method: str,
    consent_note: str = "",
    patient: Patient | None = None,
    patient_data: dict[str, Any] | None = None,
    baseline_due: date | None = None,
) -> Participant:
    """Enrol a patient of the doctor's clinic with their recorded consent; the baseline CT is due
    on baseline_due (today when not given)."""
    if not access.may_enrol(by, programme):
        raise AccessDenied(_("Only a doctor of a participating clinic enrols, while the programme is open."))
    consent_by, consent_at = _consent(consent_by, consent_at, consent_method)
    the_patient = _enrolled_patient(by, patient, patient_data)
    if Participant.objects.filter(programme=programme, patient=the_patient).exists():
        raise ValidationError({"patient_id": _("This patient is enrolled in the programme already.")})
    now = _now()
    today = timezone.localdate(now)
    due = baseline_due or today
    if due < today:
        raise ValidationError({"baseline_due": _("The baseline CT cannot be due in the past.")})
    participant = Participant.objects.create(
        programme=programme,
        patient=the_patient,
        institution=_doctor(by).institution,
        enrolled_by=_doctor(by),
        enrolled_at=now,
        consent_by=consent_by,
        consent_at=consent_at,
        consent_method=consent_method,
        consent_note=(consent_note or "").strip(),
    )
    Round.objects.create(
        participant=participant,
        number=1,
        kind=Round.Kind.BASELINE,
        due_date=due,
        window_start=today - timedelta(days=programme.window_days),
        opened_at=now,
    )
    _audit(by.actor, "screening.enrol", participant, consent_method=consent_method, due=due.isoformat())
    return participant


def _locked_round(round_: Round) -> Round:
    return Round.objects.select_for_update(of=("self",)).select_related("participant__programme").get(pk=round_.pk)


@transaction.atomic
def round_invite(*, round_: Round, by: Principal, note: str = "") -> Round:
    """Record that the clinic invited the participant for this round's CT (how, in the note)."""
    round_ = _locked_round(round_)
    participant = round_.participant
    if not access.may_follow_up(by, participant):
        raise AccessDenied(_("Only the participant's clinic invites them."))
    if not round_.is_open:
        raise ValidationError({"round": _("This CT is done or cancelled.")})
    round_.invited_at, round_.invited_by = _now(), _doctor(by)
    round_.invitation_note = (note or "").strip()[:200]
    round_.save(update_fields=["invited_at", "invited_by", "invitation_note"])
    _audit(by.actor, "screening.invite", participant, round=round_.number, note=round_.invitation_note)
    return round_


@transaction.atomic
def participant_withdraw(*, participant: Participant, by: Principal, reason: str) -> Participant:
    """The participant leaves the programme: their open round is cancelled; nothing is deleted."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    if not access.may_follow_up(by, participant):
        raise AccessDenied(_("Only the participant's clinic withdraws them."))
    if participant.state != Participant.State.ACTIVE:
        raise ValidationError({"reason": _("The participant was withdrawn already.")})
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the participant leaves the programme.")})
    now = _now()
    participant.state, participant.withdrawn_at, participant.withdrawn_reason = Participant.State.WITHDRAWN, now, reason
    participant.save(update_fields=["state", "withdrawn_at", "withdrawn_reason"])
    cancelled = participant.rounds.filter(study__isnull=True, cancelled_at__isnull=True).update(cancelled_at=now)
    _audit(by.actor, "screening.withdraw", participant, reason=reason, rounds_cancelled=cancelled)
    return participant


# --- the scan: a study tagged to a round ----------------------------------------------------------


def _scan_date(study: Study) -> date:
    return study.study_date or timezone.localdate(study.received_at)


def candidate_studies(round_: Round) -> QuerySet[Study]:
    """Studies that may be the round's scan: the participant's (or a linked identity's) studies of
    the programme's modality at a participating clinic, in the round's date window, not tagged."""
    participant = round_.participant
    programme = participant.programme
    last = round_.due_date + timedelta(days=programme.window_days)
    dated = Q(study_date__gte=round_.window_start, study_date__lte=last)
    undated = Q(study_date__isnull=True, received_at__date__gte=round_.window_start, received_at__date__lte=last)
    return (
        Study.objects.filter(dated | undated)
        .filter(
            patient_id__in=linked_patient_ids(participant.patient),
            institution_id__in=programme.institutions.values("pk"),
            deleted_at__isnull=True,
            screening_round__isnull=True,
        )
        .filter(Exists(Series.objects.filter(study=OuterRef("pk"), modality=programme.modality)))
        .order_by("study_date", "received_at", "pk")
    )


def _attach(round_: Round, study: Study, actor: audit.Actor, user: Any, match: str) -> None:
    """The study becomes the round's scan: the reading pool may read and measure it (write), and
    read the participant's earlier scans beside it, until the reading is signed."""
    now = _now()
    round_.study, round_.scanned_on, round_.match = study, _scan_date(study), match
    round_.tagged_at, round_.tagged_by = now, user
    round_.save(update_fields=["study", "scanned_on", "match", "tagged_at", "tagged_by"])
    pool = round_.participant.programme.reading_pool
    grantee = grants.Grantee.pool(pool)
    grants.grant_study(study=study, grantee=grantee, basis=round_.basis, by=actor, write=True)
    earlier = Study.objects.filter(screening_round__participant=round_.participant).exclude(pk=study.pk)
    for prior in earlier:
        grants.grant_study(study=prior, grantee=grantee, basis=round_.basis, by=actor)


@transaction.atomic
def round_tag(*, round_: Round, study: Study, by: Principal) -> Round:
    """The clinic names one of its studies as the round's scan (from the study page)."""
    round_ = _locked_round(round_)
    participant = round_.participant
    if not access.may_follow_up(by, participant):
        raise AccessDenied(_("Only the participant's clinic tags a scan to their screening."))
    if participant.state != Participant.State.ACTIVE or not round_.is_open:
        raise ValidationError({"round": _("This screening CT is done or cancelled.")})
    if study.institution_id != by.institution_id or not studies_visible_to(by).filter(pk=study.pk).exists():
        raise ValidationError({"study": _("Tag a study of your own institution.")})
    if study.patient_id not in linked_patient_ids(participant.patient):
        raise ValidationError({"study": _("This study is of another patient.")})
    if Round.objects.filter(study=study).exists():
        raise ValidationError({"study": _("This study is a screening scan already.")})
    previous = participant.rounds.filter(number__lt=round_.number, scanned_on__isnull=False).order_by("-number").first()
    if previous is not None and previous.scanned_on is not None and _scan_date(study) <= previous.scanned_on:
        raise ValidationError({"study": _("The study is not later than the previous screening CT.")})
    _attach(round_, study, by.actor, by.user, Round.Match.MANUAL)
    _audit(by.actor, "screening.tag", participant, round=round_.number, study=study.study_uid)
    return round_


def rounds_match(*, now: datetime | None = None) -> int:
    """The beat job: each open round whose participant has a study in its window gets the
    earliest one as its scan. One transaction per round; safe to run twice."""
    matched = 0
    open_rounds = Round.objects.filter(
        study__isnull=True, cancelled_at__isnull=True, participant__state=Participant.State.ACTIVE
    ).values_list("pk", flat=True)
    for pk in list(open_rounds):
        matched += _match_one(pk)
    return matched


@transaction.atomic
def _match_one(round_pk: int) -> int:
    round_ = (
        Round.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("participant__programme", "participant__patient")
        .filter(pk=round_pk, study__isnull=True, cancelled_at__isnull=True)
        .first()
    )
    if round_ is None:
        return 0
    study = candidate_studies(round_).first()
    if study is None:
        return 0
    _attach(round_, study, audit.SYSTEM, None, Round.Match.AUTO)
    _audit(audit.SYSTEM, "screening.match", round_.participant, round=round_.number, study=study.study_uid)
    return 1


# --- reading with the structured form ------------------------------------------------------------


@dataclass
class NoduleInput:
    """One nodule as the reader entered it (consults.screening.forms makes these)."""

    lobe: str
    kind: str
    long_axis: Decimal | None = None
    short_axis: Decimal | None = None
    solid: Decimal | None = None
    volume: int | None = None
    series_number: int | None = None
    image_number: int | None = None
    sop_uid: str = ""
    feature: str = ""
    airway_level: str = ""
    cyst: str = ""
    suspicious: bool = False
    prior: int | None = None  # pk of the same nodule in the previous reading


@dataclass
class ReadingInput:
    nodules: Sequence[NoduleInput] = field(default_factory=list)
    incomplete: str = ""
    other_findings: str = ""
    significant: bool = False
    significant_text: str = ""


def previous_reading(round_: Round) -> Reading | None:
    """The participant's latest signed reading before this round: what the reader compares with."""
    return (
        Reading.objects.filter(
            round__participant_id=round_.participant_id, round__number__lt=round_.number, signed_at__isnull=False
        )
        .order_by("-round__number")
        .first()
    )


def _bad(index: int, name: str, message: str) -> ValidationError:
    return ValidationError({f"nodules-{index}-{name}": message})


def _check_sizes(index: int, n: NoduleInput) -> None:
    for name, value in (("long_axis", n.long_axis), ("short_axis", n.short_axis), ("solid", n.solid)):
        if value is not None and not Decimal("0") < value <= MAX_AXIS_MM:
            raise _bad(index, name, _("A size is more than 0 and at most 300 mm."))
    if n.kind in lungrads.MEASURED_KINDS and (n.long_axis is None or n.short_axis is None):
        raise _bad(index, "long_axis", _("Give the long and the short axis (or take them from a measurement)."))
    if n.long_axis is not None and n.short_axis is not None and n.short_axis > n.long_axis:
        raise _bad(index, "short_axis", _("The short axis is longer than the long axis."))
    if n.kind == lungrads.Kind.PART_SOLID:
        if n.solid is None:
            raise _bad(index, "solid", _("Give the solid component's mean diameter."))
        if n.long_axis is not None and n.solid > n.long_axis:
            raise _bad(index, "solid", _("The solid component is larger than the nodule."))
    elif n.solid is not None:
        raise _bad(index, "solid", _("Only a part-solid nodule has a solid component."))
    if n.volume is not None and n.volume < 1:
        raise _bad(index, "volume", _("A volume is at least 1 mm³."))


def _check_nodule(index: int, n: NoduleInput) -> None:
    if n.lobe not in Lobe.values:
        raise _bad(index, "lobe", _("Choose the lobe."))
    if n.kind not in lungrads.KIND_LABELS:
        raise _bad(index, "kind", _("Choose the type."))
    _check_sizes(index, n)
    if n.feature not in lungrads.FEATURE_LABELS:
        raise _bad(index, "feature", _("Choose a feature from the list."))
    if n.feature in ("calcified", "fat", "juxtapleural") and n.kind != lungrads.Kind.SOLID:
        raise _bad(index, "feature", _("This feature belongs to a solid nodule."))
    if n.kind == lungrads.Kind.AIRWAY and n.airway_level not in lungrads.AIRWAY_LEVEL_LABELS:
        raise _bad(index, "airway_level", _("Say whether the airway nodule is segmental or subsegmental."))
    if n.kind == lungrads.Kind.CYST and n.cyst not in lungrads.CYST_RULES:
        raise _bad(index, "cyst", _("Say what the cyst looks like."))
    for name, value in (("series_number", n.series_number), ("image_number", n.image_number)):
        if value is not None and value < 0:
            raise _bad(index, name, _("A series or image number is not negative."))


def _earlier(prior: Nodule | None) -> lungrads.Earlier | None:
    if prior is None:
        return None
    history: list[Decimal] = []
    step = prior.prior
    while step is not None:
        if step.mean_mm is not None:
            history.insert(0, step.mean_mm)
        step = step.prior
    return lungrads.Earlier(prior.finding, prior.category, tuple(history))


def _priors(previous: Reading | None, nodules: Sequence[NoduleInput]) -> dict[int, Nodule]:
    chosen = [n.prior for n in nodules if n.prior is not None]
    if not chosen:
        return {}
    if previous is None:
        raise ValidationError({"nodules-0-prior": _("There is no earlier reading to compare with.")})
    found = {n.pk: n for n in Nodule.objects.filter(reading=previous, pk__in=chosen).select_related("prior__prior")}
    for index, n in enumerate(nodules):
        if n.prior is not None and n.prior not in found:
            raise _bad(index, "prior", _("Choose a nodule of the previous reading."))
    if len(set(chosen)) != len(chosen):
        index = next(i for i, n in enumerate(nodules) if n.prior is not None and chosen.count(n.prior) > 1)
        raise _bad(index, "prior", _("Two nodules cannot both be the same earlier nodule."))
    return found


def _next_numbers(nodules: Sequence[NoduleInput], priors: dict[int, Nodule], previous: Reading | None) -> list[int]:
    """A matched nodule keeps its number; a new one gets the next free number."""
    taken = {priors[n.prior].number for n in nodules if n.prior is not None}
    if previous is not None:
        taken |= set(previous.nodules.values_list("number", flat=True))
    numbers, following = [], max(taken, default=0) + 1
    for n in nodules:
        if n.prior is not None:
            numbers.append(priors[n.prior].number)
        else:
            numbers.append(following)
            following += 1
    return numbers


def _assessed(data: ReadingInput, previous: Reading | None) -> list[tuple[NoduleInput, Nodule | None, Any, Any]]:
    if len(data.nodules) > MAX_NODULES:
        raise ValidationError({"nodules": _("At most %(n)d nodules per reading.") % {"n": MAX_NODULES}})
    for index, n in enumerate(data.nodules):
        _check_nodule(index, n)
    priors = _priors(previous, data.nodules)
    rows = []
    for n in data.nodules:
        mean = lungrads.mean_diameter(n.long_axis, n.short_axis) if n.long_axis and n.short_axis else None
        finding = lungrads.Finding(n.kind, mean, n.solid, n.feature, n.airway_level, n.cyst, n.suspicious)
        prior = priors.get(n.prior) if n.prior is not None else None
        rows.append((n, prior, mean, lungrads.assess(finding, _earlier(prior), baseline=previous is None)))
    return rows


def _reading_for(round_: Round, by: Principal) -> Reading:
    reading = Reading.objects.select_for_update().filter(round=round_).first()
    now = _now()
    if reading is None:
        return Reading.objects.create(round=round_, reader=_doctor(by), started_at=now, updated_at=now)
    if reading.reader_id != _doctor(by).pk:
        raise AccessDenied(_("%(reader)s is reading this scan.") % {"reader": reading.reader})
    if reading.is_signed:
        raise ValidationError({"round": _("This reading is signed and cannot change.")})
    return reading


@transaction.atomic
def reading_save(*, round_: Round, by: Principal, data: ReadingInput) -> Reading:
    """Save the structured findings (the first reader to save holds the reading) and compute the
    Lung-RADS category of every nodule and of the exam."""
    round_ = _locked_round(round_)
    if not access.may_read(by, round_):
        raise AccessDenied(_("Only a specialist of the programme's reading pool reads its scans."))
    if data.incomplete and data.incomplete not in lungrads.INCOMPLETE_LABELS:
        raise ValidationError({"incomplete": _("Choose why the exam is incomplete.")})
    if data.significant and not data.significant_text.strip():
        raise ValidationError({"significant_text": _("Describe the significant finding (S).")})
    previous = previous_reading(round_)
    rows = _assessed(data, previous)
    reading = _reading_for(round_, by)
    result = lungrads.exam([a for *_rest, a in rows], incomplete=data.incomplete, significant=data.significant)
    reading.incomplete, reading.other_findings = data.incomplete, data.other_findings.strip()
    reading.significant, reading.significant_text = data.significant, data.significant_text.strip()
    reading.category, reading.updated_at = result.category, _now()
    reading.save()
    reading.nodules.all().delete()
    numbers = _next_numbers(data.nodules, {p.pk: p for _n, p, *_r in rows if p is not None}, previous)
    Nodule.objects.bulk_create(_nodule(reading, number, *row) for number, row in zip(numbers, rows, strict=True))
    _audit(by.actor, "screening.reading.save", round_.participant, round=round_.number, category=result.code)
    return reading


def _nodule(reading: Reading, number: int, n: NoduleInput, prior: Nodule | None, mean: Any, assessed: Any) -> Nodule:
    return Nodule(
        reading=reading,
        number=number,
        prior=prior,
        lobe=n.lobe,
        kind=n.kind,
        series_number=n.series_number,
        image_number=n.image_number,
        sop_uid=n.sop_uid[:64],
        long_axis_mm=n.long_axis,
        short_axis_mm=n.short_axis,
        mean_mm=mean,
        solid_mm=n.solid,
        volume_mm3=n.volume,
        feature=n.feature,
        airway_level=n.airway_level,
        cyst=n.cyst,
        suspicious=n.suspicious,
        category=assessed.category,
        change=assessed.change,
    )


def _next_round(round_: Round, reading: Reading, now: datetime) -> Round:
    management = lungrads.MANAGEMENT[reading.category]
    scanned = round_.scanned_on or timezone.localdate(now)
    return Round.objects.create(
        participant=round_.participant,
        number=round_.number + 1,
        kind=management.kind,
        due_date=lungrads.due_after(scanned, reading.category),
        window_start=scanned + timedelta(days=1),
        opened_at=now,
    )


@transaction.atomic
def reading_sign(*, reading: Reading, by: Principal) -> Reading:
    """The reading becomes final: the next CT is due by its category, the pool's write access to
    the scan ends (reading stays for the alliance's reader_access_days), the clinic is told, and
    the findings go into the study as DICOM SR after commit."""
    reading = (
        Reading.objects.select_for_update(of=("self",))
        .select_related("round__participant__programme")
        .get(pk=reading.pk)
    )
    round_ = reading.round
    if not access.may_sign(by, reading) or not access.may_read(by, round_):
        raise AccessDenied(_("Only the reader signs their reading."))
    if not reading.category:
        raise ValidationError({"round": _("Save the findings before signing.")})
    now = _now()
    reading.signed_at = now
    following = _next_round(round_, reading, now)
    reading.next_due = following.due_date
    reading.save(update_fields=["signed_at", "next_due"])
    days = settings_of(round_.participant.programme.alliance_id).reader_access_days
    grants.close_case_grants(basis=round_.basis, read_until=now + timedelta(days=days), by=by.actor)
    _notify(round_.participant, round_, _clinic_users(round_.participant), "result", now)
    _write_sr_after_commit(reading)
    _audit(by.actor, "screening.reading.sign", round_.participant, round=round_.number, category=reading.code)
    return reading


def reading_sign_confirmed(*, request: Any, reading: Reading, by: Principal, secret: str) -> Reading:
    """Sign after the reader proved who they are again (password or authenticator code)."""
    confirm_identity(request=request, user=by.user, secret=secret, purpose="screening.sign")
    return reading_sign(reading=reading, by=by)


def _write_sr_after_commit(reading: Reading) -> None:
    from consults.screening import tasks  # tasks call services

    def queue() -> None:  # named: a robust on_commit logs its callback's __qualname__
        tasks.write_reading_sr.delay(reading.pk)

    transaction.on_commit(queue, robust=True)


# --- reminders and notices --------------------------------------------------------------------


def _clinic_users(participant: Participant) -> list[Any]:
    """Who at the clinic hears about a participant: the doctor who enrolled them (while active)
    and the clinic's institution admins."""
    users = {d.user_id: d.user for d in institution_admins_of(participant.institution_id)}
    enroller = participant.enrolled_by
    if enroller.active:
        users[enroller.user_id] = enroller.user
    return list(users.values())


def _notify(participant: Participant, round_: Round | None, users: Iterable[Any], verb: str, at: datetime) -> None:
    from consults.screening import tasks

    rows = ScreeningNotification.objects.bulk_create(
        ScreeningNotification(user=u, participant=participant, round=round_, verb=verb, created_at=at) for u in users
    )
    ids = [n.pk for n in rows]

    def queue_emails() -> None:  # named: a robust on_commit logs its callback's __qualname__
        tasks.send_notification_emails.delay(ids)

    if ids:
        transaction.on_commit(queue_emails, robust=True)


def rounds_remind(*, now: datetime | None = None) -> int:
    """The beat job: the clinic hears once when a CT is due within SCREENING_REMIND_BEFORE_DAYS
    and once when it is SCREENING_REMIND_AFTER_DAYS past due without a scan. Safe twice: a round
    is marked in the transaction that notifies, and a round another run holds is skipped."""
    moment = now or _now()
    today = timezone.localdate(moment)
    before = today + timedelta(days=settings.SCREENING_REMIND_BEFORE_DAYS)
    after = today - timedelta(days=settings.SCREENING_REMIND_AFTER_DAYS)
    open_rounds = Round.objects.filter(
        study__isnull=True, cancelled_at__isnull=True, participant__state=Participant.State.ACTIVE
    )
    due_soon = open_rounds.filter(reminded_before_at__isnull=True, due_date__lte=before, due_date__gte=today)
    past_due = open_rounds.filter(reminded_after_at__isnull=True, due_date__lte=after)
    sent = sum(_remind(pk, "due_soon", moment) for pk in list(due_soon.values_list("pk", flat=True)))
    return sent + sum(_remind(pk, "past_due", moment) for pk in list(past_due.values_list("pk", flat=True)))


@transaction.atomic
def _remind(round_pk: int, verb: str, moment: datetime) -> int:
    marker = "reminded_before_at" if verb == "due_soon" else "reminded_after_at"
    round_ = (
        Round.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("participant__enrolled_by__user", "participant__institution")
        .filter(pk=round_pk, study__isnull=True, cancelled_at__isnull=True, **{f"{marker}__isnull": True})
        .first()
    )
    if round_ is None or access.SCREENING_MODULE not in round_.participant.institution.modules:
        return 0  # a clinic with screening switched off is reminded once it is on again
    setattr(round_, marker, moment)
    round_.save(update_fields=[marker])
    _notify(round_.participant, round_, _clinic_users(round_.participant), verb, moment)
    _audit(audit.SYSTEM, f"screening.remind.{verb}", round_.participant, round=round_.number, due=str(round_.due_date))
    return 1


def notifications_mark_read(*, user: Any, ids: Sequence[int] | None = None) -> int:
    rows = ScreeningNotification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    return rows.update(read_at=_now())


def reading_sr_written(*, reading: Reading, sop_uid: str) -> None:
    """Remember the SR instance the reading was written to (consults.screening.report_sr)."""
    Reading.objects.filter(pk=reading.pk).update(sr_sop_uid=sop_uid)

"""Every write of routing: destinations, rules, and the queue's items through ITEM_MOVES.

Queueing an item and each move of it are one transaction with one audit event; the send
itself (imaging/dicom/scu.py or imaging/routing/stow.py) runs between two short ones: a
claim (SENDING, with a lease) and the result (SENT or FAILED, with the peer's status and
reason). The Celery task that sends is queued after the commit that made the item owed;
a lost task message costs a delay, not the item: the beat sweep queues again what waits too
long, and a lease that ran out (a killed worker) lets another worker take the item.

Rules fire when a study has been quiet for ROUTE_QUIET_SECONDS (the sweep finds studies
updated since it last looked): a series of 500 instances is one item sent on one
association once the modality is done, not 500 items or a partial study at the peer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import audit
from alliance.access import AccessDenied, Principal
from alliance.models import AuditEvent, Institution, Pool
from imaging import access as imaging_access
from imaging import grants, storage
from imaging.dicom import scu
from imaging.dicom.identifiers import StoredObject
from imaging.models import Instance, PatientLink, Study
from imaging.routing import access, secrets, stow
from imaging.routing.models import (
    ITEM_MOVES,
    Destination,
    RouteItem,
    RouteRule,
    RouteScan,
    RouteSent,
    RouteTransition,
    State,
)

# Studies are looked at again this long after the sweep passed them: an ingest transaction
# that stamped a study before the sweep's cut-off may commit after it.
SCAN_OVERLAP = timedelta(seconds=60)
# An item pending this long without a worker taking it lost its task message: queued again.
REQUEUE_AFTER = timedelta(seconds=120)
LEASE = timedelta(seconds=600)  # a worker's hold on an item it sends, renewed as it goes


class IllegalMove(Exception):
    """The item is not in a state that allows the move; nothing was changed."""


# --- destinations and rules ---------------------------------------------------------------


def _clean_destination(destination: Destination) -> None:
    if destination.kind == Destination.Kind.DIMSE:
        missing = {
            f: _("Required for a DICOM destination.")
            for f in ("ae_title", "host", "port")
            if not getattr(destination, f)
        }
        if missing:
            raise ValidationError(missing)
    elif not destination.url.startswith(("http://", "https://")):
        raise ValidationError({"url": _("A DICOMweb destination needs its http:// or https:// URL.")})
    destination.full_clean(exclude=["institution"])


@transaction.atomic
def destination_save(
    *,
    by: Principal,
    institution: Institution,
    values: dict[str, Any],
    token: str | None = None,
    destination: Destination | None = None,
) -> Destination:
    """Register a destination or change one. `token`: a new bearer token ("" removes it,
    None keeps the one stored)."""
    if not access.may_manage_routing(by, institution):
        raise AccessDenied(_("Only an admin of the institution keeps its routing."))
    if destination is not None and destination.institution_id != institution.pk:
        raise AccessDenied(_("Only an admin of the institution keeps its routing."))
    target = destination or Destination(institution=institution)
    for name, value in values.items():
        setattr(target, name, value)
    if token is not None:
        target.token_encrypted = secrets.seal(token.strip())
    _clean_destination(target)
    target.save()
    audit.record(
        actor=by.actor,
        action="route.destination.create" if destination is None else "route.destination.change",
        object_type="route-destination",
        object_id=target.pk,
        detail={
            "name": target.name,
            "kind": target.kind,
            "address": target.address,
            "active": target.active,
            "token": "changed" if token is not None else "kept",
        },
    )
    return target


_NESTED_QUANTIFIER = re.compile(r"\([^()]*[+*}][^()]*\)\s*[+*{]")


def _clean_rule(rule: RouteRule) -> None:
    if rule.destination.institution_id != rule.institution_id:
        raise ValidationError({"destination": _("Choose one of your institution's destinations.")})
    if rule.description and rule.description_match == RouteRule.Match.REGEX:
        if _NESTED_QUANTIFIER.search(rule.description):
            raise ValidationError(
                {"description": _("Nested repetition like (a+)+ is not accepted: it can take forever.")}
            )
        try:
            re.compile(rule.description)
        except re.error as exc:
            raise ValidationError({"description": _("Not a regular expression: %(error)s") % {"error": exc}}) from None
    if rule.trigger == RouteRule.Trigger.STUDY and (
        rule.case_kind or rule.target_institution_id or rule.target_pool_id or rule.prefetch
    ):
        raise ValidationError(
            {"trigger": _("Case conditions and prior studies apply to rules that fire on a consult or referral.")}
        )
    rule.full_clean(exclude=["institution", "destination"])


@transaction.atomic
def rule_save(
    *, by: Principal, institution: Institution, values: dict[str, Any], rule: RouteRule | None = None
) -> RouteRule:
    if not access.may_manage_routing(by, institution) or (rule is not None and rule.institution_id != institution.pk):
        raise AccessDenied(_("Only an admin of the institution keeps its routing."))
    target = rule or RouteRule(institution=institution)
    for name, value in values.items():
        setattr(target, name, value)
    target.modality = target.modality.strip().upper()
    target.source_ae = target.source_ae.strip()
    _clean_rule(target)
    target.save()
    audit.record(
        actor=by.actor,
        action="route.rule.create" if rule is None else "route.rule.change",
        object_type="route-rule",
        object_id=target.pk,
        detail={
            "name": target.name,
            "destination": target.destination_id,
            "trigger": target.trigger,
            "active": target.active,
        },
    )
    return target


@transaction.atomic
def rule_delete(*, by: Principal, rule: RouteRule) -> None:
    if not access.may_manage_routing(by, rule.institution):
        raise AccessDenied(_("Only an admin of the institution keeps its routing."))
    audit.record(
        actor=by.actor,
        action="route.rule.delete",
        object_type="route-rule",
        object_id=rule.pk,
        detail={"name": rule.name},
    )
    rule.delete()


# --- matching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A consult or referral as the rules see it (consults and referrals call with theirs)."""

    basis: str  # "consult:12"
    kind: str  # "consult" or "referral"
    requesting_institution: Institution
    receiving_institution: Institution
    pool: Pool | None = None


def sources_of(study: Study) -> set[str]:
    """The AE titles of the devices that sent the study's instances, as the audit trail has them
    (ingest records each C-STORE there; the hot path keeps no other copy)."""
    uids = list(Instance.objects.filter(series__study=study).values_list("sop_uid", flat=True)[:2000])
    stored = AuditEvent.objects.filter(
        action="instance.store", object_type="instance", object_id__in=uids, actor_type="device"
    )
    return set(stored.values_list("actor_name", flat=True).distinct())


def _description_matches(rule: RouteRule, description: str) -> bool:
    if rule.description_match == RouteRule.Match.REGEX:
        return re.search(rule.description, description) is not None
    return rule.description.casefold() in description.casefold()


def study_matches(rule: RouteRule, study: Study, sources: Callable[[], set[str]]) -> bool:
    """Whether every condition the rule sets holds for the study."""
    if rule.modality and rule.modality not in {m.upper() for m in study.modality_list}:
        return False
    if rule.description and not _description_matches(rule, study.description):
        return False
    return not rule.source_ae or rule.source_ae in sources()


def case_matches(rule: RouteRule, case: Case) -> bool:
    if rule.case_kind and rule.case_kind != case.kind:
        return False
    if rule.target_institution_id and rule.target_institution_id != case.receiving_institution.pk:
        return False
    return not rule.target_pool_id or (case.pool is not None and rule.target_pool_id == case.pool.pk)


# --- the queue ------------------------------------------------------------------------------


def _move(item: RouteItem, action: str, *, by: Any = None, note: str = "") -> None:
    move = ITEM_MOVES[action]
    before = item.state if item.pk else ""
    if before not in move.sources:
        raise IllegalMove(f"route item {item.pk}: {action} is not possible from {before or 'nothing'}")
    item.state = move.target
    item.save()
    RouteTransition.objects.create(
        item=item, action=action, from_state=before, to_state=move.target, at=timezone.now(), by=by, note=note[:500]
    )


def _unsent(item: RouteItem) -> QuerySet[Instance]:
    sent = RouteSent.objects.filter(item=item, instance=OuterRef("pk"))
    return Instance.objects.filter(series__study_id=item.study_id).exclude(Exists(sent))


def _owe(
    destination: Destination,
    study: Study,
    *,
    user: Any,
    rule: RouteRule | None,
    basis: str,
    prefetch: bool,
    again: bool,
) -> RouteItem | None:
    """Make the study owed to the destination: a new item, or a sent one reopened when it has
    instances the peer has not acknowledged (new ones; or all of them when `again`, a request to
    send it again). None when it is owed already or nothing is missing."""
    item = RouteItem.objects.select_for_update().filter(destination=destination, study=study).first()
    if item is None:
        item = RouteItem(
            destination=destination, study=study, rule=rule, basis=basis, requested_by=user, prefetch=prefetch
        )
        try:
            with transaction.atomic():  # a savepoint: another transaction may queue the same pair now
                _move(item, "queue", by=user)
            return item
        except IntegrityError:
            item = RouteItem.objects.select_for_update().get(destination=destination, study=study)
    if item.state != State.SENT:
        return None
    if again:
        RouteSent.objects.filter(item=item).delete()
    elif not _unsent(item).exists():
        return None
    item.rule, item.basis, item.requested_by, item.prefetch = rule, basis or item.basis, user, prefetch
    item.attempts, item.reason, item.peer_status, item.next_attempt_at = 0, "", None, None
    _move(item, "reopen", by=user, note="sent again on request" if again else "new instances")
    return item


def _send_after_commit(items: Iterable[RouteItem]) -> None:
    from imaging.routing import tasks  # tasks call services; this is the one way back

    ids = [item.pk for item in items]

    def queue_sends() -> None:  # named: a robust on_commit logs its callback's __qualname__
        for pk in ids:
            tasks.send_route_item.delay(pk)

    if ids:
        transaction.on_commit(queue_sends, robust=True)


def _study_audit_items(studies: Iterable[Study], basis: str) -> list[tuple[str, str, str]]:
    return [(s.study_uid, str(s.patient_id), basis) for s in studies]


@transaction.atomic
def route_study(*, by: Principal, study: Study, destination: Destination) -> RouteItem | None:
    """ "Send to…" from the study page or the API: the study owed to the destination (again,
    when it was sent already). None when it is on its way already."""
    if not access.may_route_study(by, study, destination):
        raise AccessDenied(_("You may not send this study there."))
    item = _owe(destination, study, user=by.user, rule=None, basis="", prefetch=False, again=True)
    audit.record(
        actor=by.actor,
        action="route.request",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        basis=imaging_access.basis_for(by, study),
        detail={"destination": destination.pk, "name": destination.name, "queued": item is not None},
    )
    _send_after_commit([item] if item else [])
    return item


def prior_studies(studies: list[Study], institution: Institution, limit: int) -> list[Study]:
    """The patients' other studies that the institution's devices may see, newest first."""
    patients = {s.patient_id for s in studies}
    linked = PatientLink.objects.filter(Q(patient_id__in=patients) | Q(linked_id__in=patients))
    for a, b in linked.values_list("patient_id", "linked_id"):
        patients |= {a, b}
    visible = imaging_access.studies_visible_to_devices_of(institution)
    priors = visible.filter(patient_id__in=patients).exclude(pk__in=[s.pk for s in studies])
    return list(priors.order_by("-study_date", "-received_at")[:limit])


@transaction.atomic
def route_case(
    *,
    by: Principal | None,
    case: Case,
    studies: Iterable[Study],
    destination: Destination,
    rule: RouteRule | None = None,
    prefetch: bool = False,
) -> list[RouteItem]:
    """A case's studies to a destination of one of its two sides (a rule's, or on request of
    someone the case's app allowed): the receiving side's devices are given the case's studies
    for as long as the case lasts (imaging.grants.open_to_devices), then the studies, and with
    prefetch the patient's prior studies those devices may see, are owed to the destination."""
    studies = list(studies)
    side = destination.institution
    if side.pk not in {case.requesting_institution.pk, case.receiving_institution.pk} or not destination.active:
        raise AccessDenied(_("This destination belongs to neither side of the case."))
    actor = by.actor if by is not None else audit.SYSTEM
    if side.pk == case.receiving_institution.pk:
        grants.open_to_devices(studies=studies, institution=side, basis=case.basis, by=actor)
    visible = set(
        imaging_access.studies_visible_to_devices_of(side)
        .filter(pk__in=[s.pk for s in studies])
        .values_list("pk", flat=True)
    )
    user = by.user if by is not None else None
    chosen = [(s, False) for s in studies if s.pk in visible]
    if prefetch:
        chosen += [(s, True) for s in prior_studies(studies, side, settings.ROUTE_PREFETCH_LIMIT)]
    items = [
        item
        for study, prior in chosen
        if (
            item := _owe(
                destination, study, user=user, rule=rule, basis=case.basis, prefetch=prior, again=by is not None
            )
        )
    ]
    audit.record_many(
        actor=actor,
        action="route.case",
        object_type="study",
        items=_study_audit_items((s for s, _prior in chosen), case.basis),
        detail={"destination": destination.pk, "rule": rule.pk if rule else None, "queued": len(items)},
    )
    _send_after_commit(items)
    return items


def case_requested(*, case: Case, studies: Iterable[Study]) -> int:
    """A consult or referral was requested: the case rules of its two sides fire. How many
    items were queued. Consults and referrals call this after their commit."""
    studies = list(studies)
    rules = RouteRule.objects.filter(
        active=True,
        trigger=RouteRule.Trigger.CASE,
        institution_id__in=[case.requesting_institution.pk, case.receiving_institution.pk],
        destination__active=True,
    ).select_related("destination__institution")
    queued = 0
    for rule in rules:
        if not case_matches(rule, case):
            continue
        chosen = [s for s in studies if study_matches(rule, s, partial(sources_of, s))]
        if chosen:
            queued += len(
                route_case(
                    by=None, case=case, studies=chosen, destination=rule.destination, rule=rule, prefetch=rule.prefetch
                )
            )
    return queued


@transaction.atomic
def retry_now(*, by: Principal, item: RouteItem) -> RouteItem:
    """ "Retry now" on a failed item: owed again at once, its attempts counted afresh."""
    item = RouteItem.objects.select_for_update().select_related("destination__institution", "study").get(pk=item.pk)
    if not access.may_manage_routing(by, item.destination.institution):
        raise AccessDenied(_("Only an admin of the institution keeps its routing."))
    if item.state != State.FAILED:
        raise IllegalMove(
            _("Only a failed item can be tried again; this one is %(state)s.") % {"state": item.get_state_display()}
        )
    item.attempts, item.next_attempt_at, item.requested_by = 0, None, by.user
    _move(item, "retry", by=by.user, note="retry now")
    audit.record(
        actor=by.actor,
        action="route.retry",
        object_type="study",
        object_id=item.study.study_uid,
        patient=str(item.study.patient_id),
        basis=item.basis,
        detail={"item": item.pk, "destination": item.destination_id},
    )
    _send_after_commit([item])
    return item


# --- sending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one send_item did: whether anything was sent, and when to try again (seconds; None: don't)."""

    ran: bool
    retry_in: float | None = None


def backoff(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: ROUTE_RETRY_BASE_SECONDS doubling, capped."""
    return float(min(settings.ROUTE_RETRY_MAX_SECONDS, settings.ROUTE_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)))


@transaction.atomic
def _claim(item_id: int, now: datetime) -> RouteItem | None:
    """Take the item for sending, or None: gone, sent, held by a live lease, or not due yet."""
    item = (
        RouteItem.objects.select_for_update(skip_locked=True)
        .filter(pk=item_id)
        .select_related("destination__institution", "study")
        .first()
    )
    if item is None or item.state == State.SENT:
        return None
    if item.state == State.SENDING and item.lease_until and item.lease_until > now:
        return None
    if item.state == State.FAILED and (not item.transient or (item.next_attempt_at and item.next_attempt_at > now)):
        return None
    item.attempts += 1
    item.lease_until = now + LEASE
    _move(item, "start")
    return item


def _stored(instance: Instance) -> StoredObject:
    return StoredObject(
        sop_class_uid=instance.sop_class_uid,
        sop_instance_uid=instance.sop_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        open=partial(storage.open_instance, instance),
        path=storage.local_path(instance),
    )


def _record_sent(item: RouteItem, by_uid: dict[str, int], uids: list[str]) -> None:
    """Mark what the peer acknowledged, so that another attempt does not send it again. Called
    on the sending thread between two C-STOREs: the marks are progress, not the attempt's result,
    and their commit does not wait for the WAL to reach the disk (PostgreSQL's synchronous_commit
    off, for this transaction only; a few ms each on a busy disk, tens at worst). A crash of the
    database server may lose the last marks, and those instances are sent again, as they are when
    the worker dies between an acknowledgement and its mark; the result (_finish) commits as
    usual, and with it every mark before it (the WAL is written in order)."""
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # one statement over an array of ids: the ORM's bulk_create builds an object and its
            # placeholders per row, 43 ms for a 500-instance study on the sending thread (a tenth
            # of the attempt, bench/RESULTS.md), this 9 (mostly the foreign keys' checks)
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
                cursor.execute(_mark_sent_sql(), [item.pk, [by_uid[uid] for uid in uids], now])
        else:
            RouteSent.objects.bulk_create(
                [RouteSent(item=item, instance_id=by_uid[uid], sent_at=now) for uid in uids], ignore_conflicts=True
            )
        RouteItem.objects.filter(pk=item.pk, state=State.SENDING).update(lease_until=now + LEASE)


@cache
def _mark_sent_sql() -> str:
    """RouteSent rows of one item (PostgreSQL): the item, an array of instance ids, the time."""
    quote, meta = connection.ops.quote_name, RouteSent._meta
    column = {f.name: str(f.column) for f in meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in ("item", "instance", "sent_at"))
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns})"  # noqa: S608
        " SELECT %s, unnest(%s::bigint[]), %s ON CONFLICT DO NOTHING"
    )


def _transport(destination: Destination) -> Callable[..., scu.Outcome]:
    if destination.kind == Destination.Kind.STOW:
        return partial(
            stow.send,
            url=destination.url,
            token=secrets.unseal(destination.token_encrypted),
            timeout=settings.ROUTE_PEER_TIMEOUT,
        )
    peer = scu.PeerAE(
        destination.ae_title,
        destination.host,
        int(destination.port or 104),
        destination.our_ae_title,
        float(settings.ROUTE_PEER_TIMEOUT),
    )
    return partial(scu.send, peer, accelerate=settings.DICOM_ACCELERATE)


def send_item(*, item_id: int) -> Attempt:
    """One attempt at an owed item: claim it, send what the peer has not acknowledged, note the result."""
    item = _claim(item_id, timezone.now())
    if item is None:
        return Attempt(ran=False)
    unsent = list(
        _unsent(item)
        .order_by("series__series_number", "series_id", "instance_number", "pk")
        .only("pk", "sop_uid", "sop_class_uid", "transfer_syntax_uid", "storage_key")  # what _stored reads
    )
    by_uid = {i.sop_uid: i.pk for i in unsent}
    refusal = _refusal(item)
    if refusal:
        outcome = scu.Outcome().stop(refusal, transient=False)
    elif not unsent:
        outcome = scu.Outcome()
    else:
        try:
            outcome = _transport(item.destination)(
                [_stored(i) for i in unsent], on_sent=partial(_record_sent, item, by_uid)
            )
        except secrets.TokenUnreadable as exc:
            outcome = scu.Outcome().stop(str(exc), transient=False)
    return _finish(item_id=item.pk, outcome=outcome)


def _refusal(item: RouteItem) -> str:
    """Why the item may not be sent now ("" when it may): checked at every attempt, since a
    grant may have ended or the destination been switched off after it was queued."""
    if not item.destination.active:
        return "the destination is switched off"
    if item.study.deleted_at is not None:
        return "the study was deleted"
    visible = imaging_access.studies_visible_to_devices_of(item.destination.institution).filter(pk=item.study_id)
    if not visible.exists():
        return f"the study is no longer shared with {item.destination.institution}"
    return ""


def _refused_reason(outcome: scu.Outcome) -> tuple[int | None, str]:
    if not outcome.refused:
        return None, ""
    uid, (code, comment) = next(iter(outcome.refused.items()))
    more = len(outcome.refused) - 1
    reason = f"{len(outcome.refused)} instance(s) refused: 0x{code:04X} {comment}".rstrip() + f" (first: {uid})"
    return code, reason + (f"; {more} more" if more else "")


@transaction.atomic
def _finish(*, item_id: int, outcome: scu.Outcome) -> Attempt:
    item = RouteItem.objects.select_for_update().select_related("destination", "study").get(pk=item_id)
    now = timezone.now()
    item.instances_sent = RouteSent.objects.filter(item=item).count()
    item.instances_total = Instance.objects.filter(series__study_id=item.study_id).count()
    item.lease_until = None
    retry_in = None
    if outcome.complete:
        item.peer_status, item.reason, item.transient, item.next_attempt_at, item.sent_at = 0, "", False, None, now
        _move(item, "finish")
    else:
        status, reason = (outcome.status, outcome.reason) if outcome.reason else _refused_reason(outcome)
        item.peer_status, item.reason = status, reason[:2000]
        item.transient = outcome.transient and bool(outcome.reason)
        if item.transient and item.attempts < settings.ROUTE_MAX_ATTEMPTS:
            retry_in = backoff(item.attempts)
            item.next_attempt_at = now + timedelta(seconds=retry_in)
        else:
            item.next_attempt_at = None
            item.transient = False  # no more automatic attempts: "retry now" is the way
        _move(item, "fail", note=reason)
    audit.record(
        actor=audit.SYSTEM,
        action="route.send",
        object_type="study",
        object_id=item.study.study_uid,
        patient=str(item.study.patient_id),
        basis=item.basis,
        outcome=AuditEvent.Outcome.SUCCESS if outcome.complete else AuditEvent.Outcome.FAILURE,
        detail={
            "destination": item.destination_id,
            "address": item.destination.address,
            "sent": len(outcome.sent),
            "refused": len(outcome.refused),
            "reason": item.reason[:500],
            "attempt": item.attempts,
        },
    )
    return Attempt(ran=True, retry_in=retry_in)


# --- the sweep ------------------------------------------------------------------------------


def _scan_window(now: datetime) -> tuple[RouteScan, datetime, datetime] | None:
    scan = RouteScan.objects.select_for_update(skip_locked=True).first()
    cutoff = now - timedelta(seconds=settings.ROUTE_QUIET_SECONDS)
    if scan is None:
        if RouteScan.objects.exists():
            return None  # another sweep holds it
        scan = RouteScan.objects.create(through=cutoff)
        return None
    return scan, scan.through - SCAN_OVERLAP, cutoff


@transaction.atomic
def route_quiet_studies(*, now: datetime | None = None) -> int:
    """The study rules, on studies that received something since the last look and have been
    quiet ROUTE_QUIET_SECONDS since; how many items were made owed."""
    now = now or timezone.now()
    window = _scan_window(now)
    if window is None:
        return 0
    scan, since, cutoff = window
    rules = list(
        RouteRule.objects.filter(active=True, trigger=RouteRule.Trigger.STUDY, destination__active=True).select_related(
            "destination"
        )
    )
    by_institution: dict[int, list[RouteRule]] = {}
    for rule in rules:
        by_institution.setdefault(rule.institution_id, []).append(rule)
    items: list[RouteItem] = []
    if by_institution:
        studies = Study.objects.filter(
            updated_at__gt=since,
            updated_at__lte=cutoff,
            deleted_at__isnull=True,
            institution_id__in=list(by_institution),
        )
        for study in studies.iterator():
            items += _route_by_rules(study, by_institution[study.institution_id])
    scan.through = max(scan.through, cutoff)
    scan.save()
    _send_after_commit(items)
    return len(items)


def _route_by_rules(study: Study, rules: list[RouteRule]) -> list[RouteItem]:
    sources: set[str] | None = None

    def study_sources() -> set[str]:
        nonlocal sources
        if sources is None:
            sources = sources_of(study)
        return sources

    items = []
    for rule in rules:
        if rule.created_at > study.updated_at or not study_matches(rule, study, study_sources):
            continue
        item = _owe(rule.destination, study, user=None, rule=rule, basis="", prefetch=False, again=False)
        if item is not None:
            audit.record(
                actor=audit.SYSTEM,
                action="route.rule",
                object_type="study",
                object_id=study.study_uid,
                patient=str(study.patient_id),
                basis=imaging_access.OWN_INSTITUTION,
                detail={"rule": rule.pk, "destination": rule.destination_id, "item": item.pk},
            )
            items.append(item)
    return items


def owed_again(*, now: datetime | None = None) -> list[int]:
    """Items whose task message may be lost: pending too long, a lease run out, or failed
    transiently and due. Their ids (the sweep queues them; a second message is harmless:
    the claim lets one worker send). A pending or failed item is marked as queued now, so
    the next sweeps wait REQUEUE_AFTER again instead of queueing it on every run while the
    workers are busy."""
    now = now or timezone.now()
    pending = Q(state=State.PENDING, updated_at__lt=now - REQUEUE_AFTER)
    due = Q(state=State.FAILED, transient=True, next_attempt_at__lt=now - REQUEUE_AFTER)
    lease_ran_out = Q(state=State.SENDING, lease_until__lt=now)
    ids = list(RouteItem.objects.filter(pending | due | lease_ran_out).values_list("pk", flat=True)[:500])
    RouteItem.objects.filter(pending, pk__in=ids).update(updated_at=now)
    RouteItem.objects.filter(due, pk__in=ids).update(next_attempt_at=now)
    return ids

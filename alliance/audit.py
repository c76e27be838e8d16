"""The one writer of the append-only audit trail (C7, IHE ATNA style).

Every read or write of patient data, every sign-in and every change to membership,
devices and grants calls `record` inside the transaction of what it records, so an
event exists exactly when the thing it describes happened. The C-STORE hot path, which
sends its rows in one round trip that is also the commit, sends the events `build` made
with them as the statement `insert_prepared` gives.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.sql import InsertQuery
from django.utils import timezone

from alliance import prepared
from alliance.models import AuditEvent, DeniedReadTally

if TYPE_CHECKING:
    from django.http import HttpRequest

    from alliance.models import Device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who did it: a user, a DICOM device, a patient share link, the system, or nobody known."""

    type: str
    id: str = ""
    name: str = ""
    institution_id: int | None = None

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        if user is None or not getattr(user, "is_authenticated", False):
            return ANONYMOUS
        # A request's actor comes from its principal (access.Principal.actor), which has the
        # doctor loaded; this is for a user met elsewhere (sign-in, a script).
        doctor = getattr(user, "doctor", None)
        return cls("user", str(user.pk), user.get_username(), doctor.institution_id if doctor else None)

    @classmethod
    def for_device(cls, device: Device) -> Actor:
        return cls("device", str(device.pk), device.ae_title, device.institution_id)

    @classmethod
    def for_unknown_device(cls, ae_title: str) -> Actor:
        return cls("device", "", ae_title, None)


ANONYMOUS = Actor("anonymous")
SYSTEM = Actor("system", name="system")


def source_of(request: HttpRequest | None) -> str:
    """The network address a web request came from. X-Forwarded-For is believed only when the
    socket's peer is a proxy the deployment named (settings.TRUSTED_PROXIES): then the client is
    the right-most address in it that is not one of those proxies, since every hop appends the
    address it saw and anything left of that the client may have written itself."""
    if request is None:
        return ""
    remote = request.META.get("REMOTE_ADDR", "")
    if not _is_trusted_proxy(remote):
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted_proxy(hop):
            return hop
    return hops[0] if hops else remote


def _is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxy_networks(tuple(settings.TRUSTED_PROXIES)))


@functools.lru_cache(maxsize=8)
def trusted_proxy_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """settings.TRUSTED_PROXIES (addresses or CIDRs) as networks; settings checked them at start-up."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


class EventFields(TypedDict, total=False):
    """What an event says besides who did what (see AuditEvent)."""

    object_type: str
    object_id: str | int
    patient: str
    basis: str
    source: str
    outcome: str
    detail: dict[str, Any] | None
    time: datetime  # now, unless given


# The institution whose patient an event's patient key names (AuditEvent.patient), registered
# by the app that keeps patients (imaging; alliance sits below it).
PatientOwner = Callable[[str], int | None]
_patient_owner: PatientOwner | None = None


def register_patient_owner(owner: PatientOwner) -> None:
    """Called from imaging's AppConfig.ready()."""
    global _patient_owner
    _patient_owner = owner


def build(*, actor: Actor, action: str, **fields: Unpack[EventFields]) -> AuditEvent:
    """An unsaved event, with each value cut to its column's width: what `record` saves, for a
    caller that writes it together with other rows.

    An event of an actor of no institution (the system's jobs, an anonymous caller) about a
    patient is filed under the institution that holds the patient, so that the audit trail of
    that institution's alliance shows it and no other alliance's does."""
    object_id, patient, basis, institution_id = _item_values(
        actor, fields.get("object_id", ""), fields.get("patient", ""), fields.get("basis", "")
    )
    return AuditEvent(
        time=fields.get("time") or timezone.now(),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_name=actor.name[:200],
        actor_institution_id=institution_id,
        action=action,
        object_type=fields.get("object_type", ""),
        object_id=object_id,
        patient=patient,
        basis=basis,
        source=fields.get("source", "")[:255],
        outcome=fields.get("outcome", AuditEvent.Outcome.SUCCESS),
        detail=fields.get("detail") or {},
    )


def _item_values(actor: Actor, object_id: str | int, patient: str, basis: str) -> tuple[str, str, str, int | None]:
    """An event's object, patient, basis and institution, each cut to its column's width."""
    patient = patient[:200]
    institution_id = actor.institution_id
    if institution_id is None and patient and _patient_owner is not None:
        institution_id = _patient_owner(patient)
    return str(object_id)[:128], patient, basis[:64], institution_id


def record(*, actor: Actor, action: str, **fields: Unpack[EventFields]) -> AuditEvent:
    event = build(actor=actor, action=action, **fields)
    event.save(force_insert=True)
    return event


def record_read(*, actor: Actor, action: str, **fields: Unpack[EventFields]) -> None:
    """`record` for the event of a read (a search, a retrieval), written before the answer goes
    out as every read's is, but committed without waiting for PostgreSQL to flush it to disk
    (asynchronous commit, for this one statement only): a read answered in a few milliseconds
    would otherwise spend most of them in that flush. The event is in the database when the
    answer goes out, and a failure to write it still fails the read; only a crash of the
    database server itself within a fraction of a second (three wal_writer_delay) could lose
    it. Inside a transaction (the caller's writes must stay durable), or on SQLite, it is
    `record`."""
    if not _own_transaction_on_postgresql():
        record(actor=actor, action=action, **fields)
        return
    statement = insert_prepared([build(actor=actor, action=action, **fields)])
    with connection.cursor() as cursor:  # one simple query: one implicit transaction
        prepared.execute(cursor, [statement], first=_ASYNCHRONOUS)


_ASYNCHRONOUS = "SET LOCAL synchronous_commit TO OFF"  # for the current transaction only


def _own_transaction_on_postgresql() -> bool:
    """Whether what is written now commits in a transaction of its own (no caller's
    transaction holds it), on PostgreSQL: where a read's events may commit asynchronously."""
    return connection.vendor == "postgresql" and not connection.in_atomic_block and connection.get_autocommit()


def insert_prepared(events: Sequence[AuditEvent]) -> tuple[str, list[Any]]:
    """One INSERT of these built events and its parameters, for a caller that sends it in the
    same round trip as the rows the events describe (so they commit together). The text is
    made by Django once per number of events; each call only prepares the values."""
    sql, fields = _insert_text(connection.vendor, len(events))
    return sql, [f.get_db_prep_save(f.pre_save(event, True), connection) for event in events for f in fields]


@functools.lru_cache(maxsize=128)
def _insert_text(vendor: str, count: int) -> tuple[str, tuple[models.Field[Any, Any], ...]]:
    """The INSERT of `count` events, one VALUES group each, as Django's compiler writes one row."""
    fields = tuple(f for f in AuditEvent._meta.concrete_fields if not f.primary_key)
    query = InsertQuery(AuditEvent)
    query.insert_values(fields, [build(actor=SYSTEM, action="")])
    ((one_row, _),) = query.get_compiler(connection=connection).as_sql()
    head, _, group = one_row.rpartition(" VALUES ")
    return f"{head} VALUES {', '.join([group] * count)}", fields


_EVENTS_PER_INSERT = 500  # 6,500 parameters: within PostgreSQL's 65,535 and SQLite's 32,766


def record_many(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    items: Iterable[tuple[str, str, str]],
    source: str = "",
    outcome: str = AuditEvent.Outcome.SUCCESS,
    detail: dict[str, Any] | None = None,
    read: bool = False,
) -> None:
    """Audit one request that touched several objects: items are (object_id, patient, basis).

    One INSERT (insert_prepared's, its text made once per number of events) for up to
    _EVENTS_PER_INSERT events: outside a transaction that statement commits itself, so a
    caller that only audits (a read) needs no transaction of its own and pays no BEGIN and
    COMMIT round trips; more events are written in one transaction.

    The events differ only in their object, patient and basis (and, for an actor of no
    institution, the patient's institution): the rest of the values are prepared once, from
    one event built as `record` builds it, not once per event (a C-FIND answering fifty
    scheduled steps wrote fifty copies of the same JSON detail).

    `read`: the events of a read, committed without waiting for the disk as record_read's
    (asynchronous commit for their statement or transaction only; inside a caller's
    transaction, or on SQLite, they are ordinary rows of it)."""
    listed = list(items)
    if not listed:
        return
    sample = build(
        actor=actor,
        action=action,
        time=timezone.now(),
        object_type=object_type,
        source=source,
        outcome=outcome,
        detail=detail,
    )
    _, fields = _insert_text(connection.vendor, 1)
    common = [f.get_db_prep_save(f.pre_save(sample, True), connection) for f in fields]
    names = [f.attname for f in fields]
    at_object, at_patient, at_basis = names.index("object_id"), names.index("patient"), names.index("basis")
    at_institution = names.index("actor_institution_id")
    rows = []
    for oid, patient, basis in listed:
        row = common.copy()
        object_id, row[at_patient], row[at_basis], institution_id = _item_values(actor, oid, patient, basis)
        row[at_object], row[at_institution] = object_id, institution_id
        rows.append(row)
    asynchronous = read and _own_transaction_on_postgresql()
    together = len(rows) > _EVENTS_PER_INSERT  # several statements: one transaction
    with transaction.atomic() if together else nullcontext(), connection.cursor() as cursor:
        if asynchronous and together:
            cursor.execute(_ASYNCHRONOUS)
        for start in range(0, len(rows), _EVENTS_PER_INSERT):
            chunk = rows[start : start + _EVENTS_PER_INSERT]
            sql, _ = _insert_text(connection.vendor, len(chunk))
            if asynchronous and not together:
                sql = f"{_ASYNCHRONOUS}; {sql}"  # one simple query: its own implicit transaction
            cursor.execute(sql, [value for row in chunk for value in row])


# --- reads of patient data ----------------------------------------------------------------


class Readable(Protocol):
    """A record of patient data as the audit trail names it (a study, a series, an instance):
    its app says how (e.g. imaging.models.Study.audit_type)."""

    pk: Any
    audit_type: str

    @property
    def audit_id(self) -> str: ...

    @property
    def audit_patient(self) -> str: ...


def patients(ids: Iterable[object]) -> str:
    """The patient column of an event about several patients (a consult's studies, a grant's):
    their ids once each, sorted, comma-separated as patient_label reads them back, cut to the
    column's 200 characters."""
    return ",".join(sorted({str(pk) for pk in ids}))[:200]


def actor_of(request: Any) -> Actor:
    """Who made a web or API request: its principal, resolved once by alliance.middleware."""
    actor: Actor = request.principal.actor
    return actor


def read(request: Any, obj: Readable, action: str, basis: str, *, via: str = "") -> None:
    """The event of a page or API call that showed the object's patient data to the request's
    principal, on the given basis (imaging.access.basis_for); via names the door ("api", "viewer").
    Written before the answer goes out, committed as a read's (record_read)."""
    record_read(
        actor=actor_of(request),
        action=action,
        object_type=obj.audit_type,
        object_id=obj.audit_id,
        patient=obj.audit_patient,
        basis=basis,
        source=source_of(request),
        detail={"via": via} if via else None,
    )


def read_many(request: Any, objs: Sequence[Readable], action: str, bases: Mapping[Any, str], *, via: str = "") -> None:
    """`read` for a list the request showed: one event per object, bases by object pk."""
    if not objs:
        return
    record_many(
        actor=actor_of(request),
        action=action,
        object_type=objs[0].audit_type,
        items=[(o.audit_id, o.audit_patient, bases.get(o.pk, "")) for o in objs],
        source=source_of(request),
        detail={"via": via} if via else None,
        read=True,
    )


# --- lookups for the audit page -------------------------------------------------------

# How the audit page turns what an admin knows (a Patient ID, a name, an accession number)
# into what the trail holds. The imaging app registers them (AppConfig.ready): alliance may
# not import it. "patient": (alliance_id, patient_id, name) -> values of AuditEvent.patient;
# "study": (alliance_id, UID or accession number) -> Study Instance UIDs;
# "patient_labels": (values of AuditEvent.patient) -> {value: "P-1001 王芳 (Wang Fang)"}.
_LOOKUPS: dict[str, Callable[..., Any]] = {}


def register_lookup(name: str, lookup: Callable[..., Any]) -> None:
    _LOOKUPS[name] = lookup


def lookup(name: str, *args: Any) -> list[str] | None:
    """The registered lookup's answer (a list of column values), or None when no app registered one."""
    found = _LOOKUPS.get(name)
    return None if found is None else list(found(*args))


def patient_labels(values: list[str]) -> dict[str, str]:
    """{patient column value: how people read it}, from the registered "patient_labels" lookup."""
    found = _LOOKUPS.get("patient_labels")
    return dict(found(values)) if found is not None and values else {}


def summary(detail: Any, limit: int = 160) -> str:
    """An event's detail as short text: "from: requested; to: accepted" rather than a dict."""
    if not isinstance(detail, dict):
        return str(detail)[:limit]
    parts = []
    for key, value in detail.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        if value not in ("", None):
            parts.append(f"{key}: {value}")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def patient_label(value: str, labels: Mapping[str, str]) -> str:
    """The patient column as people read it (several patients are comma-separated)."""
    return ", ".join(labels.get(part, part) for part in value.split(",")) if value else ""


# --- refused reads ----------------------------------------------------------------------
#
# An access function that answers 404 for an object that exists but is not the caller's calls
# `denied`. Within a web request (alliance.middleware.AuditContextMiddleware) the event is
# written after the response has gone out, so the refusal costs the caller no more time than a
# missing object's 404 (the access function's one existence check is made in both cases).


@dataclass(frozen=True)
class Denial:
    actor: Actor
    object_type: str
    object_id: str
    patient: str
    route: str
    source: str
    time: datetime


_request: ContextVar[HttpRequest | None] = ContextVar("alliance_audit_request", default=None)
_pending: ContextVar[list[Denial] | None] = ContextVar("alliance_audit_denials", default=None)

DENIED_READ = "read.denied"
DENIED_READ_COUNT = "read.denied.count"


def route_of(request: HttpRequest | None) -> str:
    """The URL pattern a request matched (its name), else its path; "" outside a request."""
    if request is None:
        return ""
    match = getattr(request, "resolver_match", None)
    return (match.view_name if match is not None and match.view_name else request.path)[:200]


def denied(actor: Actor, object_type: str, object_id: str | int, patient: str = "") -> None:
    """A read of an existing object refused to this actor (the caller answers 404). The route and
    source come from the web request being served, if any."""
    request = _request.get()
    denial = Denial(
        actor, object_type, str(object_id)[:128], patient, route_of(request), source_of(request), timezone.now()
    )
    pending = _pending.get()
    if pending is None:
        record_denials([denial])
    else:
        pending.append(denial)


@contextmanager
def collecting_denials(request: HttpRequest) -> Iterator[list[Denial]]:
    """Within: `denied` names this request's route and source, and keeps its denials in the list
    given, for the caller to pass to record_denials once the response is sent."""
    pending: list[Denial] = []
    request_token = _request.set(request)
    pending_token = _pending.set(pending)
    try:
        yield pending
    finally:
        _pending.reset(pending_token)
        _request.reset(request_token)


def record_denials(denials: Sequence[Denial]) -> None:
    """Write each denial on its own: one that fails is logged (Django's response closer would
    drop the exception unseen) and the rest are still written."""
    for denial in denials:
        try:
            _tally(denial)
        except Exception:
            log.exception(
                "Could not record a denied read of %s %s by %s:%s",
                denial.object_type,
                denial.object_id,
                denial.actor.type,
                denial.actor.id,
            )


def _tally(denial: Denial) -> None:
    """Count the denial in its minute; the first of the minute is written as an audit event."""
    minute = denial.time.replace(second=0, microsecond=0)
    with transaction.atomic():
        count = _count_up(minute, denial)
        if count == 1:
            record(
                actor=denial.actor,
                action=DENIED_READ,
                object_type=denial.object_type,
                object_id=denial.object_id,
                patient=denial.patient,
                source=denial.source,
                outcome=AuditEvent.Outcome.DENIED,
                detail={"route": denial.route, "minute": minute.isoformat()},
                time=denial.time,
            )


def _count_up(minute: datetime, denial: Denial) -> int:
    """One statement, the same on PostgreSQL and SQLite (3.35+): insert the minute's tally or
    add one to it, and say which count this denial made. The unique constraint serialises
    concurrent denials, so exactly one of them sees 1."""
    table = DeniedReadTally._meta.db_table
    sql = (
        f"INSERT INTO {table} (minute, actor_type, actor_id, object_type, object_id, count) "  # noqa: S608 - our table name
        "VALUES (%s, %s, %s, %s, %s, 1) "
        "ON CONFLICT (minute, actor_type, actor_id, object_type, object_id) "
        f"DO UPDATE SET count = {table}.count + 1 RETURNING count"
    )
    field = DeniedReadTally._meta.get_field("minute")
    params = [
        field.get_db_prep_save(minute, connection),
        denial.actor.type,
        denial.actor.id,
        denial.object_type,
        denial.object_id,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (count,) = cursor.fetchone()
    return int(count)


# Denials are written after their response is sent, a moment after they happened: a minute is
# summarised only once this much more has passed, so that no late denial is still being counted.
SUMMARY_GRACE = timedelta(minutes=1)


def summarize_denials(now: datetime | None = None) -> int:
    """For every minute that is over (and its grace too) and was refused more than once, one
    audit event with the count (the first denial already has its own); the minute's tally is
    then deleted. Safe to run twice. A tally that fails is logged and left for the next run."""
    cutoff = ((now or timezone.now()) - SUMMARY_GRACE).replace(second=0, microsecond=0)
    written = 0
    for tally_id in DeniedReadTally.objects.filter(minute__lt=cutoff).values_list("pk", flat=True):
        try:
            written += _summarize(tally_id)
        except Exception:
            log.exception("Could not summarise denied-read tally %s", tally_id)
    return written


@transaction.atomic
def _summarize(tally_id: int) -> int:
    tally = DeniedReadTally.objects.select_for_update().filter(pk=tally_id).first()
    if tally is None:
        return 0
    tally.delete()
    if tally.count < 2:
        return 0
    first = (
        AuditEvent.objects.filter(
            action=DENIED_READ,
            actor_type=tally.actor_type,
            actor_id=tally.actor_id,
            object_type=tally.object_type,
            object_id=tally.object_id,
            time__gte=tally.minute,
        )
        .order_by("time")
        .first()
    )
    record(
        actor=Actor(tally.actor_type, tally.actor_id, first.actor_name if first else "", None),
        action=DENIED_READ_COUNT,
        object_type=tally.object_type,
        object_id=tally.object_id,
        patient=first.patient if first else "",
        source=first.source if first else "",
        outcome=AuditEvent.Outcome.DENIED,
        detail={
            "count": tally.count,
            "minute": tally.minute.isoformat(),
            "route": first.detail.get("route", "") if first else "",
        },
    )
    return 1

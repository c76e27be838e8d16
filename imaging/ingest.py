"""The one path from received bytes to an indexed, stored instance (DIMSE, STOW-RS, upload).

`ingest_path` checks the file (imaging.dicom.part10), stores its bytes unchanged, and
indexes Patient, Study, Series and Instance with the audit event in one transaction.

Guarantees:
- Nothing half-stored: the file is put in place inside the transaction and deleted again
  if the transaction does not commit; no row ever points at a missing file. An error once a
  statement or COMMIT was sent may hide a commit whose answer was lost: the rows are then
  looked up on a fresh connection, and a file is deleted only when its rows are known
  absent (kept, and storage-failed reported, when that cannot be told). A duplicate whose
  stored file is missing or damaged is repaired from the copy received (audited as
  "instance.repair"). (Call it outside any transaction of your own: an outer rollback
  after we return is yours.)
- Durable before success: on a local store the file and its folder are fsynced, and the
  rows are committed, before `ingest_path` returns.
- Idempotent per SOP Instance UID: concurrent stores of one instance are serialised by a
  lock on the UID (and, on the one-round-trip path below, by the UID's unique index and
  the store's refusal to put a file over another); the second finds the first and returns
  created=False. Same UID with
  different bytes: the first stored copy is kept (DICOM says one UID is one instance;
  modalities that resend after an error must not duplicate or silently replace it);
  the result says identical=False, the log warns and the audit event records both
  checksums. The same UID under another institution is refused (uid-conflict).
- A study belongs to the institution that first stored it: another institution sending
  the same Study Instance UID is refused with uid-conflict rather than merged.
- Every attempt is audited as "instance.store": success, duplicate, or failure with the
  reason; refusals are also logged at WARNING.

The common case, a further instance of a series this process has stored before, takes one
round trip to PostgreSQL, which is also the commit (_store_known); the first instance of a
series, a duplicate, SQLite and object storage take the careful path (_store_once). Data
runs one way: imaging.dimse_services, STOW and uploads -> imaging.spool -> here -> the
index's SQL (imaging.index, one call per write path) and the store (imaging.storage); the
received file, its statuses and IngestError are in imaging.received. The
checksum and the fdatasync of the received file run on the store's pool while the file is
parsed and checked.

STOW-RS answers once every instance of its request is done, so `ingest_paths` stores them
together: each file synced and hashed on the store's pool while the others are read, the
further instances of a series put in place and indexed in one commit with one audit
statement (_store_series, which the spool's indexer uses too); all of such a run or none.

Over DIMSE (receive_path with a spool), such a further instance is answered once durable in
the process's spool, and the spool's indexer stores and indexes it right after, several of
a series in one commit (index_spooled_series). So is the first instance of a new study
(neither its Study nor its Series Instance UID in the index: one read-only query, _spooled)
and what follows it while it waits there: the indexer stores the first instances of several
new studies in one commit (index_spooled_new). See imaging/spool.py for what that promises.
With the DICOM storage on S3 (where a PUT replaces) the spool serves too: its indexer takes
the locks of a run's UIDs, uploads their objects and commits their rows in one transaction
(_series_into_object_storage); an object is deleted again only while those locks are held.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db import Error as DatabaseFailure
from django.utils.translation import gettext_noop

from alliance import audit
from alliance.models import AuditEvent, Institution
from imaging import activity, index, storage, tasks
from imaging.dicom.part10 import ParsedFile
from imaging.models import Instance
from imaging.received import (
    STATUSES,
    IngestError,
    IngestResult,
    Received,
    StoredForm,
    index_failed,
    read,
    same_data_set,
    sha256_of,
    storage_failed,
    stored_problem,
    uid_conflict,
)

__all__ = [
    "STATUSES",
    "IngestError",
    "IngestResult",
    "Spooling",
    "index_spooled",
    "index_spooled_new",
    "index_spooled_series",
    "ingest_bytes",
    "ingest_path",
    "ingest_paths",
    "receive_path",
    "start_on",
]

log = logging.getLogger(__name__)


def ingest_bytes(
    data: bytes,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str = "",
    expected_study_uid: str | None = None,
) -> IngestResult:
    path = storage.temp_dir() / f"in-{uuid.uuid4().hex}.dcm"
    try:
        path.write_bytes(data)
        return ingest_path(
            path, institution=institution, actor=actor, via=via, source=source, expected_study_uid=expected_study_uid
        )
    finally:
        path.unlink(missing_ok=True)


def ingest_path(
    path: Path,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str = "",
    expected_study_uid: str | None = None,
) -> IngestResult:
    """Store and index the DICOM file at `path` (the caller removes `path` afterwards)."""
    result = _ingest(
        Path(path), institution=institution, actor=actor, via=via, source=source, expected_study_uid=expected_study_uid
    )
    if result is None:  # only a spool makes _ingest return None
        raise RuntimeError("ingest_path returned without a result")
    return result


NOT_TRIED = None  # ingest_paths: not tried, the database or the store was found away before


@dataclass(frozen=True)
class Started:
    """A received file's sync (None off a local store) and checksum, begun on the store's pool."""

    presynced: Future[None] | None
    hashing: Future[str]


def start_on(path: Path) -> Started:
    """Begin making a received file durable and computing its checksum on the store's pool, as
    soon as it is complete: STOW-RS does so for each part while the rest of the body arrives,
    and hands them to ingest_paths."""
    activity.mark_ingest()  # a long upload is ingest too (imaging/activity.py)
    return Started(storage.presync(path), storage.background(sha256_of, path))


def ingest_paths(
    paths: list[Path],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str = "",
    expected_study_uid: str | None = None,
    started: list[Started] | None = None,
) -> list[IngestResult | Exception | None]:
    """ingest_path for the instances of one request (STOW-RS), which answers once all are
    done: what becomes of each, in order, as its IngestResult, the exception ingest_path
    would have raised, or NOT_TRIED once the database or the store was found away.

    Each file's data is synced and hashed on the store's pool while the files are read and
    checked; the further instances of a series whose parents are known (the first of a new
    series is stored alone, which makes them known) are then stored and indexed together,
    in one commit with one audit statement (_store_series, as the DIMSE spool's indexer
    does): all of them or none. A refused file costs the others nothing. What cannot go
    together (a duplicate, a file needing a PS3.10 prefix, SQLite, a transaction of the
    caller's) goes one by one, as ingest_path would store it. `started`: start_on(path) of
    each path, when the caller began them (else they begin here)."""
    paths = [Path(p) for p in paths]
    outcomes: list[IngestResult | Exception | None] = [NOT_TRIED] * len(paths)
    started = started if started is not None else [start_on(path) for path in paths]
    presynced = [s.presynced for s in started]
    hashing = [s.hashing for s in started]
    groups: dict[tuple[Any, ...], list[tuple[int, ParsedFile]]] = {}
    alone: list[tuple[int, ParsedFile]] = []
    for n, path in enumerate(paths):
        activity.mark_ingest()  # rendering on this node waits for a lull (imaging/activity.py)
        try:
            parsed = read(path, expected_study_uid)
        except IngestError as exc:
            _refused(exc, None, path, actor=actor, via=via, source=source)
            outcomes[n] = exc
            continue
        except Exception as exc:  # noqa: BLE001 - the caller reports it, as ingest_path's
            outcomes[n] = exc
            continue
        if parsed.prefix or not _autocommit_on_postgresql():
            alone.append((n, parsed))
        else:
            groups.setdefault(index.known_key(parsed.attributes, institution), []).append((n, parsed))
    store = partial(_stored_or_error, institution=institution, actor=actor, via=via, source=source)

    def one(n: int, parsed: ParsedFile) -> bool:
        outcomes[n] = store(paths[n], parsed, presynced[n], hashing[n])
        return not _away(outcomes[n])

    for n, parsed in alone:
        if not one(n, parsed):
            return outcomes
    for known_key, members in groups.items():
        if index.known_parents.get(known_key) is None:
            if not one(*members[0]):  # its parents are made and remembered
                return outcomes
            members = members[1:]
        known = index.known_parents.get(known_key)
        results: list[IngestResult] | Exception | None = None
        if known is not None and len(members) > 1:
            results = _series_together(
                [(paths[n], parsed, presynced[n], hashing[n]) for n, parsed in members],
                known,
                known_key,
                institution=institution,
                actor=actor,
                via=via,
                source=source,
            )
        if isinstance(results, Exception):
            for n, _ in members:
                outcomes[n] = results
            if _away(results):
                return outcomes
        elif results is not None:
            for (n, _), result in zip(members, results, strict=True):
                outcomes[n] = result
        else:  # not together: one by one, each on its path
            for n, parsed in members:
                if not one(n, parsed):
                    return outcomes
    return outcomes


def _away(outcome: IngestResult | Exception | None) -> bool:
    """Whether this outcome says the database or the store is away (the rest is not tried)."""
    if isinstance(outcome, IngestError):
        return outcome.code == "storage-failed"  # (index_failed's too)
    return isinstance(outcome, OperationalError | InterfaceError)


def _stored_or_error(
    path: Path,
    parsed: ParsedFile,
    presynced: Future[None] | None,
    hashing: Future[str],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
) -> IngestResult | Exception:
    """One instance of ingest_paths, as _ingest stores it once read."""
    try:
        with StoredForm(path, parsed) as received:
            if received.path == path:
                received.hashing = hashing
            else:
                presynced = None
            return _store(received, institution=institution, actor=actor, via=via, source=source, presynced=presynced)
    except IngestError as exc:
        _refused(exc, parsed, path, actor=actor, via=via, source=source)
        return exc
    except Exception as exc:  # noqa: BLE001 - the caller reports it, as ingest_path's
        return exc


def _series_together(
    entries: list[tuple[Path, ParsedFile, Future[None] | None, Future[str]]],
    known: tuple[int, int, int],
    known_key: tuple[Any, ...],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
) -> list[IngestResult] | Exception | None:
    """Several instances of one known series of ingest_paths in one commit, once their data is
    durable: their results, the one error all of them failed with (nothing of any of them
    stored, every refusal audited in one statement), or None when they cannot go together
    (nothing changed: one by one then)."""
    try:
        received = [Received(p, path, path.stat().st_size, hashing=h) for path, p, _, h in entries]
    except OSError as exc:
        error = storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc)
        _refused_together(error, [p.sop_uid for _, p, _, _ in entries], actor=actor, via=via, source=source)
        return error
    try:
        for (_, _, presynced, _), r in zip(entries, received, strict=True):
            if presynced is not None:
                _wait_durable(presynced, r.key())
        return _store_series(received, known, known_key, institution=institution, actor=actor, via=via, source=source)
    except IngestError as exc:
        _refused_together(exc, [r.attributes.sop_uid for r in received], actor=actor, via=via, source=source)
        return exc
    except Exception as exc:  # noqa: BLE001 - the caller reports it, as ingest_path's
        return exc


def _refused_together(exc: IngestError, uids: list[str], *, actor: audit.Actor, via: str, source: str) -> None:
    """_refused for every instance of a batch that failed as one: logged, and audited in one
    statement (the database may be what failed: then the loss of the events is logged)."""
    log.warning("refused %d instances via %s from %s (%s): %s", len(uids), via, source or "-", actor.name, exc)
    try:
        audit.record_many(
            actor=actor,
            action="instance.store",
            object_type="instance",
            items=[(uid, "", "") for uid in uids],
            source=source,
            outcome=AuditEvent.Outcome.FAILURE,
            detail={"via": via, "code": exc.code, "reason": exc.reason[:500], "dicom_status": exc.dicom_status},
        )
    except DatabaseFailure:
        log.exception("could not audit the refusal of %d instances", len(uids))


def receive_path(
    path: Path,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
    spooling: Spooling | None,
    expected_sop_uid: str | None = None,
) -> IngestResult | None:
    """ingest_path for an instance received over DIMSE: with `spooling`, a further instance of
    a series this process has indexed, or one of a new study (_spooled), is made durable in
    the spool and indexed right after (imaging/spool.py), and None is returned.
    `expected_sop_uid`: the C-STORE's Affected SOP Instance UID, which the data set's must
    be. The caller removes `path` afterwards."""
    return _ingest(
        Path(path),
        institution=institution,
        actor=actor,
        via=via,
        source=source,
        spooling=spooling,
        expected_sop_uid=expected_sop_uid,
    )


@dataclass
class Spooling:
    """The spool of this process and the association an instance arrived on."""

    spool: Any  # imaging.spool.Spool
    association: Any  # imaging.spool._Association


def _ingest(
    path: Path,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
    expected_study_uid: str | None = None,
    spooling: Spooling | None = None,
    expected_sop_uid: str | None = None,
) -> IngestResult | None:
    activity.mark_ingest()  # rendering on this node waits for a lull (imaging/activity.py)
    parsed: ParsedFile | None = None
    # While we read and check it, the pool makes its data durable and computes its checksum;
    # not for what may go to the spool, which syncs it on this thread (reading it takes a tenth
    # of a millisecond, less than handing work to the pool costs) and whose indexer hashes it.
    presynced = storage.presync(path) if spooling is None else None
    hashing = storage.background(sha256_of, path) if spooling is None else None
    try:
        parsed = read(path, expected_study_uid, expected_sop_uid)
        if spooling is not None:
            if _spooled(path, parsed, institution, spooling):
                return None
            hashing = storage.background(sha256_of, path)
        with StoredForm(path, parsed) as received:
            if received.path == path:
                received.hashing = hashing
            else:  # a staged copy with the PS3.10 prefix is stored instead
                presynced = None
            return _store(received, institution=institution, actor=actor, via=via, source=source, presynced=presynced)
    except IngestError as exc:
        _refused(exc, parsed, path, actor=actor, via=via, source=source)
        raise


def index_spooled(
    path: Path, parsed: ParsedFile | None, *, institution: Institution, actor: audit.Actor, via: str, source: str
) -> IngestResult:
    """Store and index a file the spool has made durable (its indexer, and recovery after a
    crash, which reads the file again: `parsed` None): ingest_path without waiting for its
    data to sync."""
    activity.mark_ingest()  # indexing what was received is ingest too (imaging/activity.py)
    durable: Future[None] = Future()
    durable.set_result(None)
    recovering = parsed is None
    try:
        if parsed is None:
            parsed = read(path, None)
        with StoredForm(path, parsed) as received:
            done = _indexed_before_the_stop(received, institution) if recovering else None
            if done is not None:
                return done
            return _store(received, institution=institution, actor=actor, via=via, source=source, presynced=durable)
    except IngestError as exc:
        _refused(exc, parsed, path, actor=actor, via=via, source=source)
        raise


def _indexed_before_the_stop(received: Received, institution: Institution) -> IngestResult | None:
    """A spool entry whose rows had committed when the process stopped, before it removed the
    entry: the same bytes under the same UID in the same institution. Its store was audited
    then; recovery only drops the entry (a duplicate event would say the device sent twice)."""
    existing = Instance.objects.select_related("series__study").filter(sop_uid=received.attributes.sop_uid).first()
    if existing is None or existing.series.study.institution_id != institution.pk:
        return None
    if existing.sha256 != received.digest() or stored_problem(existing) is not None:
        return None  # stored as any other: other bytes are audited, a lost file repaired
    log.info("spooled %s had been indexed before the stop", existing.sop_uid)
    return IngestResult(instance=existing, created=False, study=existing.series.study, series=existing.series)


def index_spooled_series(
    entries: list[tuple[Path, ParsedFile, tuple[Any, ...]]],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
) -> list[IngestResult] | None:
    """Store and index several spooled files of one series this process knows, in one
    round trip that is also the commit: the links into place (each folder made durable
    once), the counters bumped once, and every audit event and instance row. None when that
    cannot be done (the parents are no longer known, a file or a row of one of them is
    already there, a parent was deleted): nothing is changed then, and the caller indexes
    them one by one (index_spooled), which sorts out each case. Each entry comes with the
    remembered-parents key _spooled computed for it."""
    activity.mark_ingest()  # indexing what was received is ingest too (imaging/activity.py)
    known_key = entries[0][2]
    known = index.known_parents.get(known_key)
    if known is None or not _autocommit_on_postgresql():
        return None
    if any(key != known_key for _, _, key in entries):
        return None
    received = [Received(parsed, path, path.stat().st_size) for path, parsed, _ in entries]
    return _store_series(received, known, known_key, institution=institution, actor=actor, via=via, source=source)


def _store_series(
    received: list[Received],
    known: tuple[int, int, int],
    known_key: tuple[Any, ...],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
) -> list[IngestResult] | None:
    """index_spooled_series once its files are durable (on a local store) and wrapped:
    stored and indexed in one commit, or None with nothing changed."""
    keys = [r.key() for r in received]
    if len(set(keys)) != len(keys):
        return None  # one instance twice in the batch
    for r in received:
        r.digest()
    if not storage.places_exclusively():
        return _series_into_object_storage(
            received, keys, known, known_key, institution=institution, actor=actor, via=via, source=source
        )
    placed = {r.attributes.sop_uid: key for r, key in zip(received, keys, strict=True)}
    try:
        storage.put_durable_files([(r.path, key) for r, key in zip(received, keys, strict=True)])
    except FileExistsError:
        return None
    except Exception as exc:
        log.exception("storing %d spooled instances failed", len(keys))
        raise storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc
    try:
        results = index.write_series(received, keys, known, institution, actor=actor, via=via, source=source)
    except BaseException as exc:
        ids = _settle(exc, True, placed)
        if len(ids) < len(placed):  # (one implicit transaction: none of them, unless a resend raced)
            if isinstance(exc, IntegrityError):
                index.known_parents.forget(known_key)
                return None
            if isinstance(exc, DatabaseError):
                raise index_failed(exc) from exc
            raise
        results = [_committed(r, key, ids[r.attributes.sop_uid]) for r, key in zip(received, keys, strict=True)]
    transaction.on_commit(_render_later(*(r.instance.pk for r in results)), robust=True)  # runs now
    return results


def index_spooled_new(
    entries: list[tuple[Path, ParsedFile, tuple[Any, ...], str]],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
) -> bool:
    """Store and index the first spooled instance of several series new to this process (each
    of another series; _spooled found neither its study nor its series in the index) in one
    transaction that holds their UIDs' locks: the files linked into place (each folder synced
    once), the parents created as new, the rows written, one commit. Each entry: its path,
    what was parsed of it, its remembered-parents key and its source (each association of one
    device, `actor`, has its own).
    False, with nothing changed, when that cannot be done (one of them is stored already, a
    parallel store made a study or a series someone else's, a SQLite or object store): the
    caller indexes each on its own (index_spooled), which sorts out each case and audits a
    refusal. Raises when the database failed (nothing indexed; the files of rows known absent
    deleted again, a lost COMMIT answer settled as _settle does)."""
    activity.mark_ingest()  # indexing what was received is ingest too (imaging/activity.py)
    if not storage.places_exclusively() or not _autocommit_on_postgresql():
        return False  # object storage deletes an object only under its UID's lock: one by one
    received = [Received(parsed, path, path.stat().st_size) for path, parsed, _, _ in entries]
    uids = [r.attributes.sop_uid for r in received]
    if len(set(uids)) != len(uids):
        return False
    placed: dict[str, str] = {}
    results: list[IngestResult] = []
    committing = False
    studies_new = len({r.attributes.study_uid for r in received}) == len(received)
    try:
        with transaction.atomic():
            if studies_new:
                stored, patients = index.lock_new(received, institution)
            else:
                stored, patients = index.lock_and_find_many(uids), []
            if stored:
                transaction.set_rollback(True)  # (with the patients lock_new made)
                return False  # a resend or a conflict: each on the careful path
            for r in received:
                r.digest()
            keys = [r.key() for r in received]
            try:
                # On this thread, each folder synced once: a pool job per file (the link's
                # folders synced in parallel) cost more in hand-offs between threads than the
                # fsyncs it overlapped, 0.24 ms of CPU per instance on four associations.
                storage.put_durable_files([(r.path, key) for r, key in zip(received, keys, strict=True)])
            except FileExistsError:
                return False  # a file no row names under a key: each on its own sorts it out
            except Exception as exc:
                log.exception("storing %d spooled instances of new series failed", len(keys))
                raise storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc
            placed.update((r.attributes.sop_uid, key) for r, key in zip(received, keys, strict=True))
            known_keys = [known_key for _, _, known_key, _ in entries]
            sources = [source for _, _, _, source in entries]
            if studies_new:
                results = index.write_new(
                    received,
                    keys,
                    institution,
                    patients=patients,
                    actor=actor,
                    via=via,
                    sources=sources,
                    known_keys=known_keys,
                )
            else:  # two new series of one study: the second finds the study the first made
                for r, known_key, source in zip(received, known_keys, sources, strict=True):
                    written = index.write_careful(
                        r,
                        placed[r.attributes.sop_uid],
                        institution,
                        actor=actor,
                        via=via,
                        source=source,
                        known_key=known_key,
                        known=None,
                        fresh=True,
                    )
                    results.append(written)
            transaction.on_commit(_render_later(*(r.instance.pk for r in results)), robust=True)
            committing = True
    except IngestError:  # a refusal: rolled back, each on its own will say which and why
        _settle_quietly(placed)
        return False
    except BaseException as exc:
        committed = _settle(exc, committing, placed)
        if not committing or len(committed) < len(placed):
            if isinstance(exc, IntegrityError):
                return False
            if isinstance(exc, DatabaseError):
                raise index_failed(exc) from exc
            raise
        _enqueue_renders(list(committed.values()))  # the COMMIT's answer was lost, not the commit
    return True


def _settle_quietly(placed: dict[str, str]) -> None:
    """The files of a transaction rolled back before its COMMIT was sent: none has its rows."""
    for key in placed.values():
        _delete_quietly(key)


def _series_into_object_storage(
    received: list[Received],
    keys: list[str],
    known: tuple[int, int, int],
    known_key: tuple[Any, ...],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
) -> list[IngestResult] | None:
    """index_spooled_series on S3, where a PUT replaces any object: in one transaction holding
    every instance's lock (index.lock_and_find_many), the objects uploaded (several at once)
    once none of them is indexed, then the rows; None, with nothing changed, when one is
    already indexed or a remembered parent has gone. An object is deleted again only while
    the locks are held (a store of the same instance waiting for them would otherwise have
    its object deleted), or once its rows are known absent after a lost COMMIT answer."""
    uids = [r.attributes.sop_uid for r in received]
    placed: dict[str, str] = {}
    committing = False
    try:
        with transaction.atomic():
            if index.lock_and_find_many(uids):
                return None  # a resend or a duplicate: one by one, each on the careful path
            try:
                storage.put_files([(r.path, key) for r, key in zip(received, keys, strict=True)])
            except Exception as exc:
                log.exception("storing %d spooled instances failed", len(keys))
                raise storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc
            placed = dict(zip(uids, keys, strict=True))
            try:
                results = index.write_series(received, keys, known, institution, actor=actor, via=via, source=source)
            except BaseException:
                for key in placed.values():
                    _delete_quietly(key)  # under the locks: rolled back, nobody else's yet
                placed = {}
                raise
            committing = True
    except BaseException as exc:
        if not committing:  # rolled back, its objects deleted
            if isinstance(exc, IntegrityError):
                index.known_parents.forget(known_key)  # a remembered parent has gone
                return None
            if isinstance(exc, DatabaseError):
                raise index_failed(exc) from exc
            raise
        ids = _settle(exc, True, placed)  # the COMMIT failed: its answer may have been lost
        if len(ids) < len(placed):
            raise index_failed(exc) from exc
        results = [_committed(r, key, ids[r.attributes.sop_uid]) for r, key in zip(received, keys, strict=True)]
    transaction.on_commit(_render_later(*(r.instance.pk for r in results)), robust=True)  # runs now
    return results


def _spooled(path: Path, parsed: ParsedFile, institution: Institution, spooling: Spooling) -> bool:
    """Hand the instance to the spool when the index cannot refuse it for its parents, and its
    indexer can store runs of a series together (PostgreSQL; a local store or S3); whether it
    was handed over (and is durable in the local spool). That is when its parents are known to
    this process (a further instance of a series: the index can refuse it only for a SOP
    Instance UID of another institution's); or when they are new (neither its Study nor its
    Series Instance UID is in the index, one read-only query) or follow such a new series'
    first instance still in the spool (the same parent values), where only a parallel store
    of the same UIDs in another process can make a refusal (the indexer sets such a file
    aside, as it does a SOP Instance UID conflict). An instance of a study or series new
    here and still in the spool, but with other parent values (another Patient ID, say),
    waits for the spool to index them, then takes the careful path: its refusal, if any, is
    its own and told to its sender.
    A known study with a new series takes the careful path: the study may be another
    institution's or another patient's, and the sender must be told."""
    if parsed.prefix or not _autocommit_on_postgresql():
        return False
    known_key = index.known_key(parsed.attributes, institution)
    new = False
    if index.known_parents.get(known_key) is None:
        if not spooling.spool.follows_new(known_key):
            a = parsed.attributes
            if not spooling.spool.wait_for_new(a.study_uid, a.series_uid):
                raise IngestError(
                    "storage-failed", gettext_noop("the archive cannot index instances at the moment; try again later")
                )
            if not index.parents_absent(a):
                return False  # (after wait_for_new: then what this process answered is indexed)
        new = True
    try:
        if not spooling.spool.put(path, parsed, spooling.association, known_key, new=new):
            return False  # the spool is at its bound: indexed before the answer instead
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # the spool is on another file system than the received file
            return False
        log.exception("spooling %s failed", parsed.sop_uid)
        raise storage_failed(gettext_noop("the file could not be made durable (%(error)s)"), exc) from exc
    return True


def _refused(
    exc: IngestError, parsed: ParsedFile | None, path: Path, *, actor: audit.Actor, via: str, source: str
) -> None:
    exc.sop_uid = parsed.sop_uid if parsed is not None else exc.sop_uid
    name = exc.sop_uid or path.name
    log.warning("refused %s via %s from %s (%s): %s", name, via, source or "-", actor.name, exc)
    _audit_refusal(exc, object_id=name, actor=actor, via=via, source=source)


def _store(
    received: Received,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
    presynced: Future[None] | None = None,
) -> IngestResult:
    use_known = True
    known_key = index.known_key(received.attributes, institution)
    known = index.known_parents.get(known_key)
    if known is not None and _one_round_trip_possible():
        try:
            result = _store_known(
                received, known, institution=institution, actor=actor, via=via, source=source, presynced=presynced
            )
        except IntegrityError:
            # A parent remembered has gone (a study deleted since), or the SOP Instance UID was
            # indexed meanwhile: the careful path below finds out which.
            index.known_parents.forget(known_key)
            use_known = False
        else:
            if result is not None:
                return result
    try:
        return _store_once(
            received,
            institution=institution,
            actor=actor,
            via=via,
            source=source,
            known_key=known_key,
            known=known if use_known else None,
            presynced=presynced,
        )
    except IntegrityError:
        # A parent row remembered from an earlier store has gone (a study deleted since):
        # once more, reading the parents afresh.
        index.known_parents.forget(known_key)
        try:
            return _store_once(
                received, institution=institution, actor=actor, via=via, source=source, known_key=known_key, known=None
            )
        except IntegrityError as exc:
            raise index_failed(exc) from exc


def _one_round_trip_possible() -> bool:
    """_store_known needs PostgreSQL in autocommit (its statements commit as one implicit
    transaction) and a store that never replaces a file (a local folder)."""
    return _autocommit_on_postgresql() and storage.places_exclusively()


def _autocommit_on_postgresql() -> bool:
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own; `connection` finds it on every attribute
    return db.vendor == "postgresql" and not db.in_atomic_block and db.get_autocommit()


def _store_known(
    received: Received,
    known: tuple[int, int, int],
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
    presynced: Future[None] | None,
) -> IngestResult | None:
    """A further instance of a series this process has stored before, in one round trip that
    is also the commit. None when a file is already under the instance's key (a duplicate,
    most likely): the careful path decides then.

    The file goes into place first, where nothing else can be put over it (a hard link is
    created or fails atomically), then becomes durable; then the counters, the audit event
    and the instance row go to PostgreSQL as one simple query, which it runs as one
    implicit transaction. A duplicate SOP Instance UID or a parent deleted since fails the
    whole query (IntegrityError): the file is removed and the caller takes the careful path.
    """
    a = received.attributes
    key = received.key()
    try:
        pending = storage.start_put(received.path, key, presynced)
    except FileExistsError:
        return None
    except Exception as exc:  # any backend's failure (OSError...) is ours to report
        log.exception("storing %s failed", key)
        raise storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc
    durable = partial(_wait_durable, pending, key)
    try:
        result = index.write_known(
            received, key, known, institution, actor=actor, via=via, source=source, durable=durable
        )
    except BaseException as exc:  # an IngestError is ours, raised before anything was sent
        committed = _settle(exc, not isinstance(exc, IngestError), {a.sop_uid: key})
        if not committed:
            if isinstance(exc, DatabaseError) and not isinstance(exc, IntegrityError):
                raise index_failed(exc) from exc
            raise
        result = _committed(received, key, committed[a.sop_uid])
    transaction.on_commit(_render_later(result.instance.pk), robust=True)  # committed: runs now
    return result


def _committed(received: Received, key: str, pk: int) -> IngestResult:
    """The result of a store whose commit's answer was lost, its rows found afresh."""
    instance = Instance.objects.select_related("series__study").get(pk=pk)
    return IngestResult(instance=instance, created=True, study=instance.series.study, series=instance.series)


def _store_once(
    received: Received,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
    known_key: tuple[Any, ...],
    known: tuple[int, int, int] | None,
    presynced: Future[None] | None = None,
) -> IngestResult:
    """The careful path. `known`: the parents remembered under `known_key` (index.known), if they
    are to be trusted; None reads them from the database."""
    a = received.attributes
    key = received.key()
    file_placed = False
    commits = not connection.in_atomic_block  # else the caller's transaction commits, later
    committing = False
    try:
        with transaction.atomic():
            existing_pk = index.lock_and_find(a.sop_uid)
            if existing_pk is not None:
                existing = Instance.objects.select_related("series__study").get(pk=existing_pk)
                return _duplicate(existing, received, institution=institution, actor=actor, via=via, source=source)
            received.digest()
            key, pending = _start_put(received.path, key, presynced)
            file_placed = True
            _wait_durable(pending, key)
            # Durable first, then the rows: the study and series rows stay locked (against
            # parallel associations into the same series) only from their update to the commit.
            try:
                result = index.write_careful(
                    received, key, institution, actor=actor, via=via, source=source, known_key=known_key, known=known
                )
            except BaseException:
                if not storage.places_exclusively():
                    # Rolled back: the object goes while the UID's lock is held, for a PUT
                    # replaces, and a store of the same instance waiting for the lock would
                    # put its object under the same key, which deleting later would take.
                    _delete_quietly(key)
                    file_placed = False
                raise
            transaction.on_commit(_render_later(result.instance.pk), robust=True)
            committing = commits  # what fails from here on is the COMMIT, whose answer may be lost
        return result
    except BaseException as exc:
        if file_placed and _settle(exc, committing, {a.sop_uid: key}):
            _enqueue_render(result.instance.pk)  # its on_commit callbacks were dropped with the error
            return result
        if isinstance(exc, DatabaseError) and not isinstance(exc, IntegrityError):
            raise index_failed(exc) from exc
        raise


def _start_put(path: Path, key: str, presynced: Future[None] | None = None) -> tuple[str, Future[None]]:
    """Put the file under `key`, or beside it when a file is already there: the caller holds
    the UID's lock and found no row, so that file is one no row names (a store that stopped
    before its commit, or one that is about to fail); it is left alone. The key used, and
    the future of its durability."""
    try:
        try:
            return key, storage.start_put(path, key, presynced)
        except FileExistsError:
            if _is_link_of(key, path):
                return key, storage.background(_sync_link, key)
            if _same_bytes_under(key, path):
                log.warning("the file under %s, which no row names, is this instance's: taken over", key)
                return key, storage.background(_sync_link, key)
            beside = storage.alternative_key(key)
            log.warning("a file no index row names is under %s; storing this instance as %s", key, beside)
            return beside, storage.start_put(path, beside, presynced)
    except Exception as exc:  # any backend's failure (OSError, botocore's ClientError...) is ours to report
        log.exception("storing %s failed", key)
        raise storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc


def _is_link_of(key: str, path: Path) -> bool:
    """Whether the file under `key` is the file at `path` itself (a spool entry linked into place
    by an earlier attempt, before a stop or a lost commit answer): taken over, not stored beside."""
    dest = storage.local_path_for_key(key)
    try:
        return dest is not None and os.path.samefile(dest, path)
    except FileNotFoundError:
        return False


def _same_bytes_under(key: str, path: Path) -> bool:
    """Whether the file under `key` holds exactly the bytes at `path`: a copy kept when an
    earlier store could not tell whether its commit happened (it did not: the caller holds the
    UID's lock and found no row). The resend takes it over instead of leaving it an orphan.
    Should it be the file of a one-round-trip store of the same instance still committing,
    that store fails on the unique UID, removes the file, and its careful retry finds this
    row and repairs the file from its own copy (audited as instance.repair)."""
    dest = storage.local_path_for_key(key)
    try:
        return dest is not None and dest.stat().st_size == path.stat().st_size and sha256_of(dest) == sha256_of(path)
    except (OSError, IngestError):
        return False


def _sync_link(key: str) -> None:
    dest = storage.local_path_for_key(key)
    assert dest is not None  # only a local store links
    storage.fdatasync(dest)
    storage.fsync_dir(dest.parent)


def _settle(exc: BaseException, sent: bool, placed: dict[str, str]) -> dict[str, int]:
    """After `exc` in a store whose files are placed (SOP Instance UID -> key): which of them have
    their rows committed (SOP Instance UID -> primary key). Once a statement or COMMIT was
    `sent`, an error may hide a commit whose answer was lost (a backend killed, a connection
    cut), so the rows are looked up on a fresh connection: only the files of rows known absent
    are deleted. When that cannot be told, every file is kept and storage-failed raised."""
    committed: dict[str, int] = {}
    if sent and not isinstance(exc, IntegrityError):  # PostgreSQL's refusal is an answer: rolled back
        rows = _rows_seen_afresh(list(placed))
        if rows is None:
            log.error("cannot tell whether the rows of %s committed; their files are kept", ", ".join(placed))
            raise index_failed(exc) from exc
        committed = {uid: pk for uid, (pk, key) in rows.items() if placed.get(uid) == key}
        if committed:
            log.warning("the answer to a commit was lost, but the rows of %s are there", ", ".join(committed))
    for uid, key in placed.items():
        if uid not in committed:
            _delete_quietly(key)
    return committed


_SETTLE_SECONDS = 10.0  # how long a store waits for the database to tell whether it committed
_SETTLE_RETRY_SECONDS = 0.2


def _rows_seen_afresh(sop_uids: list[str]) -> dict[str, tuple[int, str]] | None:
    """The instance rows of these UIDs (uid -> (primary key, storage key)) read on a new
    connection, trying again until the database answers or _SETTLE_SECONDS pass (None)."""
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        try:
            connection.close()  # never the connection that failed
            return index.committed_rows(sop_uids)
        except DatabaseError:
            if time.monotonic() >= deadline:
                log.exception("the database did not answer whether %s committed", ", ".join(sop_uids))
                return None
            time.sleep(_SETTLE_RETRY_SECONDS)


def _wait_durable(pending: Future[None], key: str) -> None:
    """The rows are written only once the file and its folder are durable (its data was
    synced while we read and checked it)."""
    try:
        pending.result()
    except Exception as exc:
        log.exception("syncing %s to disk failed", key)
        raise storage_failed(gettext_noop("the file could not be made durable (%(error)s)"), exc) from exc


def _delete_quietly(key: str) -> None:
    try:
        storage.delete_key(key)
    except Exception:  # the original error matters more; the orphan is logged for cleanup
        log.exception("could not delete %s after a failed ingest; remove it by hand", key)


def _duplicate(
    existing: Instance, received: Received, *, institution: Institution, actor: audit.Actor, via: str, source: str
) -> IngestResult:
    series = existing.series
    study = series.study
    if study.institution_id != institution.pk:
        raise uid_conflict("SOP Instance UID of another institution", existing.sop_uid)
    problem = stored_problem(existing)
    if problem is not None:
        _repair(existing, received, problem, actor=actor, via=via, source=source)
    # The same data set under another File Meta Information (DIMSE and STOW senders write their
    # own) is the same instance: PS3.10 7.1, the meta describes the file, not the instance.
    identical = existing.sha256 == received.digest() or same_data_set(existing, received)
    if not identical:
        log.warning(
            "SOP Instance UID %s received again via %s with other bytes (sha256 %s); kept the stored copy (sha256 %s)",
            existing.sop_uid,
            via,
            received.sha256,
            existing.sha256,
        )
    detail = {"via": via, "duplicate": True, "identical": identical, "sha256": received.sha256}
    if existing.sha256 != received.sha256:
        detail["kept_sha256"] = existing.sha256
    if problem is not None:
        detail["repaired"] = problem
    audit.record(
        actor=actor,
        action="instance.store",
        object_type="instance",
        object_id=existing.sop_uid,
        patient=str(study.patient_id),
        source=source,
        detail=detail,
    )
    return IngestResult(instance=existing, created=False, study=study, series=series, identical=identical)


def _repair(existing: Instance, received: Received, problem: str, *, actor: audit.Actor, via: str, source: str) -> None:
    """Put the copy just received under the row's storage key, in place of a missing or damaged
    file (the caller holds the UID's lock), durable before the row is brought to describe it."""
    log.error("the stored file of %s is %s; repaired from the copy received via %s", existing.sop_uid, problem, via)
    try:
        storage.replace_file(received.path, existing.storage_key)
    except Exception as exc:  # any backend's failure (OSError...) is ours to report
        log.exception("repairing %s failed", existing.storage_key)
        raise storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc
    previous = existing.sha256
    existing.sha256, existing.size_bytes = received.digest(), received.size
    existing.transfer_syntax_uid = received.parsed.transfer_syntax_uid
    existing.save(update_fields=["sha256", "size_bytes", "transfer_syntax_uid"])
    audit.record(
        actor=actor,
        action="instance.repair",
        object_type="instance",
        object_id=existing.sop_uid,
        patient=str(existing.series.study.patient_id),
        source=source,
        detail={"via": via, "problem": problem, "sha256": existing.sha256, "previous_sha256": previous},
    )


# --- audit and follow-up --------------------------------------------------------------


def _audit_refusal(exc: IngestError, *, object_id: str, actor: audit.Actor, via: str, source: str) -> None:
    try:
        with transaction.atomic():
            audit.record(
                actor=actor,
                action="instance.store",
                object_type="instance",
                object_id=object_id,
                source=source,
                outcome=AuditEvent.Outcome.FAILURE,
                detail={"via": via, "code": exc.code, "reason": exc.reason[:500], "dicom_status": exc.dicom_status},
            )
    except DatabaseFailure:  # a lost connection is an InterfaceError, no DatabaseError
        log.exception("could not audit the refusal of %s", object_id)


def _enqueue_render(instance_id: int) -> None:
    _enqueue_renders([instance_id])


def _enqueue_renders(instance_ids: list[int]) -> None:
    tasks.schedule_renders(instance_ids)


def _render_later(*instance_ids: int) -> Callable[[], None]:
    """An on_commit callback with a __qualname__ (Django names a robust callback that
    failed by it; a functools.partial has none, and the log call would raise instead)."""

    def render() -> None:
        _enqueue_renders(list(instance_ids))

    return render

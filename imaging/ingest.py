"""The one path from received bytes to an indexed, stored instance (DIMSE, STOW-RS, upload).

`ingest_path` checks the file (imaging.dicom.part10), stores its bytes unchanged, and
indexes Patient, Study, Series and Instance with the audit event in one transaction.

Guarantees:
- Nothing half-stored: the file is put in place inside the transaction and deleted again
  if the transaction does not commit; no row ever points at a missing file. (Call it
  outside any transaction of your own: an outer rollback after we return is yours.)
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
series, a duplicate, SQLite and object storage take the careful path (_store_once). The
checksum and the fdatasync of the received file run on the store's pool while the file is
parsed and checked.

Over DIMSE (receive_path with a spool), such a further instance is answered once durable in
the process's spool, and the spool's indexer stores and indexes it right after, several of
a series in one commit (index_spooled_series); see imaging/spool.py for what that promises.
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import hashlib
import logging
import mmap
import os
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, connection, connections, models, transaction
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from alliance import audit
from alliance.models import AuditEvent, Institution
from imaging import storage
from imaging.dicom.datasets import Attributes
from imaging.dicom.part10 import InvalidFile, ParsedFile, read_file
from imaging.models import Instance, Patient, Series, Study

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=models.Model)

# code -> (DIMSE status, HTTP status). PS3.4 B.2.3 (C-STORE) and PS3.7 C.4.2.1.4:
# A7xx refused: out of resources; A9xx error: data set does not match SOP class;
# Cxxx error: cannot understand; 0122 refused: SOP class not supported.
STATUSES: dict[str, tuple[int, int]] = {
    "not-dicom": (0xC000, 400),
    "truncated": (0xC000, 400),
    "missing-attribute": (0xA900, 400),
    "invalid-attribute": (0xA900, 400),
    "unsupported-sop-class": (0x0122, 415),
    "unsupported-transfer-syntax": (0xC000, 415),
    "too-large": (0xA700, 413),
    "study-mismatch": (0xA900, 409),
    "uid-mismatch": (0xA900, 409),  # the request, the file meta and the data set name other instances
    "uid-conflict": (0xA900, 409),
    "storage-failed": (0xA700, 503),
}
_HASH_CHUNK = 1024 * 1024
_LOCK_NAMESPACE = 3_000_003  # pg_advisory_xact_lock(namespace, hashtext(SOP Instance UID))


class IngestError(Exception):
    """An instance was refused; nothing of it is stored.

    `reason` is English (logs, DIMSE Error Comment, STOW-RS); `localized_reason` is the
    same in the active language, for pages. `template` % `params` == `reason`.
    """

    def __init__(self, code: str, template: str, **params: object) -> None:
        self.code = code
        self.template = template
        self.params = params
        self.reason = template % params
        self.dicom_status, self.http_status = STATUSES[code]
        self.sop_uid = ""  # the refused instance's SOP Instance UID, when the file named one
        super().__init__(f"{code}: {self.reason}")

    @property
    def localized_reason(self) -> str:
        return gettext(self.template) % self.params


def _storage_failed(template: str, exc: BaseException) -> IngestError:
    error = str(exc) if isinstance(exc, OSError) else type(exc).__name__
    return IngestError("storage-failed", template, error=error)


@dataclass
class IngestResult:
    instance: Instance
    created: bool  # False when the SOP Instance UID was already stored
    study: Study
    series: Series
    identical: bool = True  # False when an earlier copy with other bytes was kept


@dataclass
class _Received:
    """The file as it will be stored: `prefix` + the bytes at `path`."""

    parsed: ParsedFile
    path: Path
    size: int
    hashing: Future[str] | None = None  # _sha256(path), started on the pool before parsing
    sha256: str = ""

    def digest(self) -> str:
        if not self.sha256:
            self.sha256 = self.hashing.result() if self.hashing is not None else _sha256(self.path)
        return self.sha256

    @property
    def attributes(self) -> Attributes:
        return self.parsed.attributes


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
    a series this process has indexed is made durable in the spool and indexed right after
    (imaging/spool.py), and None is returned. `expected_sop_uid`: the C-STORE's Affected SOP
    Instance UID, which the data set's must be. The caller removes `path` afterwards."""
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
    parsed: ParsedFile | None = None
    # While we read and check it, the pool makes its data durable and computes its checksum;
    # not for what may go to the spool, which syncs it on this thread (reading it takes a tenth
    # of a millisecond, less than handing work to the pool costs) and whose indexer hashes it.
    presynced = storage.presync(path) if spooling is None else None
    hashing = storage.background(_sha256, path) if spooling is None else None
    try:
        parsed = _read(path, expected_study_uid, expected_sop_uid)
        if spooling is not None:
            if _spooled(path, parsed, institution, spooling):
                return None
            hashing = storage.background(_sha256, path)
        with _StoredForm(path, parsed) as received:
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
    durable: Future[None] = Future()
    durable.set_result(None)
    recovering = parsed is None
    try:
        if parsed is None:
            parsed = _read(path, None)
        with _StoredForm(path, parsed) as received:
            done = _indexed_before_the_stop(received, institution) if recovering else None
            if done is not None:
                return done
            if recovering:
                _unplace_before_the_stop(received)
            return _store(received, institution=institution, actor=actor, via=via, source=source, presynced=durable)
    except IngestError as exc:
        _refused(exc, parsed, path, actor=actor, via=via, source=source)
        raise


def _indexed_before_the_stop(received: _Received, institution: Institution) -> IngestResult | None:
    """A spool entry whose rows had committed when the process stopped, before it removed the
    entry: the same bytes under the same UID in the same institution. Its store was audited
    then; recovery only drops the entry (a duplicate event would say the device sent twice)."""
    existing = Instance.objects.select_related("series__study").filter(sop_uid=received.attributes.sop_uid).first()
    if existing is None or existing.series.study.institution_id != institution.pk:
        return None
    if existing.sha256 != received.digest():
        return None
    log.info("spooled %s had been indexed before the stop", existing.sop_uid)
    return IngestResult(instance=existing, created=False, study=existing.series.study, series=existing.series)


def _unplace_before_the_stop(received: _Received) -> None:
    """A spool entry the indexer had linked into place when the process stopped, before its rows
    committed: the file under its key is the entry itself (the same inode), which no row names.
    That link goes, and the entry is stored as any other; else it would be stored beside it,
    under another key, and the first link would be left an orphan."""
    a = received.attributes
    dest = storage.local_path_for_key(storage.storage_key_for(a.study_uid, a.series_uid, a.sop_uid))
    try:
        if dest is not None and os.path.samefile(dest, received.path):
            dest.unlink()
    except FileNotFoundError:
        pass


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
    first = entries[0][1].attributes
    known_key = entries[0][2]
    known = _known.get(known_key)
    if known is None or not _one_round_trip_possible():
        return None
    if any(key != known_key for _, _, key in entries):
        return None
    received = [_Received(parsed, path, path.stat().st_size) for path, parsed, _ in entries]
    keys = [
        storage.storage_key_for(r.attributes.study_uid, r.attributes.series_uid, r.attributes.sop_uid) for r in received
    ]
    if len(set(keys)) != len(keys):
        return None  # one instance twice in the batch
    for r in received:
        r.digest()
    try:
        storage.put_durable_files([(r.path, key) for r, key in zip(received, keys, strict=True)])
    except FileExistsError:
        return None
    except Exception as exc:
        log.exception("storing %d spooled instances failed", len(keys))
        raise _storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc
    try:
        study, series = _remembered_parents(known, first, institution)
        statements = _bumps(study.pk, series.pk, sum(r.size for r in received), timezone.now(), count=len(received))
        instances = []
        events = []
        for r, key in zip(received, keys, strict=True):
            instance, event = _instance_and_event(r, key, study, series, actor=actor, via=via, source=source)
            instances.append(instance)
            events.append(event)
        statements.append(_insert_many_sql(events))
        instance_sql, instance_params = _insert_many_sql(instances)
        statements.append((f"{instance_sql} RETURNING id, sop_uid", instance_params))
        with connection.cursor() as cursor:
            cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
            ids = dict((sop_uid, pk) for pk, sop_uid in cursor.fetchall())
    except BaseException as exc:
        for key in keys:
            _delete_quietly(key)
        if isinstance(exc, IntegrityError):
            _known.forget(known_key)
            return None
        if isinstance(exc, DatabaseError):
            raise _storage_failed(gettext_noop("the index could not be updated (%(error)s)"), exc) from exc
        raise
    series.study = study
    results = []
    for instance in instances:
        instance.pk = ids[instance.sop_uid]
        results.append(IngestResult(instance=instance, created=True, study=study, series=series))
    transaction.on_commit(partial(_enqueue_renders, [i.pk for i in instances]), robust=True)  # committed: runs now
    return results


def _spooled(path: Path, parsed: ParsedFile, institution: Institution, spooling: Spooling) -> bool:
    """Hand the instance to the spool when its parents are known to this process (so the index
    can refuse it only for a SOP Instance UID of another institution's) and the index
    would take the one-round-trip path; whether it was handed over (and is durable)."""
    if parsed.prefix:
        return False
    known_key = _known_key(parsed.attributes, institution)
    if _known.get(known_key) is None or not _one_round_trip_possible():
        return False
    try:
        spooling.spool.put(path, parsed, spooling.association, known_key)
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # the spool is on another file system than the received file
            return False
        log.exception("spooling %s failed", parsed.sop_uid)
        raise _storage_failed(gettext_noop("the file could not be made durable (%(error)s)"), exc) from exc
    return True


def _refused(
    exc: IngestError, parsed: ParsedFile | None, path: Path, *, actor: audit.Actor, via: str, source: str
) -> None:
    exc.sop_uid = parsed.sop_uid if parsed is not None else exc.sop_uid
    name = exc.sop_uid or path.name
    log.warning("refused %s via %s from %s (%s): %s", name, via, source or "-", actor.name, exc)
    _audit_refusal(exc, object_id=name, actor=actor, via=via, source=source)


def _read(path: Path, expected_study_uid: str | None, expected_sop_uid: str | None = None) -> ParsedFile:
    try:
        return read_file(
            path,
            max_bytes=settings.DICOM_MAX_FILE_BYTES,
            expected_study_uid=expected_study_uid,
            expected_sop_uid=expected_sop_uid,
        )
    except InvalidFile as exc:
        error = IngestError(exc.code, exc.template, **exc.params)
        error.sop_uid = exc.sop_uid
        raise error from None
    except OSError as exc:
        raise _storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None


class _StoredForm:
    """Context: the received file, or (when a preamble or file meta must be put in front)
    a new temp file holding the PS3.10 form, removed on exit."""

    def __init__(self, path: Path, parsed: ParsedFile) -> None:
        self.path = path
        self.parsed = parsed
        self.staged: Path | None = None

    def __enter__(self) -> _Received:
        source = self.path
        if self.parsed.prefix:
            self.staged = source = storage.temp_dir() / f"p10-{uuid.uuid4().hex}.dcm"
            _write_with_prefix(self.path, self.parsed.prefix, source)
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise _storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None
        return _Received(self.parsed, source, size)

    def __exit__(self, *exc: object) -> None:
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)


def _write_with_prefix(path: Path, prefix: bytes, dest: Path) -> None:
    try:
        with path.open("rb") as src, dest.open("xb") as out:
            out.write(prefix)
            while chunk := src.read(_HASH_CHUNK):
                out.write(chunk)
    except OSError as exc:
        raise _storage_failed(gettext_noop("cannot stage the file (%(error)s)"), exc) from None


def _sha256(path: Path) -> str:
    """The file's SHA-256, in one call over a memory map: hashlib then holds no interpreter
    lock for the whole file (it runs beside parsing, on the pool)."""
    try:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return hashlib.sha256(b"").hexdigest()  # an empty file cannot be mapped
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return hashlib.sha256(data).hexdigest()
    except OSError as exc:
        raise _storage_failed(gettext_noop("the received file cannot be read (%(error)s)"), exc) from None


def _store(
    received: _Received,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
    presynced: Future[None] | None = None,
) -> IngestResult:
    use_known = True
    known_key = _known_key(received.attributes, institution)
    known = _known.get(known_key)
    if known is not None and _one_round_trip_possible():
        try:
            result = _store_known(
                received, known, institution=institution, actor=actor, via=via, source=source, presynced=presynced
            )
        except IntegrityError:
            # A parent remembered has gone (a study deleted since), or the SOP Instance UID was
            # indexed meanwhile: the careful path below finds out which.
            _known.forget(known_key)
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
        _known.forget(known_key)
        try:
            return _store_once(
                received, institution=institution, actor=actor, via=via, source=source, known_key=known_key, known=None
            )
        except IntegrityError as exc:
            raise _storage_failed(gettext_noop("the index could not be updated (%(error)s)"), exc) from exc


def _one_round_trip_possible() -> bool:
    """_store_known needs PostgreSQL in autocommit (its statements commit as one implicit
    transaction) and a store that never replaces a file (a local folder)."""
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own; `connection` finds it on every attribute
    return db.vendor == "postgresql" and not db.in_atomic_block and db.get_autocommit() and storage.places_exclusively()


def _store_known(
    received: _Received,
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
    key = storage.storage_key_for(a.study_uid, a.series_uid, a.sop_uid)
    try:
        pending = storage.start_put(received.path, key, presynced)
    except FileExistsError:
        return None
    except Exception as exc:  # any backend's failure (OSError...) is ours to report
        log.exception("storing %s failed", key)
        raise _storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc
    try:
        study, series = _remembered_parents(known, a, institution)
        received.digest()
        statements = _bumps(study.pk, series.pk, received.size, timezone.now())
        instance, rows = _instance_rows(received, key, study, series, actor=actor, via=via, source=source)
        _wait_durable(pending, key)
        with connection.cursor() as cursor:
            instance.pk = int(_execute_all(cursor, statements + rows)[0])
    except BaseException as exc:
        _delete_quietly(key)
        if isinstance(exc, DatabaseError) and not isinstance(exc, IntegrityError):
            raise _storage_failed(gettext_noop("the index could not be updated (%(error)s)"), exc) from exc
        raise
    transaction.on_commit(partial(_enqueue_render, instance.pk), robust=True)  # committed: runs now
    series.study = study
    return IngestResult(instance=instance, created=True, study=study, series=series)


def _store_once(
    received: _Received,
    *,
    institution: Institution,
    actor: audit.Actor,
    via: str,
    source: str,
    known_key: tuple[Any, ...],
    known: tuple[int, int, int] | None,
    presynced: Future[None] | None = None,
) -> IngestResult:
    """The careful path. `known`: the parents remembered under `known_key` (_known), if they
    are to be trusted; None reads them from the database."""
    a = received.attributes
    key = storage.storage_key_for(a.study_uid, a.series_uid, a.sop_uid)
    file_placed = False
    try:
        with transaction.atomic():
            existing_pk = _lock_and_find(a.sop_uid)
            if existing_pk is not None:
                existing = Instance.objects.select_related("series__study").get(pk=existing_pk)
                return _duplicate(existing, received, institution=institution, actor=actor, via=via, source=source)
            received.digest()
            key, pending = _start_put(received.path, key, presynced)
            file_placed = True
            _wait_durable(pending, key)
            # Durable first, then the rows: the study and series rows stay locked (against
            # parallel associations into the same series) only from their update to the commit.
            result = _index(
                received, key, institution, actor=actor, via=via, source=source, known_key=known_key, known=known
            )
            transaction.on_commit(partial(_enqueue_render, result.instance.pk), robust=True)
        return result
    except BaseException as exc:
        if file_placed:
            _delete_quietly(key)
        if isinstance(exc, DatabaseError) and not isinstance(exc, IntegrityError):
            raise _storage_failed(gettext_noop("the index could not be updated (%(error)s)"), exc) from exc
        raise


def _lock_and_find(sop_uid: str) -> int | None:
    """Serialise stores of one SOP Instance UID until commit, then the primary key of the
    instance already stored under it, if any. (SQLite's IMMEDIATE transactions already
    serialise all writers; on PostgreSQL the lock and the look-up are one round trip.)"""
    find = f"SELECT id FROM {_table(Instance)} WHERE sop_uid = %s"  # noqa: S608
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT pg_advisory_xact_lock(%s, hashtext(%s)); {find}", [_LOCK_NAMESPACE, sop_uid, sop_uid]
            )
        else:
            cursor.execute(find, [sop_uid])
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _start_put(path: Path, key: str, presynced: Future[None] | None = None) -> tuple[str, Future[None]]:
    """Put the file under `key`, or beside it when a file is already there: the caller holds
    the UID's lock and found no row, so that file is one no row names (a store that stopped
    before its commit, or one that is about to fail); it is left alone. The key used, and
    the future of its durability."""
    try:
        try:
            return key, storage.start_put(path, key, presynced)
        except FileExistsError:
            beside = storage.alternative_key(key)
            log.warning("a file no index row names is under %s; storing this instance as %s", key, beside)
            return beside, storage.start_put(path, beside, presynced)
    except Exception as exc:  # any backend's failure (OSError, botocore's ClientError...) is ours to report
        log.exception("storing %s failed", key)
        raise _storage_failed(gettext_noop("the file could not be stored (%(error)s)"), exc) from exc


def _wait_durable(pending: Future[None], key: str) -> None:
    """The rows are written only once the file and its folder are durable (its data was
    synced while we read and checked it)."""
    try:
        pending.result()
    except Exception as exc:
        log.exception("syncing %s to disk failed", key)
        raise _storage_failed(gettext_noop("the file could not be made durable (%(error)s)"), exc) from exc


def _delete_quietly(key: str) -> None:
    try:
        storage.delete_key(key)
    except Exception:  # the original error matters more; the orphan is logged for cleanup
        log.exception("could not delete %s after a failed ingest; remove it by hand", key)


def _duplicate(
    existing: Instance, received: _Received, *, institution: Institution, actor: audit.Actor, via: str, source: str
) -> IngestResult:
    series = existing.series
    study = series.study
    if study.institution_id != institution.pk:
        raise IngestError(
            "uid-conflict", gettext_noop("SOP Instance UID %(uid)s is already in use"), uid=existing.sop_uid
        )
    identical = existing.sha256 == received.digest()
    if not identical:
        log.warning(
            "SOP Instance UID %s received again via %s with other bytes (sha256 %s); kept the stored copy (sha256 %s)",
            existing.sop_uid,
            via,
            received.sha256,
            existing.sha256,
        )
    detail = {"via": via, "duplicate": True, "identical": identical, "sha256": received.sha256}
    if not identical:
        detail["kept_sha256"] = existing.sha256
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


# --- indexing -------------------------------------------------------------------------
# Plain SQL through Django's connection, a handful of statements per instance: on the
# C-STORE path the ORM's query building cost more than the database itself. PostgreSQL and
# SQLite both speak INSERT/UPDATE ... RETURNING and ON CONFLICT, so there is one path for
# both. The common case (a further instance of a known series) is: lock and look up the SOP
# Instance UID, read the patient, bump the study and the series, insert the instance with
# its audit event; PostgreSQL gets the first two and the last two in one round trip each.
# Table and column names in the SQL come from the models' metadata, never from input; every
# value is a bound parameter (hence the S608 exemptions below).


def _index(
    received: _Received,
    key: str,
    institution: Institution,
    *,
    actor: audit.Actor,
    via: str,
    source: str,
    known_key: tuple[Any, ...],
    known: tuple[int, int, int] | None,
) -> IngestResult:
    a = received.attributes
    now = timezone.now()
    with connection.cursor() as cursor:
        if known is None:
            study, series = _parents(cursor, a, institution, received.size, now)
            remembered = (study.patient_id, study.pk, series.pk)
            transaction.on_commit(partial(_known.put, known_key, remembered))
            statements = []
        else:
            study, series = _remembered_parents(known, a, institution)
            statements = _bumps(study.pk, series.pk, received.size, now)
        instance, rows = _instance_rows(received, key, study, series, actor=actor, via=via, source=source)
        instance.pk = int(_execute_all(cursor, statements + rows)[0])
    series.study = study
    return IngestResult(instance=instance, created=True, study=study, series=series)


def _remembered_parents(known: tuple[int, int, int], a: Attributes, institution: Institution) -> tuple[Study, Series]:
    """The study and series of a _known entry, as unsaved stand-ins holding their keys."""
    patient_pk, study_pk, series_pk = known
    study = Study(pk=study_pk, study_uid=a.study_uid, institution_id=institution.pk, patient_id=patient_pk)
    series = Series(pk=series_pk, series_uid=a.series_uid, study_id=study_pk, modality=a.modality[:16])
    return study, series


def _instance_rows(
    received: _Received, key: str, study: Study, series: Series, *, actor: audit.Actor, via: str, source: str
) -> tuple[Instance, list[tuple[str, list[Any]]]]:
    """The instance (without its primary key) and the statements inserting its audit event
    and its row, the last one returning the row's id."""
    instance, event = _instance_and_event(received, key, study, series, actor=actor, via=via, source=source)
    audit_sql, audit_params = _insert_sql(event)
    instance_sql, instance_params = _insert_sql(instance)
    return instance, [(audit_sql, audit_params), (f"{instance_sql} RETURNING id", instance_params)]


def _instance_and_event(
    received: _Received, key: str, study: Study, series: Series, *, actor: audit.Actor, via: str, source: str
) -> tuple[Instance, AuditEvent]:
    """The unsaved instance row and its "instance.store" audit event."""
    a = received.attributes
    instance = Instance(
        sop_uid=a.sop_uid,
        series=series,
        sop_class_uid=a.sop_class_uid,
        transfer_syntax_uid=received.parsed.transfer_syntax_uid,
        instance_number=a.instance_number,
        rows=a.rows,
        columns=a.columns,
        number_of_frames=a.number_of_frames,
        storage_key=key,
        size_bytes=received.size,
        sha256=received.sha256,
    )
    event = audit.build(
        actor=actor,
        action="instance.store",
        object_type="instance",
        object_id=a.sop_uid,
        patient=str(study.patient_id),
        source=source,
        detail={
            "via": via,
            "study_uid": a.study_uid,
            "series_uid": a.series_uid,
            "size": received.size,
            "sha256": received.sha256,
        },
    )
    return instance, event


def _parents(cursor: Any, a: Attributes, institution: Institution, size: int, now: Any) -> tuple[Study, Series]:
    """Patient, study and series read (created when new), checked against each other and
    counted one instance more."""
    patient_pk = _patient(cursor, a, institution)
    study = _study(cursor, a, institution, patient_pk, size, now)
    if study.institution_id != institution.pk:
        raise IngestError(
            "uid-conflict",
            gettext_noop("Study Instance UID %(uid)s is already in use by another institution"),
            uid=a.study_uid,
        )
    if study.patient_id != patient_pk:
        raise IngestError(
            "uid-conflict",
            gettext_noop("Study Instance UID %(uid)s belongs to another patient than Patient ID %(patient_id)s"),
            uid=a.study_uid,
            patient_id=a.patient_id,
        )
    series, series_created = _series(cursor, a, study)
    if series.study_id != study.pk:
        raise IngestError(
            "uid-conflict",
            gettext_noop("Series Instance UID %(series_uid)s already belongs to another study than %(study_uid)s"),
            series_uid=a.series_uid,
            study_uid=a.study_uid,
        )
    _study_follows_series(cursor, study, a, series_created)
    return study, series


# Parents already checked and brought up to date by an earlier store of this process, for
# files that name the same institution, patient (as written), study and series fields: the
# next instance of a series then only counts itself in (_bumps). Entries are remembered on
# commit; a study deleted since is caught by the instance's foreign key at commit, and the
# store is retried without them.


_KNOWN_RAW = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
)


def _known_key(a: Attributes, institution: Institution) -> tuple[Any, ...]:
    """The parents' identity and every value they take from a file. The values only written
    to the parents are compared as encoded (with the character set), without decoding."""
    return (
        institution.pk,
        a.patient_id,
        a.study_uid,
        a.series_uid,
        a.modality,
        *(a.encoded(keyword) for keyword in _KNOWN_RAW),
    )


class _KnownParents:
    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.rows: dict[tuple[Any, ...], tuple[int, int, int]] = {}

    def get(self, key: tuple[Any, ...]) -> tuple[int, int, int] | None:
        with self.lock:
            return self.rows.get(key)

    def put(self, key: tuple[Any, ...], value: tuple[int, int, int]) -> None:
        with self.lock:
            if len(self.rows) >= self.size:
                self.rows.clear()
            self.rows[key] = value

    def forget(self, key: tuple[Any, ...]) -> None:
        with self.lock:
            self.rows.pop(key, None)


_known = _KnownParents()


def _bumps(study_pk: int, series_pk: int, size: int, now: Any, *, count: int = 1) -> list[tuple[str, list[Any]]]:
    _, (prepared_now,) = _values(Study, {"updated_at": now})
    return [
        (
            f"UPDATE {_table(Study)} SET num_instances = num_instances + %s, size_bytes = size_bytes + %s,"  # noqa: S608
            " updated_at = %s WHERE id = %s",
            [count, size, prepared_now, study_pk],
        ),
        (f"UPDATE {_table(Series)} SET num_instances = num_instances + %s WHERE id = %s", [count, series_pk]),  # noqa: S608
    ]


def _execute_all(cursor: Any, statements: list[tuple[str, list[Any]]]) -> Any:
    """Run the statements in order; the first row of the last one's result. On PostgreSQL
    they go in one round trip (psycopg2 sends them as one simple query)."""
    if connection.vendor == "postgresql":
        cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
    else:
        for sql, params in statements:
            cursor.execute(sql, params)
    return cursor.fetchone()


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _values(model: type[models.Model], values: dict[str, Any]) -> tuple[str, list[Any]]:
    """Quoted column names and the values prepared for this database, as the ORM would."""
    fields = [model._meta.get_field(name) for name in values]
    concrete = [f for f in fields if isinstance(f, models.Field)]
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in concrete)
    prepared = [f.get_db_prep_save(values[f.name], connection) for f in concrete]
    return columns, prepared


def _insert_new(cursor: Any, model: type[models.Model], values: dict[str, Any], *, unique: str, returning: str) -> Any:
    """Insert the row unless one with the same `unique` columns exists (a parallel store made
    it): the `returning` columns of the new row, or None."""
    columns, params = _values(model, values)
    marks = ", ".join(["%s"] * len(params))
    cursor.execute(
        f"INSERT INTO {_table(model)} ({columns}) VALUES ({marks})"  # noqa: S608
        f" ON CONFLICT ({unique}) DO NOTHING RETURNING {returning}",
        params,
    )
    return cursor.fetchone()


def _insert_sql(obj: models.Model) -> tuple[str, list[Any]]:
    """INSERT of every concrete field but the primary key, with auto_now(_add) applied."""
    sql, fields = _insert_statement(type(obj), connection.vendor)
    return sql, [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]


def _insert_many_sql(objs: Sequence[models.Model]) -> tuple[str, list[Any]]:
    """One INSERT of several rows of one model (as _insert_sql, one VALUES group per row)."""
    sql, fields = _insert_statement(type(objs[0]), connection.vendor)
    head, _, group = sql.rpartition(" VALUES ")
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for obj in objs for f in fields]
    return f"{head} VALUES {', '.join([group] * len(objs))}", params


@functools.cache
def _insert_statement(model: type[models.Model], vendor: str) -> tuple[str, list[models.Field[Any, Any]]]:
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {_table(model)} ({columns}) VALUES ({marks})", fields  # noqa: S608


def _patient(cursor: Any, a: Attributes, institution: Institution) -> int:
    """The patient's primary key (issuer = our institution), created or its blanks and
    changed demographics brought up to date from this file."""
    table = _table(Patient)
    cursor.execute(
        f"SELECT id, name, birth_date, sex FROM {table} WHERE issuer_id = %s AND patient_id = %s",  # noqa: S608
        [institution.pk, a.patient_id],
    )
    row = cursor.fetchone()
    seen = {"name": a.patient_name[:324], "birth_date": a.patient_birth_date, "sex": a.patient_sex[:16]}
    if row is None:
        new = {"issuer": institution.pk, "patient_id": a.patient_id, **seen, "created_at": timezone.now()}
        inserted = _insert_new(cursor, Patient, new, unique="issuer_id, patient_id", returning="id")
        if inserted is not None:
            return int(inserted[0])
        # another store created the patient meanwhile: read it as usual
        cursor.execute(
            f"SELECT id, name, birth_date, sex FROM {table} WHERE issuer_id = %s AND patient_id = %s",  # noqa: S608
            [institution.pk, a.patient_id],
        )
        row = cursor.fetchone()
    pk, name, birth_date, sex = row
    stored = {"name": name, "birth_date": str(birth_date) if birth_date else None, "sex": sex}
    changed = {k: v for k, v in seen.items() if v and stored[k] != (v.isoformat() if isinstance(v, dt.date) else v)}
    if changed:
        Patient.objects.filter(pk=pk).update(**changed)
    return int(pk)


_STUDY_FILL = ("study_date", "study_time", "accession_number", "description", "referring_physician")


def _study(cursor: Any, a: Attributes, institution: Institution, patient_pk: int, size: int, now: Any) -> Study:
    """The study row, locked until commit: counted one instance more, its blank fields filled
    from this file; created (with this instance counted) when it is new."""
    fill = {
        "study_date": a.study_date,
        "study_time": a.study_time,
        "accession_number": a.accession_number[:16],
        "description": a.study_description[:64],
        "referring_physician": a.referring_physician[:324],
    }
    study = _bump_study(cursor, a.study_uid, fill, size, now)
    if study is not None:
        return study
    new = {
        "study_uid": a.study_uid,
        "patient": patient_pk,
        "institution": institution.pk,
        **fill,
        "study_id": a.study_id[:16],
        "modalities": a.modality[:16],
        "num_series": 0,
        "num_instances": 1,
        "size_bytes": size,
        "received_at": now,
        "updated_at": now,
    }
    inserted = _insert_new(cursor, Study, new, unique="study_uid", returning="id")
    if inserted is None:  # another store created it meanwhile
        study = _bump_study(cursor, a.study_uid, fill, size, now)
        if study is None:
            raise IngestError(
                "storage-failed", gettext_noop("the index could not be updated (%(error)s)"), error="race"
            )
        return study
    return Study(
        pk=int(inserted[0]),
        study_uid=a.study_uid,
        patient_id=patient_pk,
        institution_id=institution.pk,
        modalities=new["modalities"],
        num_instances=1,
        size_bytes=size,
        **{k: v for k, v in fill.items()},
        study_id=new["study_id"],
    )


def _bump_study(cursor: Any, study_uid: str, fill: dict[str, Any], size: int, now: Any) -> Study | None:
    table = _table(Study)
    sets = [
        "num_instances = num_instances + 1",
        "size_bytes = size_bytes + %s",
        "updated_at = %s",
        "study_date = COALESCE(study_date, %s)",
        "study_time = COALESCE(study_time, %s)",
        *(f"{f} = CASE WHEN {f} = '' THEN %s ELSE {f} END" for f in _STUDY_FILL[2:]),
    ]
    _, prepared = _values(Study, {"size_bytes": size, "updated_at": now, **fill})
    cursor.execute(
        f"UPDATE {table} SET {', '.join(sets)} WHERE study_uid = %s RETURNING id, institution_id, patient_id,"  # noqa: S608
        " modalities, num_series, num_instances, size_bytes",
        [*prepared, study_uid],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    pk, institution_id, patient_id, modalities, num_series, num_instances, size_bytes = row
    return Study(
        pk=pk,
        study_uid=study_uid,
        institution_id=institution_id,
        patient_id=patient_id,
        modalities=modalities,
        num_series=num_series,
        num_instances=num_instances,
        size_bytes=size_bytes,
    )


def _series(cursor: Any, a: Attributes, study: Study) -> tuple[Series, bool]:
    """The series row, locked until commit and counted one instance more; created when new."""
    bump = f"UPDATE {_table(Series)} SET num_instances = num_instances + 1 WHERE series_uid = %s RETURNING id, study_id"  # noqa: S608
    cursor.execute(bump, [a.series_uid])
    row = cursor.fetchone()
    created = False
    if row is None:
        new = {
            "series_uid": a.series_uid,
            "study": study.pk,
            "modality": a.modality[:16],
            "series_number": a.series_number,
            "description": a.series_description[:64],
            "body_part": a.body_part[:16],
            "num_instances": 1,
        }
        row = _insert_new(cursor, Series, new, unique="series_uid", returning="id, study_id")
        created = row is not None
        if row is None:  # another store created it meanwhile
            cursor.execute(bump, [a.series_uid])
            row = cursor.fetchone()
    return Series(pk=row[0], series_uid=a.series_uid, study_id=row[1], modality=a.modality[:16]), created


def _study_follows_series(cursor: Any, study: Study, a: Attributes, series_created: bool) -> None:
    """A new series counts in the study; a new modality joins the study's list (while it fits)."""
    changes: dict[str, Any] = {}
    if series_created:
        changes["num_series"] = study.num_series + 1
    modalities = study.modality_list
    if a.modality and a.modality not in modalities and len(study.modalities) + len(a.modality) + 1 <= 64:
        changes["modalities"] = "\\".join([*modalities, a.modality])
    if not changes:
        return
    columns, params = _values(Study, changes)
    sets = ", ".join(f"{c} = %s" for c in columns.split(", "))
    cursor.execute(f"UPDATE {_table(Study)} SET {sets} WHERE id = %s", [*params, study.pk])  # noqa: S608
    for field, value in changes.items():
        setattr(study, field, value)


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
    except DatabaseError:
        log.exception("could not audit the refusal of %s", object_id)


def _enqueue_render(instance_id: int) -> None:
    _enqueue_renders([instance_id])


def _enqueue_renders(instance_ids: list[int]) -> None:
    from imaging import tasks

    tasks.schedule_renders(instance_ids)

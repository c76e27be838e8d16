"""Write-ahead store for DIMSE: an instance is made durable and answered first, indexed right after.

A modality sends a series one instance at a time and waits for each answer. For an instance
the index can refuse only in ways the sender could not act on anyway (imaging.ingest decides:
a further instance of a series this process has already indexed; or the first instance of a
new study, whose Study and Series Instance UIDs one read-only query found nowhere in the
index, and the instances that follow it while it waits here), the answer does not wait for
PostgreSQL: the received file, already checked, is linked into
this process's spool folder and made durable there (its data and the folder entry), beside
a durable record of who sent it; then the association gets its success status. The spool's
indexer thread then stores and indexes it through the ordinary ingest path (checksum,
exclusive placement under its key, rows and audit event in one commit) while the next
instance is on the wire, and removes the spool entry: a run of a known series in one commit,
and the first instances of the new studies of one sender in one commit of their own
(ingest.index_spooled_new), each further run of a new series behind its first. A known
study with a new series is indexed before its answer (the study may be another
institution's or another patient's, and the sender must be told). The spool is always a local folder;
with the DICOM storage on S3 the indexer uploads a run's objects (holding their UIDs' locks)
and commits their rows before it removes the entries, so an entry goes only once its object
is in the bucket and indexed; while the bucket cannot be reached the indexer is stalled
(below) and the entries wait.

What this promises, and where it stops:
- Durable before success, as for every other store: a crash after the answer leaves the
  file and its sender in the spool; the next dicom_server start indexes it (recover()).
- Indexed before the association's release is confirmed: the A-RELEASE-RP waits for the
  indexer to finish this association's instances (Handlers wrap the release), so a
  modality that has released, and everyone after it, sees the whole series. A C-FIND,
  C-MOVE or C-GET on this process first waits for the indexer (drain()). Other processes
  and the web pages may see an association's last instances a few milliseconds late while
  it is still open.
- A refusal that only the index can find (the SOP Instance UID is already another
  institution's; or, for a new study, a parallel store of the same UIDs between the look-up
  and the indexer made its study another institution's or another patient's, or its series
  another study's): the sender was told success, so nothing is deleted. The file is moved to
  DATA_DIR/refused/, the refusal is audited and logged at ERROR for an administrator. A
  refusal in the new studies indexed together costs the others nothing: the commit is
  rolled back whole and each is indexed on its own.
- Each process has its own folder DATA_DIR/spool/<token>/, locked (flock) while it runs; a
  folder whose lock is free belongs to a process that has gone, and recover() indexes it.
- Back-pressure: the indexer never ends on an error. A failure of the database (a lost
  connection included) or of the store is tried again, at once on a fresh connection, then
  every _RETRY_SECONDS; while it waits so the spool is stalled: new instances it would take
  are refused with 0xA700 (PS3.4 B.2.3: refused, out of resources; the sender tries again
  later) and releases and queries stop waiting for it. Past DICOM_SPOOL_MAX_ENTRIES
  unindexed entries the spool takes no more: instances are indexed before their answer.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DataError, IntegrityError, close_old_connections, connection, connections
from django.db import Error as DatabaseFailure
from django.utils.translation import gettext_noop

from alliance import audit, db_fresh
from alliance.models import AuditEvent, Institution
from imaging import index, ingest, storage

log = logging.getLogger("imaging.spool")

_LOCK = ".lock"
_RETRY_SECONDS = 1.0
# How long a release (or a query) waits for the indexer at most: less than the 30 s a
# sender waits for the A-RELEASE-RP by default (dcmtk's ACSE timeout), so that a slow
# indexer delays the answer and does not turn it into a failed release.
RELEASE_WAIT_SECONDS = 20.0
# IngestError codes the indexer waits out rather than setting the file aside
_RETRIED_CODES = frozenset({"storage-failed", "out-of-space"})
_WAKE = "wake"
BATCH = 64  # entries indexed together at most
# How long the indexer lets entries gather after the first: one commit for a run of a
# series instead of one per instance, which would take the interpreter and the database
# from the association threads. It delays only what others may see while a sender is
# still on its association (its release, C-FIND and C-MOVE do not wait for it).
LINGER_SECONDS = 0.05


@dataclass(frozen=True)
class Sender:
    """Who stored what arrives on one association: what ingest records for each instance."""

    institution_id: int
    actor: audit.Actor
    via: str
    source: str

    def to_json(self) -> bytes:
        return json.dumps({**dataclasses.asdict(self), "actor": dataclasses.asdict(self.actor)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Sender:
        raw = json.loads(data)
        return cls(raw["institution_id"], audit.Actor(**raw["actor"]), raw["via"], raw["source"])


@dataclass
class _Association:
    name: str
    sender: Sender
    recorded: bool = False  # its sender record is durable in the folder
    pending: int = 0
    ended: bool = False  # its sender record goes once it has ended and nothing is pending
    sequence: itertools.count[int] = field(default_factory=itertools.count)


@dataclass
class _Entry:
    path: Path
    sender: Sender
    association: _Association | None
    parsed: Any = None  # imaging.dicom.part10.ParsedFile when known (recovery reads the file again)
    number: int = 0  # its place in the spool's queue
    known_key: Any = None  # ingest's remembered-parents key, computed when it was answered
    new: bool = False  # its parents were not known to this process when it was answered


def root() -> Path:
    return Path(settings.DATA_DIR) / "spool"


def refused_dir() -> Path:
    return Path(settings.DATA_DIR) / "refused"


class _Health:
    """Whether the indexer indexes, or waits out a failure of the database or the store
    (stalled); a change is told to the waiters of `changed` (the spool's), so that they stop
    waiting for an indexer that cannot index."""

    def __init__(self, changed: threading.Condition | None = None) -> None:
        self.stalled = False
        self._changed = changed or threading.Condition()

    def failed(self, what: str, exc: BaseException, attempt: int) -> None:
        """Called before trying `what` again. The first failure is tried again at once on a
        fresh connection (the database restarted: the old one is stale); the next ones every
        _RETRY_SECONDS, stalled meanwhile."""
        connection.close()
        if attempt <= 1:
            log.warning("indexing %s failed (%s); trying again on a fresh connection", what, exc)
            return
        log.error("indexing %s failed (%s); trying again in %.0f s, refusing new instances", what, exc, _RETRY_SECONDS)
        self._set(True)
        time.sleep(_RETRY_SECONDS)

    def recovered(self) -> None:
        if self.stalled:
            log.warning("the spool's indexer indexes again")
            self._set(False)

    def _set(self, stalled: bool) -> None:
        with self._changed:
            self.stalled = stalled
            self._changed.notify_all()


class Spool:
    """One process's spool folder and its indexer thread."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or root() / f"{uuid.uuid4().hex[:12]}-{os.getpid()}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        storage.fsync_dir(self.folder.parent)
        self.max_entries: int = settings.DICOM_SPOOL_MAX_ENTRIES
        self._queue: queue.Queue[_Entry | str | None] = queue.Queue()  # _WAKE: stop lingering
        self._changed = threading.Condition()
        self._health = _Health(self._changed)
        self._unfinished: set[int] = set()  # the numbers of the entries not indexed yet
        self._new: dict[Any, int] = {}  # known_key -> entries of a new series not indexed yet
        self._new_uids: dict[tuple[str, str], int] = {}  # ("study"|"series", UID) -> the same entries
        self._numbers = itertools.count()
        self._hurry = threading.Event()  # someone waits for the indexer: no lingering
        self._associations = itertools.count()
        self._thread = threading.Thread(target=self._run, name="dicom-indexer", daemon=True)
        self._thread.start()

    # --- the answering side -------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        """The indexer is waiting out a failure of the database or the store."""
        return self._health.stalled

    def association(self, sender: Sender) -> _Association:
        return _Association(name=f"a{next(self._associations)}", sender=sender)

    def follows_new(self, known_key: Any) -> bool:
        """Whether entries of a series new to this process (put with `new`) under `known_key`
        wait to be indexed: a further instance goes behind them, in order."""
        with self._changed:
            return known_key in self._new

    def wait_for_new(self, study_uid: str, series_uid: str, timeout: float = RELEASE_WAIT_SECONDS) -> bool:
        """Wait until no entry of a new series with this study or series UID waits to be
        indexed (at once when none does): an instance of theirs with other parent values
        (another Patient ID, say) may be refused for them, and must be indexed after them,
        before its answer, so that the refusal is its own and the sender hears it. False when
        they are not indexed within `timeout`, or as soon as the indexer is stalled."""
        keys = (("study", study_uid), ("series", series_uid))
        with self._changed:
            if not any(key in self._new_uids for key in keys):
                return True
            self._hasten()
            self._changed.wait_for(
                lambda: not any(key in self._new_uids for key in keys) or self._health.stalled, timeout
            )
            return not any(key in self._new_uids for key in keys)

    def put(
        self,
        path: Path,
        parsed: Any,
        association: _Association,
        known_key: Any,
        *,
        new: bool = False,
    ) -> bool:
        """Make the received file at `path` durable in the spool and queue it for indexing
        (with what ingest made of it: `parsed`, `known_key`; `new`: its parents were not known
        to this process); True once it is durable. (The reading thread of a direct store has
        started writing its data out when it was complete: fastpath.start_writeback.)

        False, taking nothing, when max_entries entries wait to be indexed: the caller indexes
        the instance before answering. Raises ingest.IngestError (0xA700) while the indexer
        is stalled: the spool would only grow. Raises OSError when the file could not be made
        durable (nothing is queued then)."""
        if self._health.stalled:
            raise _refusal_while_stalled()
        if len(self._unfinished) >= self.max_entries:
            return False
        entry_path = self.folder / f"{association.name}-{next(association.sequence)}.dcm"
        os.link(path, entry_path)
        try:
            if not association.recorded:
                self._write_durably(self.folder / f"{association.name}.json", association.sender.to_json())
            storage.fdatasync(entry_path)
            storage.fsync_dir(self.folder)
        except BaseException:
            entry_path.unlink(missing_ok=True)
            raise
        association.recorded = True
        with self._changed:
            association.pending += 1
            number = next(self._numbers)
            self._unfinished.add(number)
            if new:
                self._new[known_key] = self._new.get(known_key, 0) + 1
                for key in _uid_keys(parsed):
                    self._new_uids[key] = self._new_uids.get(key, 0) + 1
        self._queue.put(_Entry(entry_path, association.sender, association, parsed, number, known_key, new))
        return True

    def wait_for(self, association: _Association, timeout: float = RELEASE_WAIT_SECONDS) -> bool:
        """Wait until the association's instances are indexed (or refused); False when they are
        not within `timeout`, or as soon as the indexer is stalled."""
        with self._changed:
            if association.pending:
                self._hasten()
            self._changed.wait_for(lambda: association.pending == 0 or self._health.stalled, timeout)
            return association.pending == 0

    def finish(self, association: _Association) -> None:
        """The association has ended: its sender record goes once its instances are indexed,
        now or when the indexer has done them (it is kept, for recovery, until then)."""
        with self._changed:
            association.ended = True
            done = association.pending == 0
        if done:
            self._forget(association)

    def _forget(self, association: _Association) -> None:
        if association.recorded:
            (self.folder / f"{association.name}.json").unlink(missing_ok=True)

    def drain(self, timeout: float = RELEASE_WAIT_SECONDS) -> bool:
        """Wait until everything spooled before the call is indexed (or refused), not what
        associations still sending add meanwhile; False on timeout, or as soon as the indexer
        is stalled."""
        with self._changed:
            if not self._unfinished:
                return True
            last = max(self._unfinished)
            self._hasten()

            def done() -> bool:
                return min(self._unfinished, default=last + 1) > last

            self._changed.wait_for(lambda: done() or self._health.stalled, timeout)
            return done()

    def _hasten(self) -> None:
        if not self._hurry.is_set():
            self._hurry.set()
            self._queue.put(_WAKE)  # an indexer lingering in get() takes it and stops waiting

    def close(self) -> None:
        """Stop the indexer once the queue is done, and give the folder up (tests, shutdown)."""
        self._queue.put(None)
        self._thread.join()
        os.close(self._lock_fd)

    # --- the indexing side --------------------------------------------------------------

    def _run(self) -> None:
        """Index what arrives in batches, a run of one series and sender in one commit, until
        close(): no error ends this loop (_index_surviving)."""
        try:
            connection.ensure_connection()  # now (the first store), not when its release waits
        except DatabaseFailure:
            pass  # the first batch connects again, and waits out the failure (_Health)
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            runs = _runs(batch)
            done = self._index_new_series(runs)
            for run in runs:
                self._index_surviving([entry for entry in run if entry.number not in done])
                self._finished(run)
        connection.close()

    def _index_new_series(self, runs: list[list[_Entry]]) -> set[int]:
        """The first entry of each run of a series new to this process, of one device (its
        associations, each a sender of its own, together), indexed in one commit
        (ingest.index_spooled_new): the numbers of those indexed. When that cannot be done, or
        fails, they are indexed entry by entry after (where a refusal is set aside and audited,
        a failure waited out); the rest of each run follows its first, its parents known by then."""
        by_device: dict[tuple[int, audit.Actor, str], list[_Entry]] = {}
        for run in runs:
            first = run[0]
            if first.new and first.parsed is not None and index.known_parents.get(first.known_key) is None:
                # (a further instance spooled behind its series' first, which an earlier
                # batch has indexed since: it goes with the rest of its run, parents known)
                sender = first.sender
                by_device.setdefault((sender.institution_id, sender.actor, sender.via), []).append(first)
        done: set[int] = set()
        for (institution_id, actor, via), entries in by_device.items():
            try:
                _connection_checked()
                indexed = ingest.index_spooled_new(
                    [(entry.path, entry.parsed, entry.known_key, entry.sender.source) for entry in entries],
                    institution=_institution(institution_id),
                    actor=actor,
                    via=via,
                )
            except Exception:
                log.exception("indexing %d spooled instances of new series together failed; one by one", len(entries))
                connection.close()
                continue
            if indexed:
                _committed_now()
                for entry in entries:
                    entry.path.unlink(missing_ok=True)
                    done.add(entry.number)
                self._health.recovered()
        return done

    def _next_batch(self) -> tuple[list[_Entry], bool]:
        """From the first entry, what arrives within LINGER_SECONDS (up to BATCH; at once when
        someone waits); and whether close() asked the indexer to stop."""
        first: Any = self._queue.get()
        while first is _WAKE:
            first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + LINGER_SECONDS
        while len(batch) < BATCH:
            wait = 0.0 if self._hurry.is_set() else deadline - time.monotonic()
            try:
                entry: Any = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            if entry is _WAKE:
                break
            batch.append(entry)
        return batch, False

    def _index_surviving(self, run: list[_Entry]) -> None:
        """_index_run until it completes. What it lets out (setting a file aside failed, a
        defect) is logged, and the run's entries still in the spool are tried again: they were
        answered with success, and the stalled spool refuses new instances meanwhile."""
        attempt = 0
        while run:
            try:
                _index_run(run, self._health)
                return
            except Exception as exc:
                log.exception("indexing %d spooled instance(s) failed", len(run))
                attempt += 1
                self._health.failed(f"{len(run)} spooled instance(s)", exc, attempt)
                run = [entry for entry in run if entry.path.exists()]

    def _finished(self, run: list[_Entry]) -> None:
        with self._changed:
            for entry in run:
                association = entry.association
                if association is not None:
                    association.pending -= 1
                    if association.ended and association.pending == 0:
                        self._forget(association)  # before anyone waiting is told
                self._unfinished.discard(entry.number)
                if entry.new:
                    _count_down(self._new, entry.known_key)
                    for key in _uid_keys(entry.parsed):
                        _count_down(self._new_uids, key)
            if not self._unfinished:
                self._hurry.clear()
            self._changed.notify_all()

    def _write_durably(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)


def _uid_keys(parsed: Any) -> tuple[tuple[str, str], tuple[str, str]]:
    a = parsed.attributes
    return ("study", a.study_uid), ("series", a.series_uid)


def _count_down(counts: dict[Any, int], key: Any) -> None:
    left = counts.pop(key, 1) - 1
    if left:
        counts[key] = left


def _refusal_while_stalled() -> Exception:
    return ingest.IngestError(
        "storage-failed", gettext_noop("the archive cannot index instances at the moment; try again later")
    )


def _runs(batch: list[_Entry]) -> list[list[_Entry]]:
    """The batch's entries by sender and series (associations interleave), each group in
    arrival order; entries without their parsed file (recovery) on their own."""
    groups: dict[tuple[Sender, str] | int, list[_Entry]] = {}
    for i, entry in enumerate(batch):
        key = (entry.sender, entry.parsed.attributes.series_uid) if entry.parsed is not None else i
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def _index_run(run: list[_Entry], health: _Health) -> None:
    """A run of one series in one commit when ingest can (index_spooled_series), else each
    entry on its own."""
    if run[0].parsed is not None:  # not recovered (_runs keeps those on their own)
        sender = run[0].sender
        try:
            _connection_checked()
            done = ingest.index_spooled_series(
                [(entry.path, entry.parsed, entry.known_key) for entry in run],
                institution=_institution(sender.institution_id),
                actor=sender.actor,
                via=sender.via,
                source=sender.source,
            )
        except Exception:  # a refusal or a failure: each entry on its own sorts it out
            log.exception("indexing %d spooled instances together failed; one by one instead", len(run))
            connection.close()
            done = None
        if done is not None:
            _committed_now()
            for entry in run:
                entry.path.unlink(missing_ok=True)
            health.recovered()
            return
    for entry in run:
        _index_until_done(entry, health)


def _committed_now() -> None:
    db_fresh.used_well(connections[DEFAULT_DB_ALIAS])


def _connection_checked() -> None:
    """Before a batch, the indexer's connection checked as Django checks a kept one (past its
    age or left failed, it is replaced), without the health check's round trip when it
    committed a batch less than db_fresh.FRESH_SECONDS ago: the indexer's batches follow each
    other within milliseconds while instances arrive, and a batch whose statement fails all
    the same goes one by one, where a failure is waited out on a fresh connection (_Health)."""
    close_old_connections()
    db_fresh.check_unless_fresh(connections[DEFAULT_DB_ALIAS])


_INSTITUTION_SECONDS = 10.0
_institutions: dict[int, tuple[float, Institution]] = {}


def _institution(pk: int) -> Institution:
    """The sender's institution, looked up again after _INSTITUTION_SECONDS (the indexer asks
    for it with every run, tens of times a second while a series arrives)."""
    now = time.monotonic()
    kept = _institutions.get(pk)
    if kept is not None and now - kept[0] < _INSTITUTION_SECONDS:
        return kept[1]
    institution = Institution.objects.get(pk=pk)
    _institutions[pk] = (now, institution)
    return institution


def _index_until_done(entry: _Entry, health: _Health) -> None:
    """Index one spooled file. A refusal, or an error that trying again cannot mend, moves it
    aside (DATA_DIR/refused); the database (a lost connection included) or the store failing
    is waited out (health.failed): the file is durable and was answered. The database refusing
    the file's own values (_its_own_values) twice, the second time on a fresh connection, is
    no failure to wait out: it would hold every instance behind it for good."""
    attempt = 0
    while True:
        failure: Exception
        try:
            close_old_connections()
            institution = Institution.objects.get(pk=entry.sender.institution_id)
            ingest.index_spooled(
                entry.path,
                entry.parsed,
                institution=institution,
                actor=entry.sender.actor,
                via=entry.sender.via,
                source=entry.sender.source,
            )
        except Institution.DoesNotExist:
            _set_aside(entry, f"institution {entry.sender.institution_id} no longer exists")
            break
        except ingest.IngestError as exc:
            if exc.code not in _RETRIED_CODES or (attempt and _its_own_values(exc.__cause__)):
                _set_aside(entry, exc, audited=True)  # index_spooled audited the refusal
                break
            failure = exc
        except (DatabaseFailure, OSError) as exc:  # a lost connection is an InterfaceError, no DatabaseError
            if attempt and _its_own_values(exc):
                _set_aside(entry, exc)
                break
            failure = exc
        except Exception as exc:
            log.exception("indexing the spooled %s failed", entry.path.name)
            _set_aside(entry, exc)
            break
        else:
            entry.path.unlink(missing_ok=True)
            break
        attempt += 1
        health.failed(f"the spooled {entry.path.name}", failure, attempt)
    health.recovered()


def _its_own_values(exc: BaseException | None) -> bool:
    """Whether the database refused a file's values rather than failed: a data exception (a
    value out of its column's range, PostgreSQL's class 22) or a constraint it breaks (class
    23). Ingest checks the values it takes from a file first; this is what is left, a defect."""
    return isinstance(exc, DataError | IntegrityError)


def _set_aside(entry: _Entry, exc: Exception | str, *, audited: bool = False) -> None:
    """Keep the file in DATA_DIR/refused, log it for an administrator, and (unless ingest
    has already) audit the failed store."""
    folder = refused_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{uuid.uuid4().hex[:12]}-{entry.path.name}"
    os.replace(entry.path, dest)
    log.error("an instance answered with success was refused when indexed (%s); its file is kept as %s", exc, dest)
    if audited:
        return
    try:
        audit.record(
            actor=entry.sender.actor,
            action="instance.store",
            object_type="instance",
            object_id=dest.name,
            source=entry.sender.source,
            outcome=AuditEvent.Outcome.FAILURE,
            detail={"via": entry.sender.via, "code": "set-aside", "reason": str(exc)[:500], "kept_as": str(dest)},
        )
    except DatabaseFailure:
        log.exception("could not audit the refusal of %s", dest)


def recover() -> int:
    """Index what processes that have gone left in their spool folders; the count indexed or
    set aside. Folders of running processes (locked) are left to them."""
    count = 0
    for folder in _abandoned_folders():
        count += _recover_folder(folder)
        shutil.rmtree(folder)
    return count


def recover_process(pid: int) -> int:
    """recover() for the folder of one process that has ended (dicom_server's parent replacing
    a child), without probing the locks of live processes' folders."""
    count = 0
    for folder in _abandoned_folders(f"*-{pid}"):
        count += _recover_folder(folder)
        shutil.rmtree(folder)
    return count


def waiting_entries() -> list[Path]:
    """Answered instances left by processes that have gone, which the next dicom_server start
    will index (for dicom_storage_check)."""
    return [entry for folder in _abandoned_folders() for entry in _entries(folder)]


def live_entries() -> list[Path]:
    """Answered instances a running dicom_server has not indexed yet (for dicom_storage_check):
    a backlog that stays means its indexer is stalled (see its log)."""
    return [entry for folder, gone in _folders() if not gone for entry in _entries(folder)]


def refused_files() -> list[Path]:
    """Files kept in DATA_DIR/refused: answered with success, refused when indexed."""
    folder = refused_dir()
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("a*-*.dcm"), key=_entry_order)


def _abandoned_folders(pattern: str = "*") -> Iterator[Path]:
    """Spool folders (named like `pattern`) whose lock is free (their process has gone), each
    held locked while the caller works on it."""
    return (folder for folder, gone in _folders(pattern) if gone)


def _folders(pattern: str = "*") -> Iterator[tuple[Path, bool]]:
    """Every spool folder named like `pattern`, and whether its process has gone (its lock is
    free: then held while the caller works on it)."""
    base = root()
    if not base.is_dir():
        return
    for folder in sorted(p for p in base.glob(pattern) if p.is_dir()):
        try:
            fd = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield folder, False  # a live process's folder
                continue
            yield folder, True
        finally:
            os.close(fd)


def _recover_folder(folder: Path) -> int:
    senders: dict[str, Sender] = {}
    for record in folder.glob("a*.json"):
        try:
            senders[record.stem] = Sender.from_json(record.read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            log.exception("spool record %s cannot be read", record)
    count = 0
    health = _Health()
    for path in _entries(folder):
        sender = senders.get(path.name.rsplit("-", 1)[0])
        if sender is None:  # no durable sender: it was never answered with success
            log.warning("spooled %s has no sender record; it was never acknowledged, removing it", path)
            path.unlink(missing_ok=True)
            continue
        _index_until_done(_Entry(path, sender, None), health)
        count += 1
    if count:
        log.warning("indexed %d instance(s) left in %s by a process that stopped", count, folder)
    return count


def _entry_order(path: Path) -> tuple[str, int]:
    name, _, seq = path.stem.rpartition("-")
    return name, int(seq) if seq.isdigit() else -1


_spools: dict[int, Spool] = {}
_spools_lock = threading.Lock()


def drain() -> None:
    """Wait for this process's spool, if it has one, to index what it holds (not while its
    indexer is stalled)."""
    owner = _spools.get(os.getpid())
    if owner is not None and not owner.drain():
        log.error("answering before the spool's indexer has indexed what this process answered (stalled or slow)")


def for_this_process() -> Spool:
    """The spool of this process (dicom_server forks: threads and locks do not survive it)."""
    pid = os.getpid()
    with _spools_lock:
        if pid not in _spools:
            _spools[pid] = Spool()
        return _spools[pid]

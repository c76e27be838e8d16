"""The C-STORE SCU that routing sends studies with (PS3.4 B.2): stored bytes as stored.

For each (SOP class, stored transfer syntax) of what it sends, it proposes two presentation
contexts: the stored syntax alone, and Explicit then Implicit VR Little Endian (the ones the
stored syntax is not). A peer that accepts the first gets the stored data set bytes
unchanged; only an instance whose stored syntax the peer refused is decoded (decompressed if
need be) and sent in the little endian syntax it accepted. At most 128 contexts fit in one
association (PS3.8 9.3.2.2), so a study of many kinds of objects takes several.

A failure status that another attempt may cure (0xA7xx out of resources, 0xA7.. and the
general 0x0213 resources limitation), no answer (a timeout or an abort) and an association
the peer could not or would not take are transient: the run stops there and the caller tries
again later. A status that concerns the instance (0xA9xx, 0xCxxx, 0x0122 SOP class not
supported, 0x0124 not authorized, ...) fails that instance and the run goes on.

pynetdicom's public API, and imaging/dicom/accel for the fast path; no database here.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.presentation import PresentationContext

from imaging.dicom import accel
from imaging.dicom.handlers import set_no_delay
from imaging.dicom.identifiers import StoredObject
from imaging.dicom.scp import VERIFICATION
from imaging.dicom.status import Status

log = logging.getLogger("imaging.dicom")

LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_PAIRS_PER_ASSOCIATION = 64  # two contexts each: 128, the most one association carries
# Acknowledged instances are reported to the caller (routing's sent marks, a commit each) at
# most once a second, and at the latest every _REPORT_MOST: after a crash, what was sent but
# not yet reported is sent again, so this bounds the repeat to a second's work. On a fast peer
# a mark every 50 instances took about 8% of an attempt's time (bench/RESULTS.md, Routing).
_REPORT_SECONDS = 1.0
_REPORT_MOST = 1000
_WARNINGS = frozenset({0x0001, 0xB000, 0xB006, 0xB007})  # PS3.4 B.2.3: stored, with a warning


@dataclass(frozen=True)
class PeerAE:
    """Where to send: the peer's AE title, host and port, and the title we call it with."""

    ae_title: str
    host: str
    port: int
    calling_ae: str
    timeout: float = 60.0


@dataclass
class Outcome:
    """What one run achieved: the instances the peer acknowledged, those it refused (with the
    status), and, when the run stopped early, why (transient: worth another attempt)."""

    sent: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    status: int | None = None
    reason: str = ""
    transient: bool = False

    @property
    def complete(self) -> bool:
        return not self.reason and not self.refused

    def stop(self, reason: str, *, status: int | None = None, transient: bool = True) -> Outcome:
        self.reason, self.status, self.transient = reason, status, transient
        return self


def fallback_syntaxes(stored: str) -> list[str]:
    return [ts for ts in LITTLE_ENDIAN if ts != stored]


def contexts_for(pairs: Sequence[tuple[str, str]]) -> list[PresentationContext]:
    """Two contexts per (SOP class, stored syntax): the stored syntax alone, then the others."""
    contexts = []
    for sop_class, stored in pairs:
        contexts.append(build_context(sop_class, [stored]))
        contexts.append(build_context(sop_class, fallback_syntaxes(stored)))
    return contexts


def groups(objects: Sequence[StoredObject]) -> Iterator[list[StoredObject]]:
    """The objects in runs whose contexts fit in one association, in their order."""
    pairs: dict[tuple[str, str], None] = {}
    run: list[StoredObject] = []
    for obj in objects:
        pair = (obj.sop_class_uid, obj.transfer_syntax_uid)
        if pair not in pairs and len(pairs) == _PAIRS_PER_ASSOCIATION:
            yield run
            pairs, run = {}, []
        pairs[pair] = None
        run.append(obj)
    if run:
        yield run


def _new_ae(peer: PeerAE) -> AE:
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = peer.timeout
    return ae


def _handlers(accelerate: bool) -> list[evt.EventHandlerType]:
    return [(evt.EVT_CONN_OPEN, set_no_delay), *accel.sending_handlers(enabled=accelerate)]


def not_associated(assoc: Any) -> tuple[str, bool]:
    """Why an association did not come up, and whether that may pass (A-ASSOCIATE-RJ result 2
    is "rejected-transient", PS3.8 9.3.4; no answer or a refused connection may pass too)."""
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        result, source, diagnostic = (getattr(rj, name, None) for name in ("result", "result_source", "diagnostic"))
        reason = f"association rejected (result {result}, source {source}, reason {diagnostic})"
        return reason, result != 0x01
    if assoc.is_aborted:
        return "the peer aborted the association request", True
    return "no answer to the association request", True


def _close(assoc: Any) -> None:
    """Let go of the connection of an association that did not come up (pynetdicom keeps it
    open when the peer connected but never answered)."""
    transport = getattr(assoc.dul, "socket", None)
    raw = getattr(transport, "socket", None)
    if raw is not None:
        raw.close()


def unreachable(peer: PeerAE) -> str:
    """Why a TCP connection to the peer fails ("" when it opens). Asked before pynetdicom
    connects: on a refused connection pynetdicom 3.0 leaves its socket open (its shutdown()
    of the unconnected socket raises before the close), and says why only in its log."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=peer.timeout):
            return ""
    except OSError as exc:
        return f"could not connect: {exc}"


def echo(peer: PeerAE) -> tuple[bool, str]:
    """C-ECHO (PS3.7 9.1.5): whether the peer answers, and what went wrong if not."""
    refused = unreachable(peer)
    if refused:
        return False, refused
    ae = _new_ae(peer)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=_handlers(False))
    if not assoc.is_established:
        _close(assoc)
        return False, not_associated(assoc)[0]
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in status:
        return False, "no answer to C-ECHO"
    return status.Status == Status.SUCCESS, f"C-ECHO status 0x{int(status.Status):04X}"


def send(
    peer: PeerAE,
    objects: Sequence[StoredObject],
    *,
    on_sent: Callable[[list[str]], None] = lambda uids: None,
    accelerate: bool = True,
) -> Outcome:
    """C-STORE every object to the peer, telling `on_sent` the acknowledged SOP Instance UIDs
    as they come (in runs); the Outcome of the whole."""
    outcome = Outcome()
    for run in groups(objects):
        if not _send_run(peer, run, outcome, on_sent, accelerate):
            break
    return outcome


def _send_run(
    peer: PeerAE,
    run: list[StoredObject],
    outcome: Outcome,
    on_sent: Callable[[list[str]], None],
    accelerate: bool,
) -> bool:
    refused = unreachable(peer)
    if refused:
        outcome.stop(f"{peer.ae_title}@{peer.host}:{peer.port}: {refused}")
        return False
    pairs = list(dict.fromkeys((o.sop_class_uid, o.transfer_syntax_uid) for o in run))
    ae = _new_ae(peer)
    assoc = ae.associate(
        peer.host, peer.port, contexts=contexts_for(pairs), ae_title=peer.ae_title, evt_handlers=_handlers(accelerate)
    )
    if not assoc.is_established:
        reason, transient = not_associated(assoc)
        _close(assoc)
        outcome.stop(f"{peer.ae_title}@{peer.host}:{peer.port}: {reason}", transient=transient)
        return False
    fast = accel.stored_sender(assoc, peer.timeout, enabled=accelerate)
    session = _Session(assoc, fast, outcome, on_sent)
    try:
        return session.send_all(run)
    finally:
        session.flush()
        if session.fast is not None:  # the one in use: a conversion takes the association back and forth
            session.fast.close()
        if assoc.is_established:
            assoc.release()


class _Session:
    """One association's run of C-STOREs."""

    def __init__(self, assoc: Any, fast: accel.StoredSender | None, outcome: Outcome, on_sent: Any) -> None:
        self.assoc = assoc
        self.fast = fast
        self.outcome = outcome
        self.on_sent = on_sent
        self.pending: list[str] = []
        self.reported_at = time.monotonic()
        self.message_ids = itertools.cycle(range(1, 65536))
        accepted = [cx for cx in assoc.accepted_contexts]
        self.as_stored = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])): cx for cx in accepted}
        self.converted: dict[str, Any] = {}
        for cx in accepted:  # the first accepted little endian context of each SOP class
            if str(cx.transfer_syntax[0]) in LITTLE_ENDIAN:
                self.converted.setdefault(str(cx.abstract_syntax), cx)

    def send_all(self, run: list[StoredObject]) -> bool:
        for obj in run:
            try:
                status = self._store(obj)
            except OSError as exc:  # the connection broke under us
                self.outcome.stop(f"connection lost while sending {obj.sop_instance_uid}: {exc}")
                self.assoc.abort()
                return False
            if status is None:
                continue
            if not self._judge(obj, status):
                return False
        return True

    def _store(self, obj: StoredObject) -> Dataset | None:
        cx = self.as_stored.get((obj.sop_class_uid, obj.transfer_syntax_uid))
        if cx is not None:
            return self._as_stored(obj, cx)
        fallback = self.converted.get(obj.sop_class_uid)
        if fallback is None:
            self.outcome.refused[obj.sop_instance_uid] = (
                Status.SOP_CLASS_NOT_SUPPORTED,
                f"the peer accepted no context for SOP class {obj.sop_class_uid} in {obj.transfer_syntax_uid} "
                "or little endian",
            )
            return None
        return self._converted(obj)

    def _as_stored(self, obj: StoredObject, cx: Any) -> Dataset:
        message_id = next(self.message_ids)
        if self.fast is not None:
            # the stored file itself when it is local: no storage layer between it and the socket
            with open(obj.path, "rb") if obj.path is not None else obj.open() as source:  # noqa: SIM115
                offset = accel.data_set_offset(source.read(1024))
                if offset is not None:
                    return self.fast.send(
                        source, offset, cx.context_id, obj.sop_class_uid, obj.sop_instance_uid, message_id
                    )
        with stored_path(obj) as path, accel.stored_bytes_sent() as as_stored:
            return self.assoc.send_c_store(path if as_stored else dcmread(path), msg_id=message_id)

    def _converted(self, obj: StoredObject) -> Dataset:
        """Decoded, decompressed when compressed, and encoded by pynetdicom in the little endian
        syntax the peer accepted (it converts explicit and implicit VR)."""
        with obj.open() as source:
            ds = dcmread(source)
        if UID(obj.transfer_syntax_uid).is_compressed:
            ds.decompress()  # its file meta says Explicit VR Little Endian now
        log.info("%s converted from %s for the peer", obj.sop_instance_uid, obj.transfer_syntax_uid)
        if self.fast is not None:  # pynetdicom's own send needs its reactor's turn
            self.fast.close()
            try:
                return self.assoc.send_c_store(ds, msg_id=next(self.message_ids))
            finally:
                self.fast = accel.stored_sender(self.assoc, self.fast.timeout)
        return self.assoc.send_c_store(ds, msg_id=next(self.message_ids))

    def _judge(self, obj: StoredObject, status: Dataset) -> bool:
        """Note the answer; False when the run must stop."""
        if "Status" not in status:
            self.outcome.stop(f"no answer to the C-STORE of {obj.sop_instance_uid} (timeout or abort)")
            if self.assoc.is_established:
                self.assoc.abort()
            return False
        code = int(status.Status)
        if code == Status.SUCCESS or code in _WARNINGS:
            self.pending.append(obj.sop_instance_uid)
            if len(self.pending) >= _REPORT_MOST or time.monotonic() - self.reported_at >= _REPORT_SECONDS:
                self.flush()
            return True
        comment = str(status.get("ErrorComment", "") or "")
        if (code & 0xFF00) == 0xA700 or code == 0x0213:
            self.outcome.stop(
                f"the peer is out of resources (0x{code:04X}) at {obj.sop_instance_uid}: {comment}".rstrip(": "),
                status=code,
            )
            return False
        self.outcome.refused[obj.sop_instance_uid] = (code, comment)
        return True

    def flush(self) -> None:
        self.reported_at = time.monotonic()
        if self.pending:
            sent, self.pending = self.pending, []
            self.outcome.sent.extend(sent)
            self.on_sent(sent)


@contextmanager
def stored_path(obj: StoredObject) -> Iterator[Path]:
    """A real file holding the stored instance: the stored file itself, or a temporary copy."""
    if obj.path is not None:
        yield obj.path
        return
    with obj.open() as source, tempfile.NamedTemporaryFile(suffix=".dcm") as copy:
        _copy(source, copy)
        copy.flush()
        yield Path(copy.name)


def _copy(source: IO[bytes], target: IO[bytes]) -> None:
    shutil.copyfileobj(source, target, 1024 * 1024)

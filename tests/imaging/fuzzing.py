"""A seeded fuzzer of DICOM files against the real servers: mutated files over C-STORE (a
pynetdicom SCU, so every status is read) and STOW-RS (HTTP to gunicorn), then every stored
instance fetched back (metadata and the instance itself). Shared by
tests/imaging/test_fuzz_servers.py (1,000 files) and bench/fuzz.py (10,000).

Case `i` of seed `s` is made from random.Random(f"{s}:{i}") alone: `make_case(s, i)` rebuilds
exactly the bytes a failing run sent. Each case starts from a valid file of the project's
generator (CT or DX; explicit or implicit VR little endian, explicit big endian, or deflated;
32x32) and gets one structural mutation, sometimes followed by a byte-level one.

Outcomes, per case: `stored` (acknowledged, and its metadata and instance answer);
`refused` (a failure status with its code); and the failures: `aborted` (the association
ended without a status), `hang` (no answer within the timeout), `http-5xx`, `unservable`
(stored, but /metadata or the retrieval fails), `lost` (acknowledged, but no instance has
its UID), `crash` (a server process is gone).
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from pydicom import uid as pydicom_uid
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pynetdicom import AE, _config

from tests.imaging.dicomgen import deflate_bomb, make_ct_series
from tests.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SYNTAXES = (
    pydicom_uid.ExplicitVRLittleEndian,
    pydicom_uid.ImplicitVRLittleEndian,
    pydicom_uid.ExplicitVRBigEndian,
    pydicom_uid.DeflatedExplicitVRLittleEndian,
)
FAILURES = ("aborted", "hang", "http-5xx", "unservable", "lost", "crash")
_COLUMNS = ("stored", "refused", *FAILURES)
TIMEOUT = 60.0  # seconds for one C-STORE or one HTTP request: past it, the case hung
SERIES_SIZE = 8  # consecutive cases share a study and series (the servers' known-series paths)
SERVER_ENV = {"DICOM_MAX_INFLATED_MB": "16"}
STUDY_PROBLEM = "its own /metadata answers, its study's does not:"  # bombs are refused after 16 MB, not 512

# --- cases ------------------------------------------------------------------------------


@dataclass
class Case:
    seed: int
    index: int
    channel: str  # "dimse" or "stow"
    syntax: str
    sop_class: str
    sop_uid: str  # as the sender names it (Affected SOP Instance UID, the file meta's)
    mutations: list[str]
    meta: bytes  # preamble, "DICM" and file meta: what STOW sends in front of `data_set`
    data_set: bytes  # as on the wire (deflated for the deflated syntax)

    @property
    def label(self) -> str:
        return f"seed {self.seed} case {self.index} ({self.channel}, {self.syntax_name}: {'+'.join(self.mutations)})"

    @property
    def syntax_name(self) -> str:
        return pydicom_uid.UID(self.syntax).name

    def file_bytes(self) -> bytes:
        return self.meta + self.data_set


@dataclass
class _Raw:
    """A data set being mutated, before any deflation."""

    data: bytearray
    implicit: bool
    little: bool

    @property
    def endian(self) -> str:
        return "<" if self.little else ">"


@dataclass(frozen=True)
class _Element:
    offset: int
    tag: int
    vr: bytes | None  # None in implicit VR
    header: int  # bytes before the value
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.header + self.length


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_SHORT_VRS = [b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH", b"ST", b"TM", b"UI", b"US"]
_UID_TAGS = (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)
_TEXT_TAGS = (0x00100010, 0x00100020, 0x00081030, 0x0008103E, 0x00080050, 0x00080060)
_NUMBER_TAGS = (0x00180050, 0x00200011, 0x00200013, 0x00200032, 0x00280030, 0x00281050, 0x00281051, 0x00281052)
_KEY_TAGS = (*_UID_TAGS, 0x00100020, 0x00080060, 0x00280010, 0x00080005, 0x7FE00010)
_PIXEL_DATA = 0x7FE00010
_CONTENT_SEQUENCE = 0x0040A730


def _elements(raw: _Raw) -> list[_Element]:
    """The top-level elements of a data set with defined lengths (the valid seed)."""
    found, pos, data, e = [], 0, raw.data, raw.endian
    while pos + 8 <= len(data):
        group, element = struct.unpack_from(f"{e}HH", data, pos)
        vr = None if raw.implicit else bytes(data[pos + 4 : pos + 6])
        if vr is None:
            header, length = 8, struct.unpack_from(f"{e}L", data, pos + 4)[0]
        elif vr in _LONG_VRS:
            header, length = 12, struct.unpack_from(f"{e}L", data, pos + 8)[0]
        else:
            header, length = 8, struct.unpack_from(f"{e}H", data, pos + 6)[0]
        found.append(_Element(pos, group << 16 | element, vr, header, length))
        pos += header + length
    return found


def _encode_element(raw: _Raw, tag: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    e = raw.endian
    size = len(value) if length is None else length
    head = struct.pack(f"{e}HH", tag >> 16, tag & 0xFFFF)
    if raw.implicit:
        return head + struct.pack(f"{e}L", size) + value
    if vr in _LONG_VRS:
        return head + vr + b"\x00\x00" + struct.pack(f"{e}L", size) + value
    return head + vr + struct.pack(f"{e}H", min(size, 0xFFFF)) + value


def _replace_value(raw: _Raw, element: _Element, value: bytes, vr: bytes | None = None) -> None:
    new = _encode_element(raw, element.tag, vr or element.vr or b"UN", value)
    raw.data[element.offset : element.end] = new


def _pick(rng: random.Random, elements: list[_Element], tags: tuple[int, ...]) -> _Element | None:
    chosen = [el for el in elements if el.tag in tags]
    return rng.choice(chosen) if chosen else None


def _m_unknown_vr(rng: random.Random, raw: _Raw) -> str:
    if raw.implicit:
        return _m_flip(rng, raw)
    element = rng.choice([el for el in _elements(raw) if el.vr not in _LONG_VRS])
    raw.data[element.offset + 4 : element.offset + 6] = rng.choice([b"QQ", b"ZZ", b"XY", b"??", b"\x00\x00", b"a1"])
    return "unknown-vr"


def _m_other_vr(rng: random.Random, raw: _Raw) -> str:
    if raw.implicit:
        return _m_flip(rng, raw)
    element = rng.choice([el for el in _elements(raw) if el.vr not in _LONG_VRS])
    raw.data[element.offset + 4 : element.offset + 6] = rng.choice(_SHORT_VRS)
    return "other-vr"


def _m_garbage_number(rng: random.Random, raw: _Raw) -> str:
    element = _pick(rng, _elements(raw), _NUMBER_TAGS)
    if element is None or element.vr == b"US":
        return _m_flip(rng, raw)
    garbage = [
        b"abc ",
        b"1e999 ",
        b"nan ",
        b"--1 ",
        b"1.2.3 ",
        b"\x00\x01",
        b"9" * 40,
        b"1\\x\\",
        b"  ",
        b"+-",
        b"\xff\xfe",
    ]
    _replace_value(raw, element, rng.choice(garbage))
    return "garbage-number"


def _m_length_too_large(rng: random.Random, raw: _Raw) -> str:
    element = rng.choice(_elements(raw))
    beyond = len(raw.data) - element.offset - element.header + rng.randint(1, 4096)
    _set_length(raw, element, beyond)
    return "length-too-large"


def _m_huge_length(rng: random.Random, raw: _Raw) -> str:
    element = _pick(rng, _elements(raw), (_PIXEL_DATA,)) or rng.choice(_elements(raw))
    _set_length(raw, element, rng.choice([0x7FFFFFF0, 0xFFFFFFF0, 0xFFFFFFFE, 0x40000000]))
    return "huge-length"


def _set_length(raw: _Raw, element: _Element, length: int) -> None:
    e, at = raw.endian, element.offset
    if element.header == 12:
        struct.pack_into(f"{e}L", raw.data, at + 8, length)
    elif element.vr is None:
        struct.pack_into(f"{e}L", raw.data, at + 4, length)
    else:
        struct.pack_into(f"{e}H", raw.data, at + 6, min(length, 0xFFFF))


def _m_odd_length(rng: random.Random, raw: _Raw) -> str:
    element = _pick(rng, _elements(raw), _TEXT_TAGS + _UID_TAGS + _NUMBER_TAGS)
    if element is None:
        return _m_flip(rng, raw)
    value = bytes(raw.data[element.offset + element.header : element.end]).rstrip(b" \x00") or b"X"
    if len(value) % 2 == 0:
        value += b"7"
    _replace_value(raw, element, value)
    return "odd-length"


def _m_undefined_length(rng: random.Random, raw: _Raw) -> str:
    element = rng.choice(_elements(raw))
    value = bytes(raw.data[element.offset + element.header : element.end])
    vr = element.vr if element.vr in _LONG_VRS else b"UN"
    raw.data[element.offset : element.end] = _encode_element(raw, element.tag, vr, value, length=0xFFFFFFFF)
    return "undefined-length"


def _m_deep_nesting(rng: random.Random, raw: _Raw) -> str:
    depth = rng.choice([2, 40, 200, 1000, 3000, 5000])
    e = raw.endian
    sq_head = _encode_element(raw, _CONTENT_SEQUENCE, b"SQ", b"", length=0xFFFFFFFF)
    item = struct.pack(f"{e}HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack(f"{e}HHL", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack(f"{e}HHL", 0xFFFE, 0xE0DD, 0)
    inner = _encode_element(raw, 0x00080100, b"SH", b"T-04000 ")  # Code Value
    nested = (sq_head + item) * depth + inner + (item_end + seq_end) * depth
    at = next((el.offset for el in _elements(raw) if el.tag > _CONTENT_SEQUENCE), len(raw.data))
    raw.data[at:at] = nested
    return f"deep-nesting-{depth}"


def _m_bad_uid(rng: random.Random, raw: _Raw) -> str:
    element = _pick(rng, _elements(raw), _UID_TAGS)
    if element is None:
        return _m_flip(rng, raw)
    bad = [
        b"1.2.3\\4.5",
        b"1.2.840.\x01\x02",
        b"1.2.abc.4",
        b"1.02.3",
        b"1." + b"9" * 70,
        b"\\\\",
        b"1.2.3\r\n4",
        b"",
        b"1..2",
        b"\x1b$B1.2",
    ]
    _replace_value(raw, element, rng.choice(bad))
    return "bad-uid"


def _m_bad_text(rng: random.Random, raw: _Raw) -> str:
    element = _pick(rng, _elements(raw), _TEXT_TAGS)
    if element is None:
        return _m_flip(rng, raw)
    bad = [
        b"Wang\\Fang\\\\",
        b"\x00\x01\x02\x03",
        b"\xff\xfe\xfd\xfc",
        b"\x1b$B\x1b(B",
        b"A" * 300,
        b"name\r\nInjected: yes",
        b"<script>alert(1)</script>",
        b"\xe7\x8e\x8b\xe8",  # UTF-8 cut inside a character
        b"%s%n%x",
        b"\x7f\x80\x81",
    ]
    _replace_value(raw, element, rng.choice(bad))
    return "bad-text"


def _m_bad_charset(rng: random.Random, raw: _Raw) -> str:
    element = _pick(rng, _elements(raw), (0x00080005,))
    if element is None:
        return _m_flip(rng, raw)
    _replace_value(
        raw, element, rng.choice([b"ISO_IR 999", b"\\ISO 2022 IR 87\\x", b"GB18030\\\\", b"\x00", b"UTF-8 "])
    )
    return "bad-charset"


def _m_missing(rng: random.Random, raw: _Raw) -> str:
    element = _pick(rng, _elements(raw), _KEY_TAGS)
    if element is None:
        return _m_flip(rng, raw)
    del raw.data[element.offset : element.end]
    return f"missing-{element.tag:08X}"


def _m_duplicate(rng: random.Random, raw: _Raw) -> str:
    element = rng.choice(_elements(raw)[:-1])
    copy = bytes(raw.data[element.offset : element.end])
    if rng.random() < 0.5 and element.tag in _UID_TAGS + _TEXT_TAGS:
        copy = _encode_element(raw, element.tag, element.vr or b"LO", b"2.25.1234 ")
    raw.data[element.end : element.end] = copy
    return "duplicate-tag"


def _m_swap(rng: random.Random, raw: _Raw) -> str:
    elements = _elements(raw)
    at = rng.randrange(len(elements) - 1)
    first, second = elements[at], elements[at + 1]
    raw.data[first.offset : second.end] = raw.data[second.offset : second.end] + raw.data[first.offset : first.end]
    return "out-of-order"


def _m_truncate(rng: random.Random, raw: _Raw) -> str:
    if not raw.data:  # an earlier mutation left nothing (every draw below needs a byte)
        return "truncate"
    del raw.data[rng.randrange(len(raw.data)) :]
    return "truncate"


def _m_flip(rng: random.Random, raw: _Raw) -> str:
    if not raw.data:
        return "flip"
    for _ in range(rng.randint(1, 8)):
        raw.data[rng.randrange(len(raw.data))] ^= rng.randint(1, 255)
    return "flip"


def _m_insert(rng: random.Random, raw: _Raw) -> str:
    at = rng.randrange(len(raw.data)) if raw.data else 0
    raw.data[at:at] = rng.randbytes(rng.randint(1, 16))
    return "insert"


def _m_delete(rng: random.Random, raw: _Raw) -> str:
    if not raw.data:
        return "delete"
    at = rng.randrange(len(raw.data))
    del raw.data[at : at + rng.randint(1, 16)]
    return "delete"


def _m_random(rng: random.Random, raw: _Raw) -> str:
    raw.data[:] = rng.randbytes(rng.randint(0, 4096))
    return "random-bytes"


def _m_none(rng: random.Random, raw: _Raw) -> str:
    return "none"


STRUCTURAL: dict[str, Callable[[random.Random, _Raw], str]] = {
    "none": _m_none,
    "unknown-vr": _m_unknown_vr,
    "other-vr": _m_other_vr,
    "garbage-number": _m_garbage_number,
    "length-too-large": _m_length_too_large,
    "huge-length": _m_huge_length,
    "odd-length": _m_odd_length,
    "undefined-length": _m_undefined_length,
    "deep-nesting": _m_deep_nesting,
    "bad-uid": _m_bad_uid,
    "bad-text": _m_bad_text,
    "bad-charset": _m_bad_charset,
    "missing": _m_missing,
    "duplicate-tag": _m_duplicate,
    "out-of-order": _m_swap,
    "random-bytes": _m_random,
}
BYTE_LEVEL: dict[str, Callable[[random.Random, _Raw], str]] = {
    "truncate": _m_truncate,
    "flip": _m_flip,
    "insert": _m_insert,
    "delete": _m_delete,
}
# Whole-file kinds, besides a structural mutation: a deflate bomb, a deflate stream damaged
# after deflation, and (STOW only: DIMSE sends no file meta) file meta that disagrees.
WHOLE_FILE = ("bomb", "deflate-damaged", "meta-disagrees")


def make_case(seed: int, index: int) -> Case:
    """Case `index` of the run seeded `seed`: rebuilt from those two numbers alone."""
    rng = random.Random(f"{seed}:{index}")
    channel = "dimse" if index % 2 == 0 else "stow"
    syntax = rng.choice(SYNTAXES)
    sop_class = rng.choice([CT_STORAGE, DX_STORAGE])
    ds = _seed_data_set(seed, index, rng, syntax, sop_class)
    raw = _Raw(bytearray(_encode(ds, syntax)), syntax == pydicom_uid.ImplicitVRLittleEndian, syntax != SYNTAXES[2])
    kinds = list(STRUCTURAL) + list(BYTE_LEVEL) + list(WHOLE_FILE if channel == "stow" else WHOLE_FILE[:2])
    kind = rng.choice(kinds)
    mutations: list[str] = []
    deflated = syntax == pydicom_uid.DeflatedExplicitVRLittleEndian
    if kind == "bomb":
        file = deflate_bomb(rng.choice([64, 256]), ds=ds)
        ds.file_meta.TransferSyntaxUID = SYNTAXES[3]
        meta, data_set = _split(file, _meta_end(file))
        return Case(seed, index, channel, SYNTAXES[3], sop_class, str(ds.SOPInstanceUID), ["bomb"], meta, data_set)
    if kind in STRUCTURAL or kind in BYTE_LEVEL:
        mutations.append((STRUCTURAL | BYTE_LEVEL)[kind](rng, raw))
        if kind in STRUCTURAL and kind != "none" and rng.random() < 0.3:
            mutations.append(rng.choice(list(BYTE_LEVEL.values()))(rng, raw))
    data_set = _deflate(bytes(raw.data)) if deflated else bytes(raw.data)
    if kind == "deflate-damaged":
        if not deflated:
            data_set, syntax, deflated = _deflate(bytes(raw.data)), SYNTAXES[3], True
        damaged = _Raw(bytearray(data_set), False, True)
        mutations.append("deflate-" + rng.choice([_m_truncate, _m_flip, _m_insert])(rng, damaged))
        data_set = bytes(damaged.data)
    meta = _file_meta(ds, syntax)
    if kind == "meta-disagrees":
        meta, what = _disagreeing_meta(rng, ds, syntax)
        mutations.append(f"meta-{what}")
    return Case(seed, index, channel, syntax, sop_class, str(ds.SOPInstanceUID), mutations, meta, data_set)


def _seed_data_set(seed: int, index: int, rng: random.Random, syntax: str, sop_class: str) -> Any:
    """A valid 32x32 image; cases of one SERIES_SIZE block share patient, study and series."""
    block = random.Random(f"{seed}:series:{index // SERIES_SIZE}")
    study_uid, series_uid = f"2.25.{block.getrandbits(96)}", f"2.25.{block.getrandbits(96)}"
    (ds,) = make_ct_series(
        1, 32, 32, patient_id=f"FZ{block.getrandbits(24)}", study_uid=study_uid, series_uid=series_uid
    )
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.{rng.getrandbits(100)}"
    ds.InstanceNumber = index + 1
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    if sop_class == DX_STORAGE:
        ds.Modality = "DX"
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _encode(ds: Any, syntax: str) -> bytes:
    out = DicomBytesIO()
    out.is_implicit_VR = syntax == pydicom_uid.ImplicitVRLittleEndian
    out.is_little_endian = syntax != pydicom_uid.ExplicitVRBigEndian
    write_dataset(out, ds)
    return out.getvalue()


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(data) + compressor.flush()
    return deflated + b"\x00" * (len(deflated) % 2)  # PS3.5 A.5: padded to even length


def _file_meta(ds: Any, syntax: str, **changes: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = changes.get("sop_class", ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = changes.get("sop_uid", ds.SOPInstanceUID)
    meta.TransferSyntaxUID = changes.get("transfer_syntax", syntax)
    meta.ImplementationClassUID = pydicom_uid.PYDICOM_IMPLEMENTATION_UID
    out = DicomBytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + out.getvalue()


def _disagreeing_meta(rng: random.Random, ds: Any, syntax: str) -> tuple[bytes, str]:
    what = rng.choice(["sop-uid", "sop-class", "syntax", "no-syntax", "group-length", "no-preamble"])
    if what == "sop-uid":
        return _file_meta(ds, syntax, sop_uid=f"2.25.{rng.getrandbits(100)}"), what
    if what == "sop-class":
        return _file_meta(ds, syntax, sop_class="1.2.840.10008.5.1.4.1.1.7"), what
    if what == "syntax":
        return _file_meta(ds, syntax, transfer_syntax=rng.choice([s for s in SYNTAXES if s != syntax])), what
    meta = bytearray(_file_meta(ds, syntax))
    if what == "no-syntax":
        at = meta.index(b"\x02\x00\x10\x00UI")
        length = struct.unpack_from("<H", meta, at + 6)[0]
        del meta[at : at + 8 + length]
    elif what == "group-length":
        struct.pack_into("<L", meta, 132 + 8, rng.choice([0, 3, 0xFFFF, 0xFFFFFFFF]))
    else:
        del meta[:132]
    return bytes(meta), what


def _meta_end(file: bytes) -> int:
    group_length = struct.unpack_from("<L", file, 132 + 8)[0]
    return 132 + 12 + group_length


def _split(file: bytes, at: int) -> tuple[bytes, bytes]:
    return file[:at], file[at:]


# --- servers ----------------------------------------------------------------------------


@dataclass
class Servers:
    """The DICOM server and gunicorn on one database and one DATA_DIR, on free ports."""

    dicom_port: int
    web_url: str  # .../dicomweb
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def dead(self) -> list[str]:
        """The server processes that have ended (none should, whatever they were sent)."""
        ended = [(p, log) for p, log in zip(self.processes, self.logs, strict=True) if p.poll() is not None]
        return [f"{log.stem} exited {p.returncode}" for p, log in ended]


@contextmanager
def servers(
    database_url: str, data_dir: Path, *, web_workers: int = 2, limits: dict[str, str] | None = None
) -> Iterator[Servers]:
    """Both servers, with SERVER_ENV's limits unless `limits` names others ({}: the defaults)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    dicom_port, web_port = free_port(), free_port()
    site = f"http://127.0.0.1:{web_port}"
    env = {
        **os.environ,
        **(SERVER_ENV if limits is None else limits),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "DICOM_PORT": str(dicom_port),
        "SITE_URL": site,
        "DEBUG": "0",
    }
    started = Servers(dicom_port, f"{site}/dicomweb")
    commands = [
        [sys.executable, "manage.py", "dicom_server"],
        [sys.executable, "-m", "gunicorn", "alliance.wsgi", "-b", f"127.0.0.1:{web_port}", "-w", str(web_workers)]
        + ["--timeout", "120"],
    ]
    try:
        for name, command in zip(("dicom_server", "gunicorn"), commands, strict=True):
            log = data_dir / f"{name}.log"
            with log.open("wb") as out:
                started.processes.append(
                    subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
            started.logs.append(log)
        wait_for_port(dicom_port, started.processes[0])
        wait_for_port(web_port, started.processes[1])
        yield started
    finally:
        for process in started.processes:
            process.terminate()
        for process in started.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- sending ----------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # stored, refused, or one of FAILURES
    code: str = ""  # the refusal's status (0xA900, or HTTP 409/0xA900...)
    detail: str = ""


def send_dimse(
    cases: list[Case], port: int, *, calling: str, called: str, folder: Path, per_association: int = 100
) -> dict[int, Outcome]:
    """C-STORE each case's data set as it is (pynetdicom sends a file's data set bytes
    unchanged); a new association every `per_association` files and after any abort."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    for sop_class in (CT_STORAGE, DX_STORAGE):
        for syntax in SYNTAXES:
            ae.add_requested_context(sop_class, syntax)
    sender = _Sender(ae, port, called, per_association)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        outcomes = {case.index: sender.store(case, folder) for case in cases}
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        sender.close()
    return outcomes


class _Sender:
    def __init__(self, ae: AE, port: int, called: str, per_association: int) -> None:
        self.ae, self.port, self.called, self.per_association = ae, port, called, per_association
        self.assoc: Any = None
        self.sent = 0

    def store(self, case: Case, folder: Path) -> Outcome:
        path = folder / f"{case.index}.dcm"
        path.write_bytes(_file_meta(_Ids(case), case.syntax) + case.data_set)
        try:
            for _ in range(2):  # once more on a new association if the last one ended meanwhile
                if not self._associated():
                    return Outcome("aborted", detail="association not accepted")
                started = time.monotonic()
                try:
                    status = self.assoc.send_c_store(path)
                except RuntimeError:  # the previous one's abort arrived just now
                    self.assoc = None
                    continue
                self.sent += 1
                outcome = _dimse_outcome(status, time.monotonic() - started)
                if outcome.kind != "stored" and outcome.kind != "refused":
                    self.close()
                return outcome
            return Outcome("aborted", detail="associations end before a C-STORE")
        finally:
            path.unlink()

    def _associated(self) -> bool:
        if self.assoc is not None and self.assoc.is_established and self.sent < self.per_association:
            return True
        self.close()
        self.assoc, self.sent = self.ae.associate("127.0.0.1", self.port, ae_title=self.called), 0
        return bool(self.assoc.is_established)

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None


@dataclass
class _Ids:
    """What _file_meta needs of a case to write the meta pynetdicom takes its context from."""

    case: Case

    @property
    def SOPClassUID(self) -> str:  # noqa: N802 - pydicom's keyword
        return self.case.sop_class

    @property
    def SOPInstanceUID(self) -> str:  # noqa: N802 - pydicom's keyword
        return self.case.sop_uid


def _dimse_outcome(status: Any, seconds: float) -> Outcome:
    if "Status" not in status:
        return Outcome("hang" if seconds >= TIMEOUT else "aborted", detail=f"no status after {seconds:.1f} s")
    code = int(status.Status)
    if code == 0x0000 or code & 0xF000 == 0xB000:  # PS3.4 B.2.3: warnings are stored too
        return Outcome("stored", f"0x{code:04X}")
    return Outcome("refused", f"0x{code:04X}", str(status.get("ErrorComment", "")))


def send_stow(cases: list[Case], url: str, token: str) -> tuple[dict[int, Outcome], dict[int, str]]:
    """POST each case as one STOW-RS request; the outcomes, and the SOP Instance UID each stored
    case was stored under (from the response's ReferencedSOPSequence)."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Token {token}", "Accept": "application/dicom+json"})
    content_type = 'multipart/related; type="application/dicom"; boundary=fuzz-boundary'
    outcomes: dict[int, Outcome] = {}
    stored_as: dict[int, str] = {}
    for case in cases:
        body = b"--fuzz-boundary\r\nContent-Type: application/dicom\r\n\r\n" + case.file_bytes()
        body += b"\r\n--fuzz-boundary--\r\n"
        try:
            response = session.post(
                f"{url}/studies", data=body, headers={"Content-Type": content_type}, timeout=TIMEOUT
            )
        except requests.Timeout:
            outcomes[case.index] = Outcome("hang", detail="no answer")
            continue
        except requests.ConnectionError as exc:
            outcomes[case.index] = Outcome("crash", detail=str(exc)[:200])
            continue
        outcomes[case.index], sop_uid = _stow_outcome(response)
        if sop_uid:
            stored_as[case.index] = sop_uid
    return outcomes, stored_as


def _stow_outcome(response: requests.Response) -> tuple[Outcome, str]:
    if response.status_code >= 500:
        first_line = (response.text.strip().splitlines() or [""])[0]
        return Outcome("http-5xx", str(response.status_code), first_line[:120]), ""
    try:
        body = response.json()
    except ValueError:
        return Outcome("refused", str(response.status_code), response.text[:200]), ""
    referenced = body.get("00081199", {}).get("Value", []) if isinstance(body, dict) else []
    if response.status_code == 200 and referenced:
        return Outcome("stored", "200"), referenced[0]["00081155"]["Value"][0]
    failed = body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else []
    reasons = [f"0x{item['00081197']['Value'][0]:04X}" for item in failed if "Value" in item.get("00081197", {})]
    return Outcome(
        "refused", f"{response.status_code}/{','.join(reasons) or '-'}", response.headers.get("Warning", "")
    ), ""


# --- fetching back ------------------------------------------------------------------------


def unservable(url: str, token: str, stored: list[tuple[str, str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """What fails for each stored (study, series, SOP Instance UID) of its /metadata (200 and
    valid JSON) and of its retrieval as stored (200, a PS3.10 part), by SOP Instance UID; and
    of each study's /metadata, by Study Instance UID."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Token {token}"})
    instances: dict[str, str] = {}
    for study, series, sop_uid in stored:
        instance = f"{url}/studies/{study}/series/{series}/instances/{sop_uid}"
        problem = _json_problem(session, f"{instance}/metadata") or _retrieve_problem(session, instance)
        if problem:
            instances[sop_uid] = problem
    studies = {study: _json_problem(session, f"{url}/studies/{study}/metadata") for study, _, _ in stored}
    return instances, {study: problem for study, problem in studies.items() if problem}


def _json_problem(session: requests.Session, url: str) -> str:
    try:
        response = session.get(url, headers={"Accept": "application/dicom+json"}, timeout=TIMEOUT)
    except requests.RequestException as exc:
        return f"metadata: {type(exc).__name__}"
    if response.status_code != 200:
        return f"metadata {response.status_code}"
    try:
        json.loads(response.content)
    except ValueError:
        return "metadata: invalid JSON"
    return ""


def _retrieve_problem(session: requests.Session, url: str) -> str:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    try:
        response = session.get(url, headers={"Accept": accept}, timeout=TIMEOUT)
    except requests.RequestException as exc:
        return f"retrieve: {type(exc).__name__}"
    if response.status_code != 200 or b"DICM" not in response.content:
        return f"retrieve {response.status_code}"
    return ""


# --- a run --------------------------------------------------------------------------------


@dataclass
class Run:
    cases: dict[int, Case]
    outcomes: dict[int, Outcome]
    unacknowledged: dict[str, str] = field(default_factory=dict)  # stored, no case's UID: its problem
    dead: list[str] = field(default_factory=list)  # server processes that ended

    def counts(self) -> Counter[str]:
        return Counter(o.kind for o in self.outcomes.values())

    def failures(self) -> dict[int, Outcome]:
        return {i: o for i, o in self.outcomes.items() if o.kind in FAILURES}

    def classes(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """Failures grouped by kind, mutation family and what went wrong (numbers elided): how
        many, and the first case of each."""
        found: dict[tuple[str, str, str], tuple[int, int]] = {}
        for index, outcome in sorted(self.failures().items()):
            case = self.cases[index]
            family = f"{case.channel}, " + "+".join(re.sub(r"-\d+$|-[0-9A-F]{8}$", "", m) for m in case.mutations)
            detail = re.sub(r"\d+(\.\d+)*", "N", outcome.detail)[:120]
            if outcome.detail.startswith(STUDY_PROBLEM):  # another instance of its study is the cause
                family = "any file beside a broken one"
            key = (outcome.kind, family, detail)
            count, first = found.get(key, (0, index))
            found[key] = (count + 1, first)
        return found

    def passed(self) -> bool:
        return not self.failures() and not any(self.unacknowledged.values()) and not self.dead

    def report(self) -> str:
        """Counts per channel and outcome (refusals by code), as a Markdown table, and every
        failure with the case that reproduces it."""
        rows = []
        for channel in ("dimse", "stow"):
            mine = [o for i, o in self.outcomes.items() if self.cases[i].channel == channel]
            refused = Counter(o.code for o in mine if o.kind == "refused")
            kinds = Counter(o.kind for o in mine)
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(refused.items()))
            cells = [str(kinds[k]) for k in _COLUMNS]
            rows.append(f"| {channel} | {len(mine)} | " + " | ".join(cells) + f" | {codes} |")
        head = "| channel | files | " + " | ".join(_COLUMNS) + " | refused by code |"
        lines = [head, "|" + "---|" * (len(_COLUMNS) + 3), *rows]
        for (kind, family, detail), (count, index) in sorted(self.classes().items()):
            lines.append(f"- {count} x {kind} ({family}): {detail}; e.g. {self.cases[index].label}")
        for sop_uid, problem in sorted(self.unacknowledged.items()):
            lines.append(f"- stored without an acknowledgement naming it: {sop_uid}: {problem or 'servable'}")
        lines.extend(f"- crash: {what}" for what in self.dead)
        return "\n".join(lines)


def run(
    seed: int,
    count: int,
    *,
    servers: Servers,
    calling: str,
    called: str,
    token: str,
    folder: Path,
    stored_instances: Callable[[], list[tuple[str, str, str]]],
    progress: Callable[[str], None] = lambda _: None,
) -> Run:
    """Send `count` cases of `seed` (even ones over C-STORE, odd ones over STOW-RS), then
    fetch back every instance the store holds."""
    cases = {i: make_case(seed, i) for i in range(count)}
    dimse = [c for c in cases.values() if c.channel == "dimse"]
    stow = [c for c in cases.values() if c.channel == "stow"]
    progress(f"sending {len(dimse)} files over C-STORE")
    outcomes = send_dimse(dimse, servers.dicom_port, calling=calling, called=called, folder=folder)
    progress(f"sending {len(stow)} files over STOW-RS")
    stow_outcomes, stored_as = send_stow(stow, servers.web_url, token)
    outcomes.update(stow_outcomes)
    stored = stored_instances()
    progress(f"fetching back {len(stored)} stored instances")
    problems, study_problems = unservable(servers.web_url, token, stored)
    for study, _, sop_uid in stored:
        if sop_uid not in problems and study in study_problems:
            problems[sop_uid] = f"{STUDY_PROBLEM} {study_problems[study]}"
    held = {sop_uid for _, _, sop_uid in stored}
    acknowledged = set()
    for index, outcome in outcomes.items():
        if outcome.kind != "stored":
            continue
        sop_uid = stored_as.get(index, cases[index].sop_uid)
        acknowledged.add(sop_uid)
        if sop_uid not in held:
            outcomes[index] = Outcome("lost", outcome.code, f"acknowledged {sop_uid}, no such instance")
        elif sop_uid in problems:
            outcomes[index] = Outcome("unservable", outcome.code, problems[sop_uid])
    others = {sop_uid: problems.get(sop_uid, "") for sop_uid in held - acknowledged}
    return Run(cases, outcomes, others, servers.dead())

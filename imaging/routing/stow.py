"""STOW-RS to a DICOMweb destination (PS3.18 10.5): the stored PS3.10 files as they are,
in multipart/related requests of at most BATCH_FILES files or BATCH_BYTES, with the
destination's bearer token.

The answer is read per instance from the Store Instances Response Module (PS3.18 Table
10.5.3-1, as DICOM JSON): referenced instances are stored, failed ones carry their Failure
Reason. A network error, a timeout, 408, 429 and 5xx are transient (the run stops, to be
tried again later); 401 and 403 (a wrong or expired token) and other 4xx stop the run
without an automatic retry: someone must fix the destination first.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import urllib3

from imaging.dicom.identifiers import StoredObject
from imaging.dicom.scu import Outcome

BATCH_FILES = 64
BATCH_BYTES = 64 * 1024 * 1024
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE = "00081198", "00081199"
REFERENCED_SOP_INSTANCE_UID, FAILURE_REASON = "00081155", "00081197"

_pool = urllib3.PoolManager(retries=False)


def studies_url(url: str) -> str:
    """The STOW-RS target: the service's /studies resource (given the service root or it)."""
    url = url.rstrip("/")
    return url if url.endswith("/studies") else url + "/studies"


def _batches(objects: Sequence[StoredObject]) -> Iterator[list[tuple[StoredObject, bytes]]]:
    batch: list[tuple[StoredObject, bytes]] = []
    size = 0
    for obj in objects:
        with obj.open() as source:
            data = source.read()
        if batch and (len(batch) == BATCH_FILES or size + len(data) > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((obj, data))
        size += len(data)
    if batch:
        yield batch


def multipart_body(files: list[bytes], boundary: str) -> bytes:
    """multipart/related; type="application/dicom" (PS3.18 8.6.1.2, RFC 2387)."""
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    return b"".join(head + data + b"\r\n" for data in files) + f"--{boundary}--\r\n".encode("ascii")


def send(
    objects: Sequence[StoredObject],
    *,
    url: str,
    token: str,
    timeout: float,
    on_sent: Callable[[list[str]], None] = lambda uids: None,
) -> Outcome:
    outcome = Outcome()
    target = studies_url(url)
    for batch in _batches(objects):
        if not _post(target, batch, token, timeout, outcome, on_sent):
            break
    return outcome


def _post(
    target: str,
    batch: list[tuple[StoredObject, bytes]],
    token: str,
    timeout: float,
    outcome: Outcome,
    on_sent: Callable[[list[str]], None],
) -> bool:
    boundary = secrets.token_hex(16)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = multipart_body([data for _obj, data in batch], boundary)
    try:
        response = _pool.request("POST", target, body=body, headers=headers, timeout=timeout, redirect=False)
    except urllib3.exceptions.HTTPError as exc:
        outcome.stop(f"{target}: {type(exc).__name__}: {exc}")
        return False
    uids = [obj.sop_instance_uid for obj, _data in batch]
    status = response.status
    if status in (200, 202, 409):
        return _read_answer(response.data, status, uids, outcome, on_sent)
    detail = response.headers.get("Warning", "") or response.data[:200].decode("utf-8", "replace")
    outcome.stop(f"{target}: HTTP {status} {detail}".strip(), status=status, transient=status in TRANSIENT_HTTP)
    return False


def _read_answer(
    body: bytes, status: int, uids: list[str], outcome: Outcome, on_sent: Callable[[list[str]], None]
) -> bool:
    try:
        answer: dict[str, Any] = json.loads(body or b"{}")
    except ValueError:
        answer = {}
    failed = {}
    for item in answer.get(FAILED_SOP_SEQUENCE, {}).get("Value", []):
        uid = str((item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value") or [""])[0])
        reason = int((item.get(FAILURE_REASON, {}).get("Value") or [0x0110])[0])
        failed[uid] = reason
    if status == 200:
        stored = uids
    else:
        referenced = {
            str((item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value") or [""])[0])
            for item in answer.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
        }
        stored = [uid for uid in uids if uid in referenced and uid not in failed]
    if stored:
        outcome.sent.extend(stored)
        on_sent(stored)
    for uid in uids:
        if uid in failed or (status != 200 and uid not in stored):
            code = failed.get(uid, 0x0110)
            outcome.refused[uid] = (code, f"STOW-RS HTTP {status}")
    unavailable = [code for code in failed.values() if (code & 0xFF00) == 0xA700]
    if unavailable:
        outcome.stop(f"the peer is out of resources (0x{unavailable[0]:04X})", status=unavailable[0])
        return False
    return True

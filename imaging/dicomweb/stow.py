"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related; type="application/dicom".

The body, chunked or not, is split into parts spooled to files as it arrives; only a
well-formed body is stored (a malformed one is refused whole with 400), each part then
through imaging.ingest, the one path from bytes to an indexed instance. Instances go
into the caller's own institution (imaging.access.may_upload_to).

Status (PS3.18 10.5.3): 200 all stored, 202 some failed, 409 none stored, 415 wrong
media type, 400 empty or malformed body. The body lists ReferencedSOPSequence and
FailedSOPSequence with a FailureReason (PS3.4 status codes) for each failed part.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, connections
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from alliance import audit
from alliance.access import principal_of
from alliance.models import AuditEvent
from imaging import access, ingest
from imaging.dicomweb import media
from imaging.dicomweb.multipart import Part
from imaging.dicomweb.parsers import MultipartRelatedDicomParser, body_stream
from imaging.dicomweb.views import DicomWebView, audit_studies, base_url
from imaging.storage import temp_dir

CANNOT_UNDERSTAND = 0xC000  # PS3.4 Annex GG: the part is not a DICOM dataset we can read
# Ingest waits mostly on fsync and the database; a few parts at once use that time.
STORE_THREADS = 4
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome:
    sop_class_uid: str
    sop_instance_uid: str
    stored: Any = None  # ingest.IngestResult when stored
    failure_reason: int = 0
    reason: str = ""


class StoreInstances(DicomWebView):
    """POST /studies and POST /studies/{study}."""

    def post(self, request: Request, study: str = "") -> Response:
        content_type = request.META.get("CONTENT_TYPE", "")
        if media.parse_media_range(content_type).type != media.MULTIPART_RELATED:
            raise exceptions.UnsupportedMediaType(
                content_type, detail='STOW-RS accepts multipart/related; type="application/dicom".'
            )
        self.choose(request, [media.DICOM_JSON, media.JSON])
        institution = access.upload_institution_of(principal_of(request))
        if institution is None:
            raise exceptions.PermissionDenied("Only clinicians may store studies, into their own institution.")
        with tempfile.TemporaryDirectory(dir=temp_dir(), prefix="stow-") as spool:
            parts = MultipartRelatedDicomParser().parse(
                body_stream(request._request),
                content_type,
                {"spool_dir": Path(spool), "max_part_bytes": settings.DICOM_MAX_FILE_BYTES},
            )
            outcomes = self._store_all(request, parts, institution, study)
        return self._respond(request, outcomes)

    def _store_all(self, request: Request, parts: list[Part], institution: Any, study: str) -> list[Outcome]:
        """Ingest every part; several at once unless the caller holds a transaction open
        (each thread has its own connection, which could not see that transaction's rows)."""
        store = partial(self._store, request, institution=institution, study=study)
        if len(parts) == 1 or connection.in_atomic_block:
            return [store(part) for part in parts]
        return in_threads(store, parts, STORE_THREADS)

    def _store(self, request: Request, part: Part, *, institution: Any, study: str) -> Outcome:
        part_type = media.parse_media_range(part.content_type).type if part.content_type else media.DICOM
        if part_type != media.DICOM:
            return Outcome(
                "", "", failure_reason=CANNOT_UNDERSTAND, reason=f"A part is {part_type}, not {media.DICOM}."
            )
        try:
            result = ingest.ingest_path(
                part.path,
                institution=institution,
                actor=audit.actor_of(request),
                via="stow-rs",
                source=audit.source_of(request),
                expected_study_uid=study or None,
            )
        except ingest.IngestError as exc:
            return Outcome(*_uids_of(part.path), failure_reason=exc.dicom_status, reason=exc.reason)
        return Outcome(result.instance.sop_class_uid, result.instance.sop_uid, stored=result)

    def _respond(self, request: Request, outcomes: list[Outcome]) -> Response:
        stored = [o for o in outcomes if o.stored is not None]
        failed = [o for o in outcomes if o.stored is None]
        studies = list({o.stored.study.pk: o.stored.study for o in stored}.values())
        base = base_url()
        body: dict[str, Any] = {}
        if len(studies) == 1:
            body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{studies[0].study_uid}"]}
        if stored:
            body["00081199"] = {"vr": "SQ", "Value": [_referenced(o, base) for o in stored]}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": [_failed(o) for o in failed]}
        audit_studies(
            request,
            "dicomweb.store",
            studies,
            {"stored": len(stored), "failed": [o.reason for o in failed]},
            outcome=AuditEvent.Outcome.SUCCESS if stored else AuditEvent.Outcome.FAILURE,
        )
        status = 200 if not failed else 202 if stored else 409
        response = Response(body, status=status)
        if failed:
            reasons = "; ".join(dict.fromkeys(o.reason for o in failed))
            response.headers["Warning"] = f'299 {request.get_host()} "{_header_safe(reasons)}"'
        return response


def in_threads(work: Callable[[T], R], items: list[T], threads: int) -> list[R]:
    """work(item) for every item on a few threads, results in the items' order.

    Each thread closes its database connection when done; the first exception is re-raised.
    """
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    queue = iter(enumerate(items))
    lock = threading.Lock()

    def run() -> None:
        try:
            while not errors:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                results[item[0]] = work(item[1])
        except BaseException as exc:  # noqa: BLE001 - handed to the request's thread below
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=run, name=f"stow-{n}") for n in range(min(threads, len(items)))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _uids_of(path: Path) -> tuple[str, str]:
    """The SOP Class and Instance UIDs of a refused part, when it is readable at all."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"], force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return "", ""
    return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))


def _referenced(outcome: Outcome, base: str) -> dict[str, Any]:
    result = outcome.stored
    url = f"{base}/studies/{result.study.study_uid}/series/{result.series.series_uid}"
    url += f"/instances/{outcome.sop_instance_uid}"
    return {
        "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [outcome.sop_instance_uid]},
        "00081190": {"vr": "UR", "Value": [url]},
    }


def _failed(outcome: Outcome) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]} if outcome.sop_class_uid else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [outcome.sop_instance_uid]} if outcome.sop_instance_uid else {"vr": "UI"},
        "00081197": {"vr": "US", "Value": [outcome.failure_reason]},
    }
    return item


def _header_safe(text: str) -> str:
    return text.replace('"', "'").encode("ascii", "replace").decode("ascii")[:500]

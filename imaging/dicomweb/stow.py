"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related; type="application/dicom".

The body, chunked or not, is split into parts spooled to files as it arrives; only a
well-formed body is stored (a malformed one is refused whole with 400), the parts then
through imaging.ingest, the one path from bytes to an indexed instance. Since the answer
comes only once every part is done, the parts are made durable together: each one's sync
and checksum start on the store's pool as soon as it is spooled, and the further instances
of a series go into the index in one commit (ingest.ingest_paths); a part refused costs
the others nothing. Instances go into the caller's own institution
(imaging.access.may_upload_to).

Every answer says what became of each part (PS3.18 10.5.3, Annex I), in
application/dicom+json or application/dicom+xml as the client asks: ReferencedSOPSequence
for the stored, FailedSOPSequence with a FailureReason for the others. Status: 200 all
stored; 202 some stored, some not; 409 none stored; 503 (Retry-After) none stored because
the database or the store is away. When it goes away during the request, the parts stored
before are Referenced and the rest Failed with 0xA700 (a 202), so the client knows which
to send again; sending a stored one again is harmless (ingest is idempotent). The request
itself: 415 without a multipart/related; type="application/dicom" Content-Type, 400 for an
empty or malformed body, 413 over DICOMWEB_MAX_BODY_MB or DICOMWEB_MAX_PARTS, 408 when the
body stops arriving (imaging/dicomweb/parsers.py).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseLayerError
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpResponse
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from rest_framework import exceptions
from rest_framework.request import Request

from alliance import audit
from alliance.access import principal_of
from alliance.models import AuditEvent
from imaging import access, ingest
from imaging.dicom.datasets import is_valid_uid
from imaging.dicomweb import media
from imaging.dicomweb.multipart import Part
from imaging.dicomweb.parsers import MultipartRelatedDicomParser, PayloadTooLarge, RequestBody, declared_length
from imaging.dicomweb.renderers import STORE_RESPONSE_RENDERERS
from imaging.dicomweb.views import (
    DicomWebView,
    InsufficientStorage,
    ServiceUnavailable,
    audit_studies,
    base_url,
)
from imaging.storage import temp_dir

log = logging.getLogger(__name__)

# PS3.18 Table I.2-2 (Failure Reason)
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Outcome:
    sop_class_uid: str
    sop_instance_uid: str
    stored: Any = None  # ingest.IngestResult when stored
    failure_reason: int = 0
    reason: str = ""
    unavailable: bool = False  # not stored because the database or the store was away


class StoreInstances(DicomWebView):
    """POST /studies and POST /studies/{study}."""

    def post(self, request: Request, study: str = "") -> HttpResponse:
        content_type = _multipart_content_type(request)
        chosen, _ = self.choose(request, list(STORE_RESPONSE_RENDERERS))
        institution = _uploading_institution(request)
        body = RequestBody(request._request)
        limit = settings.DICOMWEB_MAX_BODY_BYTES
        if (declared_length(request._request) or 0) > limit:
            body.abandon()
            raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        started: dict[Path, ingest.Started] = {}
        with _spool_folder() as spool:
            parts = self._parts(body, content_type, spool, started)
            outcomes = self._store_all(request, parts, institution, study, started)
        return self._respond(request, outcomes, chosen)

    def _parts(
        self, body: RequestBody, content_type: str, spool: Path, started: dict[Path, ingest.Started]
    ) -> list[Part]:
        """The parts spooled; each DICOM part's sync and checksum begun (ingest.start_on) as
        soon as it is whole, while the rest of the body arrives."""

        def start(part: Part) -> None:
            if _not_dicom(part) is None:
                started[part.path] = ingest.start_on(part.path)

        context = {
            "spool_dir": spool,
            "max_part_bytes": settings.DICOM_MAX_FILE_BYTES,
            "max_body_bytes": settings.DICOMWEB_MAX_BODY_BYTES,
            "max_parts": settings.DICOMWEB_MAX_PARTS,
            "on_part": start,
        }
        with body.reading(settings.REQUEST_BODY_TIMEOUT_SECONDS), _spool_errors():
            return MultipartRelatedDicomParser().parse(body, content_type, context)

    def _store_all(
        self,
        request: Request,
        parts: list[Part],
        institution: Any,
        study: str,
        started: dict[Path, ingest.Started],
    ) -> list[Outcome]:
        """Ingest every part: together (ingest.ingest_paths: the files synced at once, the further
        instances of a series indexed in one commit), or one by one through ingest_path inside a
        transaction of the caller's (whose commit is the caller's). Once the database or the
        store is found away, the parts not yet begun are not tried."""
        outcomes: list[Outcome | None] = [_not_dicom(part) for part in parts]
        dicom = [(n, part) for n, part in enumerate(parts) if outcomes[n] is None]
        if not dicom:
            return [o for o in outcomes if o is not None]
        actor, source = audit.actor_of(request), audit.source_of(request)
        ingest_one = partial(ingest.ingest_path, institution=institution, actor=actor, via="stow-rs", source=source)
        if connection.in_atomic_block:
            results: list[Any] = []
            for _, part in dicom:
                if results and _away(results[-1]):
                    results.append(ingest.NOT_TRIED)
                    continue
                try:
                    results.append(ingest_one(part.path, expected_study_uid=study or None))
                except Exception as exc:  # noqa: BLE001 - reported below as the part's outcome
                    results.append(exc)
        else:
            results = ingest.ingest_paths(
                [part.path for _, part in dicom],
                institution=institution,
                actor=actor,
                via="stow-rs",
                source=source,
                expected_study_uid=study or None,
                started=[started.get(part.path) or ingest.start_on(part.path) for _, part in dicom],
            )
        for (n, part), result in zip(dicom, results, strict=True):
            outcomes[n] = _outcome(part, result)
        return [o for o in outcomes if o is not None]

    def _respond(self, request: Request, outcomes: list[Outcome], chosen: str) -> HttpResponse:
        stored = [o for o in outcomes if o.stored is not None]
        failed = [o for o in outcomes if o.stored is None]
        studies = list({o.stored.study.pk: o.stored.study for o in stored}.values())
        _audit(request, studies, stored, failed)
        renderer = STORE_RESPONSE_RENDERERS[chosen]
        status = 200 if not failed else 202 if stored else 503 if _any_away(failed) else 409
        response = HttpResponse(renderer.render(store_response(studies, stored, failed)), chosen, status=status)
        if failed:
            reasons = "; ".join(dict.fromkeys(o.reason for o in failed))
            response.headers["Warning"] = f'299 {request.get_host()} "{_header_safe(reasons)}"'
        if _any_away(failed):
            response.headers["Retry-After"] = str(ServiceUnavailable.wait)
        return response


def _not_dicom(part: Part) -> Outcome | None:
    part_type = media.parse_media_range(part.content_type).type if part.content_type else media.DICOM
    if part_type == media.DICOM:
        return None
    return Outcome("", "", failure_reason=CANNOT_UNDERSTAND, reason=f"A part is {part_type}, not {media.DICOM}.")


def _away(result: Any) -> bool:
    """Whether ingest's answer says the database or the store is away."""
    if isinstance(result, ingest.IngestError):
        return result.code == "storage-failed"
    return isinstance(result, OperationalError | InterfaceError)


def _outcome(part: Part, result: Any) -> Outcome:
    """What became of a part, from ingest's answer: its IngestResult, the error it raised, or
    NOT_TRIED."""
    if result is ingest.NOT_TRIED:
        return _not_tried(part)
    if isinstance(result, ingest.IngestError):
        uids = _uids_of(part.path, result.sop_uid)
        return Outcome(*uids, failure_reason=result.dicom_status, reason=result.reason, unavailable=_away(result))
    if isinstance(result, OperationalError | InterfaceError):
        log.warning("STOW-RS part %s: the database is unavailable (%s)", part.path.name, result)
        return _not_tried(part, "the database became unavailable while it was stored")
    if isinstance(result, BaseException):  # a part must not cost the others their answer (PS3.18 I.2.2: 0110)
        log.error("STOW-RS part %s could not be processed", part.path.name, exc_info=result)
        return Outcome(*_uids_of(part.path), failure_reason=PROCESSING_FAILURE, reason="processing failed")
    return Outcome(result.instance.sop_class_uid, result.instance.sop_uid, stored=result)


def store_response(studies: list[Any], stored: list[Outcome], failed: list[Outcome]) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table I.1-1) as DICOM JSON."""
    base = base_url()
    body: dict[str, Any] = {}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{studies[0].study_uid}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed(o) for o in failed]}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_referenced(o, base) for o in stored]}
    return body


def _multipart_content_type(request: Request) -> str:
    content_type = request.META.get("CONTENT_TYPE", "")
    if media.parse_media_range(content_type).type != media.MULTIPART_RELATED:
        raise exceptions.UnsupportedMediaType(
            content_type or "(none)", detail='STOW-RS accepts multipart/related; type="application/dicom".'
        )
    return content_type


def _uploading_institution(request: Request) -> Any:
    institution = access.upload_institution_of(principal_of(request))
    if institution is None:
        raise exceptions.PermissionDenied("Only clinicians may store studies, into their own institution.")
    return institution


@contextlib.contextmanager
def _spool_folder() -> Any:
    try:
        folder = tempfile.TemporaryDirectory(dir=temp_dir(), prefix="stow-")
    except OSError as exc:
        raise _spool_failure(exc) from None
    with folder as name:
        yield Path(name)


@contextlib.contextmanager
def _spool_errors() -> Any:
    """The body cannot be spooled (a full disk): the server's trouble, not the client's."""
    try:
        yield
    except OSError as exc:
        raise _spool_failure(exc) from None


def _spool_failure(exc: OSError) -> exceptions.APIException:
    log.error("STOW-RS cannot spool a request body: %s", exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("The server has no room for the request now; send it again later.")
    return ServiceUnavailable("The server cannot take the request now; send it again later.")


def _not_tried(part: Part, why: str = "the database or the store became unavailable during the request") -> Outcome:
    return Outcome(*_uids_of(part.path), failure_reason=OUT_OF_RESOURCES, reason=f"not stored: {why}", unavailable=True)


def _any_away(failed: list[Outcome]) -> bool:
    return any(o.unavailable for o in failed)


def _audit(request: Request, studies: list[Any], stored: list[Outcome], failed: list[Outcome]) -> None:
    """One event for the request (each instance has its own from ingest); with the database
    away, the answer still goes out and the loss of this event is logged."""
    try:
        audit_studies(
            request,
            "dicomweb.store",
            studies,
            {"stored": len(stored), "failed": [o.reason for o in failed]},
            outcome=AuditEvent.Outcome.SUCCESS if stored else AuditEvent.Outcome.FAILURE,
            read=False,
        )
    except DatabaseLayerError:
        log.exception("could not audit a STOW-RS request (%d stored, %d failed)", len(stored), len(failed))


def _uids_of(path: Path, sop_uid: str = "") -> tuple[str, str]:
    """The SOP Class and Instance UIDs of a part that was not stored, as far as it names
    them; `sop_uid` is what ingest read. Only the file meta, or a bare data set's first
    elements, are read: never a deflated data set (which could inflate to gigabytes)."""
    try:
        meta = read_file_meta_info(path)
        found = (meta.get("MediaStorageSOPClassUID", ""), meta.get("MediaStorageSOPInstanceUID", ""))
    except Exception:  # noqa: BLE001 - no file meta: perhaps a bare data set
        found = _bare_uids(path)
    sop_class, sop_instance = (str(uid) if is_valid_uid(str(uid)) else "" for uid in found)
    return sop_class, sop_uid or sop_instance


def _bare_uids(path: Path) -> tuple[str, str]:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"], force=True)
        return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception:  # noqa: BLE001 - untrusted bytes: whatever the parser trips over, no UIDs
        return "", ""


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
    return {
        "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]} if outcome.sop_class_uid else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [outcome.sop_instance_uid]} if outcome.sop_instance_uid else {"vr": "UI"},
        "00081197": {"vr": "US", "Value": [outcome.failure_reason]},
    }


def _header_safe(text: str) -> str:
    """A reason taken from a file may hold anything: printable ASCII only, in a header."""
    printable = "".join(c if " " <= c < "\x7f" else " " for c in text.replace('"', "'"))
    return printable[:500]

"""What every DICOMweb view shares: authentication, negotiation, errors and the audit event.

Authentication is the REST API's (Token or Bearer for clients, the session for our own
pages); what a caller sees is decided by imaging.access alone. Each view negotiates
its own representation with `media.choose` (see media.py for why DRF's does not fit);
errors are JSON with a reason, whatever the client accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponseBase
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from alliance import audit
from alliance.access import principal_of
from alliance.api.permissions import IsActiveDoctor
from alliance.models import AuditEvent
from imaging import access
from imaging.dicomweb import media
from imaging.dicomweb.renderers import DicomJsonRenderer, ErrorJsonRenderer
from imaging.models import Study
from imaging.viewer import session as viewer_session

log = logging.getLogger(__name__)


def base_url(request: Any = None) -> str:
    """Where clients reach DICOMweb, for RetrieveURL and BulkDataURI values: /dicomweb, or
    the base a request came through (a patient's film link has its own, imaging.film_session).

    Built from SITE_URL rather than the Host header: dicomweb-client sends Host without
    the port, and a proxy in front may rewrite it.
    """
    return settings.SITE_URL + (getattr(request, "dicomweb_path", None) or "/dicomweb")


class BadRequest(exceptions.APIException):
    status_code = 400
    default_code = "bad_request"


class DicomWebNotAcceptable(exceptions.APIException):
    status_code = 406
    default_code = "not_acceptable"


class ServiceUnavailable(exceptions.APIException):
    """The database or the store is away for now; DRF sends `wait` as Retry-After."""

    status_code = 503
    default_code = "service_unavailable"
    default_detail = "The service is unavailable for the moment; try again shortly."
    wait = 30


class DatabaseUnavailable(ServiceUnavailable):
    """The database is away: the same code as every other page and API answers then
    (alliance.middleware.database_unavailable)."""

    default_code = "database_unavailable"
    default_detail = "The database is unavailable for the moment; try again shortly."


class InsufficientStorage(ServiceUnavailable):
    status_code = 507
    default_code = "insufficient_storage"


class ViewNegotiation(BaseContentNegotiation):
    """Leave the choice to the view (media.choose); DRF renders only JSON bodies here."""

    def select_parser(self, request: Any, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class DicomWebView(APIView):
    permission_classes = [IsActiveDoctor]
    renderer_classes = [DicomJsonRenderer, ErrorJsonRenderer]
    parser_classes: list[Any] = []
    content_negotiation_class = ViewNegotiation

    def accepted(self, request: Request) -> list[media.MediaRange]:
        return media.accept_of(request.META, request.query_params.getlist("accept"))

    def choose(self, request: Request, offers: list[str]) -> tuple[str, media.MediaRange]:
        try:
            return media.choose(self.accepted(request), offers)
        except media.NotAcceptable as exc:
            raise DicomWebNotAcceptable(str(exc)) from None

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        if isinstance(exc, OperationalError | InterfaceError):  # the database is away, not the request wrong
            log.warning("DICOMweb %s: the database is unavailable (%s)", type(self).__name__, exc)
            exc = DatabaseUnavailable()
        response = super().handle_exception(exc)
        if getattr(response, "data", None) is not None:
            response.accepted_renderer = ErrorJsonRenderer()  # type: ignore[attr-defined]
            response.accepted_media_type = media.JSON  # type: ignore[attr-defined]
        return response

    def audit(self, request: Request, action: str, studies: Iterable[Study], **detail: Any) -> None:
        """One event per request, naming every study it returned patient data of."""
        audit_studies(request, action, list(studies), detail)


def audit_studies(
    request: Request,
    action: str,
    studies: Sequence[Any],
    detail: dict[str, Any],
    outcome: str = AuditEvent.Outcome.SUCCESS,
    *,
    read: bool = True,
) -> None:
    """Study rows (or stand-ins with pk, study_uid, institution_id, patient_id) into one event;
    a read's is committed without waiting for the disk (audit.record_read), a store's with."""
    if viewer_session.covers(request, action, studies):
        return  # part of a viewing the viewer page already audited ("study.view")
    bases = access.bases_for(principal_of(request), studies)
    first = studies[0] if len(studies) == 1 else None
    (audit.record_read if read else audit.record)(
        actor=audit.actor_of(request),
        action=action,
        object_type="study",
        object_id=first.study_uid if first else f"{len(studies)} studies",
        patient=str(first.patient_id) if first else "",
        basis=bases.get(first.pk, "") if first else ",".join(sorted(set(bases.values()))),
        source=audit.source_of(request),
        outcome=outcome,
        detail={
            **detail,
            "studies": [s.study_uid for s in studies],
            "patients": sorted({s.patient_id for s in studies}),
        },
    )


def audit_unservable(
    request: HttpRequest | Request, study: Study, instance: Any, *, via: str, error: BaseException
) -> None:
    """An instance left out of an answer because its stored file is missing or cannot be
    read: a warning, and a failure event ("instance.missing" or "instance.unreadable")."""
    action = "instance.missing" if isinstance(error, FileNotFoundError) else "instance.unreadable"
    reason = f"{type(error).__name__}: {str(error)[:300]}"
    log.warning("%s %s of study %s (%s): %s", action, instance.sop_uid, study.study_uid, via, reason)
    try:
        audit.record(
            actor=audit.Actor.for_user(request.user),
            action=action,
            object_type="instance",
            object_id=instance.sop_uid,
            patient=str(study.patient_id),
            source=audit.source_of(request),
            outcome=AuditEvent.Outcome.FAILURE,
            detail={"via": via, "study": study.study_uid, "error": reason},
        )
    except DatabaseError:
        log.exception("could not audit %s of %s", action, instance.sop_uid)

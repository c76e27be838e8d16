"""What each association gets once pynetdicom has made it: the reactor wakers
(imaging/dicom/accel/wakeup.py), bulk PDU reads and, on a server association, whole-PDU sends
(imaging/dicom/accel/find.py) and a direct store (imaging/dicom/accel/direct.py); on one we
request, its responses kept for their sender."""

from __future__ import annotations

from typing import Any

from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler

from imaging.dicom.accel import direct, find, wakeup

original_create_association = RequestHandler._create_association


def create_association(self: RequestHandler) -> Association:
    """RequestHandler._create_association, giving each accepted association, before it starts,
    its wakers, bulk reads, whole-PDU sends (so that C-FIND responses may go out from the
    association's thread) and a direct store (inactive until the handlers activate it)."""
    assoc = original_create_association(self)
    if assoc.dul.socket is not None:
        direct.read_in_bulk(assoc.dul.socket)
        find.send_whole_pdus(assoc.dul.socket)
    wakeup.install(assoc)
    direct.install(assoc)
    return assoc


def on_requested_open(event: Any) -> None:
    """An EVT_CONN_OPEN handler for the associations we request (C-MOVE sub-associations)."""
    assoc = event.assoc
    if assoc.dul.socket is not None:
        direct.read_in_bulk(assoc.dul.socket)
    wakeup.install(assoc)
    keep_responses_for_their_sender(assoc)


def keep_responses_for_their_sender(assoc: Any) -> None:
    """Work around a pynetdicom race on associations we request (C-MOVE sub-associations).

    send_c_store pauses the association's reactor before it sends, but the reactor can take
    the response off the queue in the instant after the pause check (likelier with
    TCP_NODELAY on a loaded host); it then drops it as unexpected and the sender waits until
    the peer gives up. Responses the reactor takes go back on the queue for the sender.
    """
    serve = assoc._serve_request

    def serve_requests_only(msg: Any, context_id: int) -> None:
        if msg.is_valid_request:
            serve(msg, context_id)
        else:
            assoc.dimse.msg_queue.put((context_id, msg))

    # Replacing the bound method on this one association is the point: pynetdicom offers no hook
    # between its DIMSE reactor and the request dispatch.
    assoc._serve_request = serve_requests_only

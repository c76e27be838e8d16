"""Association negotiation without re-doing the same work for every association.

Each function stands in for what pynetdicom calls by name inside its modules
(imaging/dicom/accel/__init__.py puts them there): they return what pynetdicom's own would.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections import OrderedDict
from typing import Any

from pydicom.uid import UID
from pynetdicom import _config, presentation, utils
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_items import (
    ApplicationContextItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    UserInformationItem,
)
from pynetdicom.presentation import PresentationContext


def copy_contexts(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """copy.deepcopy, except for a list of presentation contexts, which is copied field by field.

    pynetdicom deep-copies the server's supported contexts for every association it accepts
    (transport.RequestHandler._create_association): with every storage SOP class in every
    transfer syntax that is 177 contexts and 3,885 UIDs, 16 ms of interpreter time on a quiet
    machine and several times that under load, for every association. The UIDs are strings
    and cannot change; only the lists holding them and the contexts themselves need copies.
    """
    if isinstance(value, list) and all(type(cx) is PresentationContext for cx in value):
        copied = SupportedCopy(_copy_context(cx) for cx in value)
        copied.source = value  # the negotiation of a remembered request is keyed on it
        return copied
    return copy.deepcopy(value, memo)


def _copy_context(cx: PresentationContext) -> PresentationContext:
    # copy.copy by hand: its __reduce_ex__ round trip cost three times as much, 170 times an
    # association (0.3 ms of the 1.2 ms pynetdicom takes to set one up)
    twin = PresentationContext.__new__(PresentationContext)
    vars(twin).update(vars(cx))
    twin._transfer_syntax = list(cx._transfer_syntax)
    return twin


@functools.lru_cache(maxsize=4096)
def _remembered_uid(value: Any, name: str, allow_empty: bool, allow_none: bool, validate: bool) -> Any:
    return utils.set_uid(value, name, allow_empty, allow_none, validate)


def set_uid_remembered(
    value: Any, name: str, allow_empty: bool = True, allow_none: bool = True, validate: bool = True
) -> Any:
    """pynetdicom.utils.set_uid, remembering what it made of each value.

    Association negotiation converts and validates every UID a peer proposes, several times
    over (decoding the PDU, building the primitive, matching contexts), each through
    pydicom's UID class and a regular expression. storescu proposes over a hundred SOP classes
    in several transfer syntaxes, every time: tens of milliseconds of interpreter time per
    association, the same strings each time. A UID is an immutable string, so the same one
    can be handed out again; refusals are raised again each time (they are not remembered).
    Only the negotiation modules use this: the UIDs of instances go on as before.
    """
    try:
        return _remembered_uid(value, name, allow_empty, allow_none, validate)
    except TypeError:  # an unhashable value: pynetdicom's own error
        return utils.set_uid(value, name, allow_empty, allow_none, validate)


@functools.lru_cache(maxsize=4096)
def _judged_syntax(value: str, enforced: bool) -> tuple[UID, bool, bool, bool]:
    """(the UID, valid for pynetdicom, conformant, private or a transfer syntax); `enforced`
    (_config.ENFORCE_UID_CONFORMANCE) is part of the key because validate_uid reads it."""
    syntax = UID(value)
    return syntax, utils.validate_uid(syntax), syntax.is_valid, syntax.is_private or syntax.is_transfer_syntax


def add_transfer_syntax(self: PresentationContext, syntax: Any) -> None:
    """PresentationContext.add_transfer_syntax, judging each UID once.

    Decoding an A-ASSOCIATE-RQ adds every transfer syntax the peer proposes to a context of
    its own: storescu proposes 128 contexts in 2 or 3 syntaxes each, and pynetdicom builds a
    pydicom UID and runs two regular expressions for each, 327 times per association (about
    2 ms of interpreter time, a fifth of what an association costs the bare protocol layer).
    The same strings every time: what pynetdicom makes of one is remembered. It logs and
    refuses exactly as pynetdicom does, each time."""
    if syntax is None:
        return
    if isinstance(syntax, bytes):
        syntax = syntax.decode("ascii")
    elif not isinstance(syntax, str):
        presentation.LOGGER.error("Attempted to add an invalid transfer syntax")
        return
    syntax, valid, conformant, known = _judged_syntax(str(syntax), _config.ENFORCE_UID_CONFORMANCE)
    if not valid:
        presentation.LOGGER.error("'transfer_syntax' contains an invalid UID")
        raise ValueError("'transfer_syntax' contains an invalid UID")
    if syntax and not conformant:
        presentation.LOGGER.warning(f"The Transfer Syntax Name '{syntax}' is non-conformant")
    if syntax not in self._transfer_syntax and syntax != "":
        if not conformant:
            presentation.LOGGER.warning("A non-conformant UID has been added to 'transfer_syntax'")
        if not known:
            presentation.LOGGER.warning(
                f"A UID has been added to 'transfer_syntax' that is not a transfer syntax: '{syntax}'"
            )
        self._transfer_syntax.append(syntax)


# --- one proposal, negotiated once ---------------------------------------------------------
#
# A modality or gateway proposes the same presentation contexts, byte for byte, on every
# association it opens: storescu proposes 128 contexts whatever it sends, and a clinic's DR
# sends each study on an association of its own. pynetdicom decodes those 128 items, makes
# 128 presentation contexts of them, negotiates each against the server's 170 and builds 128
# result items for the A-ASSOCIATE-AC, every time: a third of what an association costs the
# protocol layer. What it makes of a request is kept, per exact request bytes (the AE titles
# and the user information items are part of them), and handed out again. Nothing here is
# changed after it is made: the request PDU, its contexts, the negotiated results and their
# result items are only read by pynetdicom and by imaging/dicom (the tests check it makes the
# same A-ASSOCIATE-AC bytes as pynetdicom's own path).

REMEMBERED_REQUESTS = 64  # distinct requests kept (each a few kilobytes), the least recent dropped
_REMEMBERED_BYTES = 65536  # a request larger than this is decoded each time
_requests: OrderedDict[tuple[bool, bytes], A_ASSOCIATE_RQ] = OrderedDict()
_negotiated: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()
_remembering = threading.Lock()


class SupportedCopy(list):  # type: ignore[type-arg]
    """A copy of a server's supported contexts (copy_contexts), knowing the list it copies: a
    server's list is made once, when it starts, and never changed after."""

    source: list[PresentationContext]


def remembered_request(data: bytes | bytearray) -> A_ASSOCIATE_RQ:
    """The A-ASSOCIATE-RQ PDU these bytes decode to, decoded once for the same bytes (an
    error decoding them is raised each time, nothing is kept). A request carrying a user
    identity (a password, a Kerberos or SAML token) is never kept."""
    key = (_config.ENFORCE_UID_CONFORMANCE, bytes(data))  # the decoding validates UIDs by it
    with _remembering:
        request = _requests.get(key)
        if request is not None:
            _requests.move_to_end(key)
            return request
    request = A_ASSOCIATE_RQ()
    request.decode(key[1])
    if len(key[1]) <= _REMEMBERED_BYTES and not _carries_identity(request):
        for item in request.variable_items:
            if isinstance(item, PresentationContextItemRQ):
                vars(item)["_remembered"] = True  # its context is made once (remembered_context)
        with _remembering:
            request = _requests.setdefault(key, request)
            while len(_requests) > REMEMBERED_REQUESTS:
                _requests.popitem(last=False)
    return request


def _carries_identity(request: A_ASSOCIATE_RQ) -> bool:
    return any(
        isinstance(item, UserInformationItem) and item.user_identity is not None for item in request.variable_items
    )


original_context_to_primitive = PresentationContextItemRQ.to_primitive


def remembered_context(self: PresentationContextItemRQ) -> PresentationContext:
    """PresentationContextItemRQ.to_primitive, made once for an item of a remembered request."""
    if not getattr(self, "_remembered", False):
        return original_context_to_primitive(self)
    context = getattr(self, "_context", None)
    if context is None:
        context = original_context_to_primitive(self)
        vars(context)["_remembered"] = True  # negotiated once (negotiate_as_acceptor)
        vars(self)["_context"] = context
    return context


def negotiate_as_acceptor(rq_contexts: list[Any], ac_contexts: list[Any], roles: Any = None) -> tuple[list, list]:
    """presentation.negotiate_as_acceptor, once for the contexts of a remembered request and a
    server's supported contexts (and the roles the request asks for)."""
    source = getattr(ac_contexts, "source", None)
    if source is None or not rq_contexts or not all(getattr(cx, "_remembered", False) for cx in rq_contexts):
        return presentation.negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
    key = (id(source), tuple(map(id, rq_contexts)), tuple(sorted((roles or {}).items())))
    with _remembering:
        kept = _negotiated.get(key)
        if kept is not None:
            _negotiated.move_to_end(key)
    if kept is None:
        results, reply_roles = presentation.negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
        for context in results:
            vars(context)["_ac_item"] = _result_item(context)
        # The key's ids stay those of these objects: they are held here as long as the key.
        kept = (results, reply_roles, source, list(rq_contexts))
        with _remembering:
            kept = _negotiated.setdefault(key, kept)
            while len(_negotiated) > REMEMBERED_REQUESTS:
                _negotiated.popitem(last=False)
    return list(kept[0]), list(kept[1])


def _result_item(context: PresentationContext) -> PresentationContextItemAC:
    item = PresentationContextItemAC()
    item.from_primitive(context)
    return item


def accept_from_primitive(self: A_ASSOCIATE_AC, primitive: Any) -> None:
    """A_ASSOCIATE_AC.from_primitive, with the result item of a remembered negotiation's
    context made once (for any other context: made here, as pynetdicom does)."""
    self.reserved_aet = primitive.called_ae_title
    self.reserved_aec = primitive.calling_ae_title
    application_context = ApplicationContextItem()
    application_context.application_context_name = primitive.application_context_name
    self.variable_items.append(application_context)
    for context in primitive.presentation_context_definition_results_list:
        item = getattr(context, "_ac_item", None)
        self.variable_items.append(item if item is not None else _result_item(context))
    user_information = UserInformationItem()
    user_information.from_primitive(primitive.user_information)
    self.variable_items.append(user_information)


def forget() -> None:
    """Drop every remembered request and negotiation (uninstall; tests)."""
    with _remembering:
        _requests.clear()
        _negotiated.clear()

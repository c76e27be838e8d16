"""Association negotiation without re-doing the same work for every association.

Each function stands in for what pynetdicom calls by name inside its modules
(imaging/dicom/accel/__init__.py puts them there): they return what pynetdicom's own would.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydicom.uid import UID
from pynetdicom import _config, presentation, utils
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
        return [_copy_context(cx) for cx in value]
    return copy.deepcopy(value, memo)


def _copy_context(cx: PresentationContext) -> PresentationContext:
    twin = copy.copy(cx)
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

"""Association negotiation without re-doing the same work for every association.

Both functions stand in for what pynetdicom calls by name inside its modules
(imaging/dicom/accel/__init__.py puts them there): they return what pynetdicom's own would.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pynetdicom import utils
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

"""DIMSE status codes by name (PS3.7 Annex C, PS3.4 B.2.3 and C.4)."""

import re
from enum import IntEnum

ERROR_COMMENT_MAX = 64  # (0000,0902) Error Comment is LO (PS3.7 E.1)
# PS3.5 6.2: an LO value is default-repertoire characters without control characters; a
# backslash would split it into several values, which a command element cannot hold.
_NOT_IN_LO = re.compile(r"[^\x20-\x5b\x5d-\x7e]")
_LO_REPLACEMENTS = {"\\": "/", "\t": " ", "\n": " ", "\r": " "}


class Status(IntEnum):
    SUCCESS = 0x0000
    PENDING = 0xFF00  # C-FIND, C-MOVE, C-GET: a match or sub-operation follows
    PENDING_WITH_WARNING = 0xFF01  # C-FIND: optional keys not supported (PS3.4 C.4.1.1.4)
    CANCEL = 0xFE00
    SUB_OPERATIONS_WITH_FAILURES = 0xB000  # C-MOVE, C-GET warning (PS3.4 C.4.2.1.5)
    # PS3.7 C.4: the general statuses the N-services answer with
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110  # MPPS N-SET with Error ID A710: may no longer be updated (PS3.4 F.7.2.2)
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    NO_SUCH_ARGUMENT = 0x0114
    INVALID_ARGUMENT_VALUE = 0x0115
    INVALID_OBJECT_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    NO_SUCH_ACTION = 0x0123
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124
    OUT_OF_RESOURCES = 0xA700  # C-STORE refused: out of resources (PS3.4 B.2.3)
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # C-MOVE, C-GET
    MOVE_DESTINATION_UNKNOWN = 0xA801
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # C-STORE error; C-FIND/MOVE/GET: identifier does not match
    CANNOT_UNDERSTAND = 0xC000  # C-STORE error; C-FIND/MOVE/GET: unable to process

    @property
    def is_failure(self) -> bool:
        return self not in {Status.SUCCESS, Status.PENDING, Status.PENDING_WITH_WARNING, Status.CANCEL}


class DimseFailure(Exception):
    """A request the services refuse: its status and the reason sent back as Error Comment
    (and, where the standard names one, the Error ID (0000,0903))."""

    def __init__(self, status: int, reason: str, *, error_id: int | None = None) -> None:
        super().__init__(f"0x{status:04X} {reason}")
        self.status = status
        self.reason = reason
        self.error_id = error_id


# PS3.4 F.7.2.2.2: the Error ID of an N-SET on a performed procedure step that is finished
MPPS_MAY_NO_LONGER_BE_UPDATED = 0xA710


def error_comment(reason: str) -> str:
    """`reason` as an Error Comment: one LO value of at most 64 characters, a backslash made a
    slash, other control and non-ASCII characters a space or a question mark."""
    comment = _NOT_IN_LO.sub(lambda m: _LO_REPLACEMENTS.get(m.group(), "?"), reason[:ERROR_COMMENT_MAX])
    return comment.rstrip(" ")

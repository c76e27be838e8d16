"""Reading and answering HL7 v2 messages with the `hl7` library: a safe field accessor, the
errors that name a segment and field, and the ACK (MSA, and ERR for AE/AR).

ERR is written both ways HIS vendors read it: ERR-1 as v2.3/2.4 had it
(segment^sequence^field^code&text&HL70357) and ERR-2/3/4/8 as v2.5 has it (location,
HL7 error code from table 0357, severity, user message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import hl7
from django.conf import settings
from django.utils import timezone

# HL7 table 0357, message error condition codes.
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_VERSION = "203"
UNKNOWN_KEY = "204"
INTERNAL_ERROR = "207"
SEGMENT_SEQUENCE_ERROR = "100"
CODE_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_VERSION: "Unsupported version id",
    UNKNOWN_KEY: "Unknown key identifier",
    INTERNAL_ERROR: "Application internal error",
}


# HL7 v2 DTM/TS: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ] (the library is more lenient).
_DTM = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?$")


@dataclass
class HL7Error(Exception):
    """What is wrong with a message, where: answered as MSA-1 `ack` (AE: the content; AR: the
    message as a whole) with an ERR segment naming segment, its sequence and the field."""

    ack: str
    segment: str
    field: int
    code: str
    text: str
    sequence: int = 1

    def __str__(self) -> str:
        return f"{self.segment}-{self.field}: {self.text}"


_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def escape(text: str) -> str:
    """Text for a field of a message with the default delimiters (HL7 v2 2.7.4): the delimiters
    escaped, line breaks as spaces, every other character as it is. The library's own escape
    writes non-ASCII characters as one-byte \\X..\\ hex, which mangles Chinese in UTF-8 messages."""
    flat = " ".join(text.splitlines())
    return "".join(_ESCAPES.get(c, c) for c in flat)


def parse(text: str) -> hl7.Message:
    """The message, or HL7Error (AR at MSH) for text the library cannot read as HL7 v2."""
    text = text.strip("\r\n").replace("\r\n", "\r").replace("\n", "\r")
    if not text.startswith("MSH"):
        raise HL7Error("AR", "MSH", 1, SEGMENT_SEQUENCE_ERROR, "The message does not start with an MSH segment.")
    try:
        return hl7.parse(text)
    except (hl7.HL7Exception, IndexError, ValueError) as exc:
        raise HL7Error("AR", "MSH", 1, DATA_TYPE_ERROR, f"The message cannot be parsed: {exc}") from None


def value(message: hl7.Message, segment: str, field: int, component: int = 1, *, sequence: int = 1) -> str:
    """A component of a field as text ("" when the segment, field or component is absent), unescaped."""
    try:
        found = message.extract_field(segment, sequence, field, 1, component)
    except (KeyError, IndexError):
        return ""
    return message.unescape(str(found)).strip() if found else ""


def has_segment(message: hl7.Message, segment: str) -> bool:
    try:
        message.segments(segment)
    except KeyError:
        return False
    return True


def hl7_datetime(text: str, segment: str, field: int, *, sequence: int = 1) -> datetime | None:
    """A TS/DTM value as an aware datetime (the server's time zone when it names none)."""
    if not text:
        return None
    try:
        if not _DTM.match(text):
            raise ValueError(text)
        moment = hl7.parse_datetime(text)
    except ValueError:
        raise HL7Error("AE", segment, field, DATA_TYPE_ERROR, f"Not a date/time: {text}", sequence) from None
    if moment.tzinfo is None:
        return timezone.make_aware(moment)
    return moment.astimezone(timezone.get_current_timezone())


def ack(message: hl7.Message | None, code: str, error: HL7Error | None = None) -> str:
    """The ACK of `message` (the library's create_ack), with MSA-3 and ERR when it is refused."""
    control_id = hl7.generate_message_control_id()
    if message is None:
        stamp = timezone.now().strftime("%Y%m%d%H%M%S")
        reply = hl7.parse(f"MSH|^~\\&|{settings.HL7_APPLICATION}||||{stamp}||ACK|{control_id}|P|2.5\rMSA|{code}|")
    else:
        reply = message.create_ack(code, message_id=control_id, application=settings.HL7_APPLICATION)
    text = str(reply).rstrip("\r")
    if error is None:
        return text + "\r"
    escaped = escape(error.text[:200])
    location = f"{error.segment}^{error.sequence}^{error.field}"
    label = CODE_TEXT.get(error.code, "")
    err = f"ERR|{location}^{error.code}&{label}&HL70357|{location}|{error.code}^{label}^HL70357|E||||{escaped}"
    segments = text.split("\r")
    segments[1] += f"|{escaped}"  # MSA-3, text message
    return "\r".join([*segments, err]) + "\r"


def ack_code(text: str) -> tuple[str, str]:
    """MSA-1 and MSA-3 of an answer received (("", reason) when it is no ACK)."""
    try:
        reply = parse(text)
    except HL7Error as exc:
        return "", exc.text
    if not has_segment(reply, "MSA"):
        return "", "The answer has no MSA segment."
    return value(reply, "MSA", 1), value(reply, "MSA", 3)

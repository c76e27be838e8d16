"""Media types of PS3.18 and the Accept header negotiation DICOMweb needs.

DRF's negotiation compares parameters literally and answers 406 to the forms PS3.18 uses
(`multipart/related; type="application/dicom"; transfer-syntax=*`); each DICOMweb view
instead offers its representations here and `choose` picks one (PS3.18 8.7.3, 8.7.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.uid import ExplicitVRLittleEndian

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
JPEG = "image/jpeg"
PNG = "image/png"
ANY_TRANSFER_SYNTAX = "*"
DEFAULT_TRANSFER_SYNTAX = ExplicitVRLittleEndian  # PS3.18 8.7.3.5.2: the default for application/dicom

# PS3.18 Table 8.7.3-2: the media type of a compressed frame, by its transfer syntax.
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
FRAME_MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


class NotAcceptable(Exception):
    """None of the representations the client accepts can be produced (406)."""


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header (or a Content-Type): type, parameters, quality."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def part_type(self) -> str:
        """For multipart/related, the media type of its parts (the `type` parameter)."""
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def covers(self, media_type: str) -> bool:
        if self.type in ("*/*", media_type):
            return True
        major, _, minor = self.type.partition("/")
        return minor == "*" and media_type.startswith(major + "/")


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def parse_media_range(text: str) -> MediaRange:
    """One media range; an empty text (no Content-Type at all) is the empty type."""
    head, *raw_params = _split_outside_quotes(text, ";") or [""]
    params: dict[str, str] = {}
    for raw in raw_params:
        name, _, value = raw.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    q = params.pop("q", "1")
    try:
        quality = float(q)
    except ValueError:
        quality = 0.0
    return MediaRange(head.strip().lower(), params, quality)


def parse_accept(header: str) -> list[MediaRange]:
    """The Accept header's ranges, best first; an absent header accepts anything."""
    ranges = [parse_media_range(item) for item in _split_outside_quotes(header or "*/*", ",")]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def accept_of(meta: dict[str, str], query_accept: Iterable[str]) -> list[MediaRange]:
    """PS3.18 8.3.3.1: an `accept` query parameter replaces the Accept header."""
    from_query = ",".join(query_accept)
    return parse_accept(from_query or meta.get("HTTP_ACCEPT", ""))


def choose(accepted: list[MediaRange], offers: list[str]) -> tuple[str, MediaRange]:
    """The first offer (in the client's order of preference) and the range that accepted it."""
    for media_range in accepted:
        for offer in offers:
            if media_range.covers(offer):
                return offer, media_range
    raise NotAcceptable(f"None of the accepted media types can be produced; this resource offers {', '.join(offers)}.")


def multipart_ranges(accepted: list[MediaRange], part_types: set[str]) -> list[tuple[str, MediaRange]]:
    """The acceptable (part type, range) pairs for a multipart/related resource, best first.

    `*/*` and `multipart/related` without a type accept the resource's first part type.
    """
    pairs: list[tuple[str, MediaRange]] = []
    for media_range in accepted:
        if media_range.type not in ("*/*", "multipart/*", MULTIPART_RELATED):
            continue
        wanted = FRAME_MEDIA_ALIASES.get(media_range.part_type, media_range.part_type)
        if not wanted or wanted == "*/*":
            pairs.extend((t, media_range) for t in sorted(part_types))
        elif wanted in part_types or (wanted.endswith("/*") and _family_in(wanted, part_types)):
            pairs.extend((t, media_range) for t in sorted(part_types) if MediaRange(wanted).covers(t))
    return pairs


def _family_in(wanted: str, part_types: set[str]) -> bool:
    return any(MediaRange(wanted).covers(t) for t in part_types)


def multipart_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value + f"; boundary={boundary}"

"""One renderer per media type that DICOMweb answers with (PS3.18 8.7).

Content-Type values are written exactly as PS3.18 writes them: `application/dicom+json`
has no charset parameter (dicomweb-client ignores a STOW response that carries one).
Large bodies are streamed: the multipart renderers and the metadata renderer take
iterables and return a StreamingHttpResponse, so a study is never held in memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import orjson
from django.http import HttpResponse, StreamingHttpResponse
from pydicom.datadict import keyword_for_tag
from rest_framework.renderers import BaseRenderer, JSONRenderer

from imaging.dicomweb import media
from imaging.dicomweb.multipart import OutPart, body_length, new_boundary, write_parts


def _plain(value: Any) -> Any:
    """pydicom's number and text subclasses (DSfloat, IS, PersonName) as plain JSON values."""
    for kind in (float, int, str):
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_plain)


class DicomJsonRenderer(BaseRenderer):
    """application/dicom+json (PS3.18 F.2): QIDO-RS results, metadata, STOW-RS responses."""

    media_type = media.DICOM_JSON
    format = "dicomjson"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b"" if data is None else _dumps(data)

    def stream(self, first: bytes, rest: Iterable[bytes]) -> StreamingHttpResponse:
        """A JSON array of documents already written, one at a time (WADO-RS metadata of a
        large study): each is whole before its first byte is sent, so none can break the
        array off, and the first is at hand before the 200 is."""
        return StreamingHttpResponse(_json_array(first, rest), content_type=self.media_type)


def _json_array(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield b"[" + first
    for document in rest:
        yield b"," + document
    yield b"]"


NATIVE_DICOM_NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"


class DicomXmlRenderer(BaseRenderer):
    """application/dicom+xml (PS3.19 A.1, the Native DICOM Model) of a data set given as
    DICOM JSON: the STOW-RS response. Values are written as text; person names and bulk
    data, which a STOW-RS response never holds, are not supported."""

    media_type = media.DICOM_XML
    format = "dicomxml"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        root = Element("NativeDicomModel", {"xmlns": NATIVE_DICOM_NAMESPACE, _XML_SPACE: "preserve"})
        _xml_attributes(root, data or {})
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root, encoding="utf-8", xml_declaration=False)


def _xml_attributes(parent: Element, dataset: dict[str, Any]) -> None:
    for tag in sorted(dataset):
        element = dataset[tag]
        attributes = {"tag": tag, "vr": element["vr"]}
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attributes["keyword"] = keyword
        node = SubElement(parent, "DicomAttribute", attributes)
        for number, value in enumerate(element.get("Value", []), start=1):
            if element["vr"] == "SQ":
                _xml_attributes(SubElement(node, "Item", {"number": str(number)}), value)
            else:
                SubElement(node, "Value", {"number": str(number)}).text = str(value)


# The representations of a STOW-RS response (PS3.18 10.5.3), in the order offered.
STORE_RESPONSE_RENDERERS: dict[str, BaseRenderer] = {
    media.DICOM_JSON: DicomJsonRenderer(),
    media.DICOM_XML: DicomXmlRenderer(),
    media.JSON: DicomJsonRenderer(),
}


class ErrorJsonRenderer(JSONRenderer):
    """application/json for error bodies ({"error": {"code", "message"}}), whatever was asked."""

    media_type = media.JSON
    format = "json"


class ImageRenderer:
    """A single rendered image (PS3.18 8.7.4): image/jpeg or image/png."""

    media_type = ""

    def response(self, data: bytes) -> HttpResponse:
        return HttpResponse(data, content_type=self.media_type)


class JpegRenderer(ImageRenderer):
    media_type = media.JPEG


class PngRenderer(ImageRenderer):
    media_type = media.PNG


IMAGE_RENDERERS: dict[str, ImageRenderer] = {media.JPEG: JpegRenderer(), media.PNG: PngRenderer()}


class MultipartRenderer:
    """multipart/related with parts of one media type (PS3.18 8.7.3.1), streamed."""

    part_type = ""

    def response(
        self,
        parts: Sequence[OutPart],
        transfer_syntax: str | None = None,
        on_error: Callable[[OutPart, Exception], None] | None = None,
    ) -> StreamingHttpResponse:
        """Streamed; with a Content-Length when every part's size is known (no chunked framing).
        With `on_error`, a part whose payload cannot be opened is left out (see write_parts)."""
        boundary = new_boundary()
        content_type = media.multipart_content_type(self.part_type, boundary, transfer_syntax)
        response = StreamingHttpResponse(write_parts(parts, boundary, on_error=on_error), content_type=content_type)
        length = body_length(parts, boundary)
        if length is not None:
            response["Content-Length"] = str(length)
        return response

    def gzipped(self, parts: Sequence[OutPart], transfer_syntax: str | None = None) -> HttpResponse:
        """The body gzipped (Content-Encoding: gzip), for parts held in memory that shrink:
        uncompressed pixel data, about half the bytes on a slow line. Level 1, which costs
        the server a few milliseconds per 512x512 16-bit frame; the client gets the exact
        bytes back."""
        boundary = new_boundary()
        content_type = media.multipart_content_type(self.part_type, boundary, transfer_syntax)
        body = gzip.compress(b"".join(write_parts(parts, boundary)), compresslevel=1, mtime=0)
        response = HttpResponse(body, content_type=content_type)
        response["Content-Encoding"] = "gzip"
        return response


class MultipartDicomRenderer(MultipartRenderer):
    """multipart/related; type="application/dicom": study, series and instance retrieval."""

    part_type = media.DICOM


class MultipartOctetStreamRenderer(MultipartRenderer):
    """multipart/related; type="application/octet-stream": uncompressed frames and bulk data."""

    part_type = media.OCTET_STREAM


class MultipartCompressedFrameRenderer(MultipartRenderer):
    """multipart/related; type="image/jpeg" (jls, jp2, jpx, dicom-rle): frames as stored."""

    def __init__(self, part_type: str) -> None:
        self.part_type = part_type

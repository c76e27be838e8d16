"""The one request media type DICOMweb reads: multipart/related; type="application/dicom" (STOW-RS).

The body is read from the raw WSGI input when it is chunked: Django sees no
Content-Length then and would hand the view an empty body (dicomweb-client sends every
body over 1 MB chunked). Parts are spooled to disk as they arrive, never held whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.http import HttpRequest
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import BaseParser

from imaging.dicomweb import media
from imaging.dicomweb.multipart import MultipartError, Part, Readable, boundary_of, read_parts


def body_stream(request: HttpRequest) -> Readable:
    """The request body as a stream, including a chunked one (Transfer-Encoding: chunked).

    A WSGI server that accepts chunked bodies (gunicorn) de-chunks wsgi.input and leaves
    CONTENT_LENGTH unset; Django's own stream would then end at once.
    """
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return request.META["wsgi.input"]
    return request


class MultipartRelatedDicomParser(BaseParser):
    """multipart/related; type="application/dicom" -> the parts, spooled to files."""

    media_type = media.MULTIPART_RELATED

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> list[Part]:
        content_type = media.parse_media_range(media_type or "")
        if content_type.type != media.MULTIPART_RELATED or content_type.part_type not in ("", media.DICOM):
            raise UnsupportedMediaType(
                media_type or "",
                detail='STOW-RS accepts multipart/related; type="application/dicom" only.',
            )
        context = parser_context or {}
        spool_dir: Path = context["spool_dir"]
        try:
            return read_parts(
                stream,
                boundary_of(content_type.params),
                spool_dir,
                max_part_bytes=context["max_part_bytes"],
                max_body_bytes=context.get("max_body_bytes"),
            )
        except MultipartError as exc:
            raise ParseError(f"Malformed multipart/related body: {exc}") from None

"""WADO-RS (PS3.18 10.4): instances, metadata, bulk data, frames, rendered images, thumbnails.

Study, series and instance retrieval streams each stored file from storage in chunks
(multipart/related; type="application/dicom"); nothing larger than one instance is held
in memory, and only when it must be transcoded. Access: imaging.access.get_study_for,
which answers the same 404 for a study that is missing and one the caller may not see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from io import BytesIO
from typing import IO, Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.cache import patch_vary_headers
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from rest_framework.request import Request

from alliance.access import principal_of
from alliance.middleware import cache_privately
from imaging import access, render
from imaging.dicom import part10
from imaging.dicomweb import dicomjson, media, transfer
from imaging.dicomweb.dicomjson import BULK_VRS
from imaging.dicomweb.multipart import OutPart
from imaging.dicomweb.renderers import (
    IMAGE_RENDERERS,
    DicomJsonRenderer,
    MultipartCompressedFrameRenderer,
    MultipartDicomRenderer,
    MultipartOctetStreamRenderer,
)
from imaging.dicomweb.views import BadRequest, DicomWebNotAcceptable, DicomWebView, audit_unservable, base_url
from imaging.models import Instance, Study
from imaging.storage import local_path, open_instance, temp_dir

log = logging.getLogger(__name__)

# Pixel data (frames, rendered images, thumbnails) may stay in the asker's browser this long;
# everything else is answered no-store (alliance.middleware.NoStoreMiddleware).
PIXEL_CACHE_SECONDS = 3600


class _InstancesView(DicomWebView):
    """Resolves the path to the caller's visible study and the instances it names."""

    def instances(
        self, request: Request, study: str, series: str = "", instance: str = ""
    ) -> tuple[Study, list[Instance]]:
        visible = access.get_study_for(principal_of(request), study)
        rows: QuerySet[Instance] = Instance.objects.filter(series__study=visible).select_related("series")
        if series:
            rows = rows.filter(series__series_uid=series)
        if instance:
            rows = rows.filter(sop_uid=instance)
        found = list(rows.order_by("series__series_number", "series_id", "instance_number", "pk"))
        if not found:
            raise Http404("No such series or instance.")
        return visible, found

    def instance_url(self, study: Study, instance: Instance) -> str:
        return (
            f"{base_url(self.request)}/studies/{study.study_uid}"
            f"/series/{instance.series.series_uid}/instances/{instance.sop_uid}"
        )

    def read(self, request: Request, study: Study, instance: Instance, via: str) -> Dataset:
        """The whole stored data set; 404 (audited) when its file is missing or unreadable."""
        try:
            return _read(instance)
        except Exception as exc:  # noqa: BLE001 - a file gone, beyond the inflate limits, or bytes pydicom cannot read
            audit_unservable(request, study, instance, via=via, error=exc)
            raise Http404("The stored file of this instance cannot be read.") from None

    def present(self, request: Request, study: Study, found: list[Instance], via: str) -> list[tuple[Instance, int]]:
        """The instances whose stored files exist on a local store, with their sizes, checked
        before an answer starts (one stat each); the others are left out, audited. 404 if none.
        Another store's files are checked as they are opened (the answer has no length then)."""
        present: list[tuple[Instance, int]] = []
        for instance in found:
            path = local_path(instance)
            try:
                present.append((instance, path.stat().st_size if path is not None else -1))
            except OSError as exc:
                audit_unservable(request, study, instance, via=via, error=exc)
        if not present:
            raise Http404("The stored files of these instances cannot be read.")
        return present

    def skipped(self, request: Request, study: Study, via: str) -> Any:
        """on_error for a streamed answer: a part whose file cannot be opened is left out, audited."""
        return lambda part, exc: audit_unservable(request, study, part.label, via=via, error=exc)


# --- instances ----------------------------------------------------------------------------


class RetrieveInstances(_InstancesView):
    """GET /studies/{s}[/series/{se}[/instances/{i}]]: multipart/related; type="application/dicom"."""

    def get(self, request: Request, study: str, series: str = "", instance: str = "") -> StreamingHttpResponse:
        pairs = media.multipart_ranges(self.accepted(request), {media.DICOM})
        if not pairs:
            raise DicomWebNotAcceptable('This resource is multipart/related; type="application/dicom".')
        visible, found = self.instances(request, study, series, instance)
        target = self._target(pairs, {i.transfer_syntax_uid for i in found})
        present = self.present(request, visible, found, "dicomweb.retrieve")
        self.audit(request, "dicomweb.retrieve", [visible], instances=len(present), transfer_syntax=target or "stored")
        parts = [
            OutPart(media.DICOM, opener=self._opener(i, target), size=self._size(size, target), label=i)
            for i, size in present
        ]
        on_error = self.skipped(request, visible, "dicomweb.retrieve")
        return MultipartDicomRenderer().response(parts, transfer_syntax=target or _single(found), on_error=on_error)

    def _target(self, pairs: list[tuple[str, media.MediaRange]], stored: set[str]) -> str | None:
        reasons = []
        for _part_type, media_range in pairs:
            try:
                return transfer.target_syntax(media_range.transfer_syntax, stored)
            except transfer.Untranscodable as exc:
                reasons.append(str(exc))
        raise DicomWebNotAcceptable(" ".join(reasons))

    def _size(self, size: int, target: str | None) -> int | None:
        return size if target is None and size >= 0 else None

    def _opener(self, instance: Instance, target: str | None) -> Any:
        if target is None:
            return partial(open_instance, instance)
        return lambda: BytesIO(transfer.to_explicit_little_endian(open_instance(instance)))


def _single(instances: list[Instance]) -> str | None:
    syntaxes = {i.transfer_syntax_uid for i in instances}
    return syntaxes.pop() if len(syntaxes) == 1 else None


# --- metadata and bulk data ---------------------------------------------------------------


class RetrieveMetadata(_InstancesView):
    """GET .../metadata: application/dicom+json, large binary values as BulkDataURI.

    Each instance's document is read and written whole before any of it is sent; one whose
    file is missing or unreadable is left out (audited), never breaking the array off.
    """

    def get(self, request: Request, study: str, series: str = "", instance: str = "") -> StreamingHttpResponse:
        self.choose(request, [media.DICOM_JSON, media.JSON])
        visible, found = self.instances(request, study, series, instance)
        documents = self._documents(request, visible, found)
        first = next(documents, None)
        if first is None:
            raise Http404("The stored files of these instances cannot be read.")
        self.audit(request, "dicomweb.metadata", [visible], instances=len(found))
        return DicomJsonRenderer().stream(first, documents)

    def _documents(self, request: Request, study: Study, found: list[Instance]) -> Iterator[bytes]:
        for instance in found:
            try:
                document = dicomjson.dumps(_metadata(instance, self.instance_url(study, instance)))
            except Exception as exc:  # noqa: BLE001 - a file gone, or bytes pydicom cannot read
                audit_unservable(request, study, instance, via="dicomweb.metadata", error=exc)
                continue
            yield document


def _metadata(instance: Instance, instance_url: str) -> dict[str, Any]:
    ds = _read(instance, stop_before_pixels=True)
    return dicomjson.dataset_json(ds, instance_url, has_pixels=instance.rows is not None)


def instance_metadata(instance: Instance) -> dict[str, Any] | None:
    """One instance's DICOM JSON as .../metadata answers it, for a page that embeds it
    (the viewer's first slice); None when its file cannot be read (logged: the page does
    without it). The caller has checked access to the study."""
    series = instance.series
    url = f"{base_url()}/studies/{series.study.study_uid}/series/{series.series_uid}/instances/{instance.sop_uid}"
    try:
        return _metadata(instance, url)
    except Exception as exc:  # noqa: BLE001 - a file gone, or bytes pydicom cannot read
        log.warning("no metadata for %s to embed: %s: %s", instance.sop_uid, type(exc).__name__, exc)
        return None


class RetrieveBulkData(_InstancesView):
    """GET .../instances/{i}/bulk/{tag}: one top-level value as application/octet-stream."""

    def get(self, request: Request, study: str, series: str, instance: str, tag: str) -> StreamingHttpResponse:
        if not media.multipart_ranges(self.accepted(request), {media.OCTET_STREAM}):
            raise DicomWebNotAcceptable('Bulk data is multipart/related; type="application/octet-stream".')
        try:
            number = int(tag, 16)
        except ValueError:
            raise BadRequest(f"{tag!r} is not a tag (8 hexadecimal digits).") from None
        visible, found = self.instances(request, study, series, instance)
        ds = self.read(request, visible, found[0], "dicomweb.bulkdata")
        if number not in ds or ds[number].VR not in BULK_VRS or ds[number].is_empty:
            raise Http404("The instance has no bulk data at that tag.")
        self.audit(request, "dicomweb.bulkdata", [visible], instance=instance, tag=tag)
        return MultipartOctetStreamRenderer().response([OutPart(media.OCTET_STREAM, data=ds[number].value)])


def _read(instance: Instance, *, stop_before_pixels: bool = False) -> Dataset:
    """The stored file as pydicom reads it; a deflated one inflated within the store's limits
    into a temporary file first (part10.readable), never whole in memory."""
    limits = part10.InflateLimits.of(settings)
    with open_instance(instance) as handle, part10.readable(handle, limits, temp_dir()) as source:
        return dcmread(source, stop_before_pixels=stop_before_pixels)


# --- frames ---------------------------------------------------------------------------


def accepts_gzip(request: Request) -> bool:
    """Accept-Encoding names gzip (as Django's GZipMiddleware reads it, without q-values)."""
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


def frame_numbers(raw: str, available: int) -> list[int]:
    try:
        numbers = [int(n) for n in raw.split(",")]
    except ValueError:
        raise BadRequest(f"Frame list {raw!r} is not a comma-separated list of frame numbers.") from None
    if any(n < 1 for n in numbers):
        raise BadRequest("Frame numbers start at 1.")
    if any(n > available for n in numbers):
        raise Http404(f"The instance has {available} frame(s).")
    return numbers


class RetrieveFrames(_InstancesView):
    """GET .../frames/{list}: uncompressed (application/octet-stream) or as stored (image/jpeg ...)."""

    def get(self, request: Request, study: str, series: str, instance: str, frames: str) -> HttpResponseBase:
        visible, found = self.instances(request, study, series, instance)
        stored = found[0].transfer_syntax_uid
        if UID(stored).is_deflated:  # PS3.5 A.5 deflates the whole data set: its frames are native pixels
            stored = transfer.ExplicitVRLittleEndian
        compressed_type = media.FRAME_MEDIA_TYPES.get(stored)
        offers = {media.OCTET_STREAM} | ({compressed_type} if compressed_type else set())
        part_type, wants_stored = self._negotiate(request, offers, compressed_type, stored)
        numbers = frame_numbers(frames, found[0].number_of_frames)
        ds = self.read(request, visible, found[0], "dicomweb.frames")
        if not ds.get("PixelData"):
            raise Http404("The instance has no pixel data.")
        data = self._frames(request, visible, found[0], ds, numbers, wants_stored)
        self.audit(request, "dicomweb.frames", [visible], instance=instance, frames=numbers)
        if part_type == media.OCTET_STREAM:
            syntax = stored if wants_stored else transfer.ExplicitVRLittleEndian
            # Each part names its transfer syntax too: a client reads a part on its own
            # (PS3.18 8.7.3.5), and compressed bytes taken for native pixels are garbage.
            part_header = f"{media.OCTET_STREAM}; transfer-syntax={syntax}"
            parts = [OutPart(part_header, data=frame) for frame in data]
            renderer = MultipartOctetStreamRenderer()
            native = not UID(syntax).is_compressed
            response = (
                renderer.gzipped(parts, syntax)
                if native and accepts_gzip(request)
                else renderer.response(parts, syntax)
            )
            patch_vary_headers(response, ["Accept-Encoding"])
            return cache_privately(response, PIXEL_CACHE_SECONDS)
        parts = [OutPart(part_type, data=frame) for frame in data]
        response = MultipartCompressedFrameRenderer(part_type).response(parts, transfer_syntax=stored)
        return cache_privately(response, PIXEL_CACHE_SECONDS)

    def _frames(
        self, request: Request, study: Study, instance: Instance, ds: Dataset, numbers: list[int], as_stored: bool
    ) -> list[bytes]:
        """The frames' bytes; 404 (audited) when the pixel data cannot be cut or decoded
        (a declared compressed syntax over native data, a codec that refuses the data...)."""
        try:
            return transfer.stored_frames(ds, numbers) if as_stored else transfer.decoded_frames(ds, numbers)
        except Exception as exc:  # noqa: BLE001 - pydicom and its codec plugins raise many kinds
            audit_unservable(request, study, instance, via="dicomweb.frames", error=exc)
            raise Http404("The frames of this instance cannot be decoded.") from None

    def _negotiate(
        self, request: Request, offers: set[str], compressed_type: str | None, stored: str
    ) -> tuple[str, bool]:
        """(part media type, whether frames go as stored)."""
        for part_type, media_range in media.multipart_ranges(self.accepted(request), offers):
            syntax = media_range.transfer_syntax
            if part_type == compressed_type and syntax in (None, media.ANY_TRANSFER_SYNTAX, stored):
                return part_type, True
            if part_type == media.OCTET_STREAM and syntax in (None, transfer.ExplicitVRLittleEndian):
                return part_type, not UID(stored).is_compressed
            if part_type == media.OCTET_STREAM and syntax in (media.ANY_TRANSFER_SYNTAX, stored):
                return part_type, True
        raise DicomWebNotAcceptable(f"Frames of this instance are offered as {', '.join(sorted(offers))}.")


# --- rendered and thumbnails ----------------------------------------------------------------


def _window(raw: str | None) -> tuple[float, float] | None:
    if not raw:
        return None
    parts = raw.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise BadRequest("window is center,width[,function], e.g. window=40,400.") from None
    if width <= 0 or (len(parts) > 2 and parts[2].lower() not in ("linear", "")):
        raise BadRequest("window width must be positive and the function linear.")
    return center, width


def _viewport(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    try:
        width, height = (int(v) for v in raw.split(",")[:2])
    except ValueError:
        raise BadRequest("viewport is width,height in pixels, e.g. viewport=512,512.") from None
    if not (0 < width <= 4096 and 0 < height <= 4096):
        raise BadRequest("viewport width and height must be between 1 and 4096.")
    return width, height


def _quality(raw: str | None) -> int:
    if raw is None:
        return 90
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequest("quality is an integer from 1 to 100.")
    return int(raw)


class RetrieveRendered(_InstancesView):
    """GET .../instances/{i}/rendered and .../frames/{n}/rendered: image/jpeg or image/png."""

    def get(self, request: Request, study: str, series: str, instance: str, frames: str = "1") -> HttpResponse:
        chosen, _ = self.choose(request, [media.JPEG, media.PNG])
        params = request.query_params
        window, size, quality = (
            _window(params.get("window")),
            _viewport(params.get("viewport")),
            _quality(params.get("quality")),
        )
        visible, found = self.instances(request, study, series, instance)
        number = frame_numbers(frames, found[0].number_of_frames)
        if len(number) != 1:
            raise BadRequest("Rendered frames are retrieved one at a time.")
        try:
            handle = open_instance(found[0])
        except OSError as exc:
            audit_unservable(request, visible, found[0], via="dicomweb.rendered", error=exc)
            raise Http404("The stored file of this instance cannot be read.") from None
        with handle:
            image = _render_or_404(handle, number[0] - 1, window, size, chosen, quality)
        self.audit(request, "dicomweb.rendered", [visible], instance=instance, frame=number[0])
        return cache_privately(IMAGE_RENDERERS[chosen].response(image), PIXEL_CACHE_SECONDS)


def _render_or_404(
    handle: IO[bytes], frame: int, window: tuple[float, float] | None, size: Any, chosen: str, quality: int
) -> bytes:
    fmt = "png" if chosen == media.PNG else "jpeg"
    try:
        return render.render_frame(handle, frame=frame, window=window, size=size, fmt=fmt, quality=quality)
    except render.RenderError as exc:
        raise Http404(f"This instance has no image to render: {exc}") from None


class RetrieveThumbnail(_InstancesView):
    """GET .../thumbnail of a study, series or instance: a representative image, image/jpeg."""

    def get(self, request: Request, study: str, series: str = "", instance: str = "") -> HttpResponse:
        self.choose(request, [media.JPEG])
        visible, found = self.instances(request, study, series, instance)
        images = [i for i in found if i.rows]
        if not images:
            raise Http404("Nothing here has an image.")
        first_series = [i for i in images if i.series_id == images[0].series_id]
        chosen = first_series[len(first_series) // 2]
        try:
            data = render.thumbnail(chosen)
        except render.RenderError as exc:
            raise Http404(f"No thumbnail could be made: {exc}") from None
        except OSError as exc:
            audit_unservable(request, visible, chosen, via="dicomweb.thumbnail", error=exc)
            raise Http404("The stored file of this instance cannot be read.") from None
        self.audit(request, "dicomweb.thumbnail", [visible], instance=chosen.sop_uid)
        return cache_privately(IMAGE_RENDERERS[media.JPEG].response(data), PIXEL_CACHE_SECONDS)

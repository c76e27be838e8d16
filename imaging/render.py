"""Render one frame of a stored instance to JPEG or PNG (thumbnails, previews, viewer frames).

Grayscale: Modality LUT (PS3.3 C.11.1: rescale slope/intercept or LUT), then the VOI
(C.11.2: the window asked for, else the object's window or VOI LUT, else a window over
the 0.5-99.5 percentiles), then MONOCHROME1 and Presentation LUT Shape inversion.
Colour: RGB and YBR (converted by pydicom), palette colour through its LUTs.

A deflated data set (PS3.5 A.5) is inflated into a temporary file within the store's
limits (part10.readable), never whole in memory; past them the file is not rendered.
Compressed syntaxes are decoded by pydicom's pixel-data plugins, whichever is installed:
pylibjpeg with its OpenJPEG and RLE plugins, pyjpegls, python-gdcm and Pillow. The GPL
pylibjpeg-libjpeg is deliberately not among them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import numpy as np
from django.conf import settings
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from imaging import storage
from imaging.dicom import part10

if TYPE_CHECKING:
    from imaging.models import Instance

log = logging.getLogger(__name__)

THUMBNAIL_PX = 128
PREVIEW_PX = 512
# A frame this large (whole-slide tiles aside, no modality makes one) is refused before
# decoding, so that a hostile header cannot make a worker allocate gigabytes.
MAX_FRAME_PIXELS = 64 * 1024 * 1024
_FORMATS = {"jpeg": "JPEG", "png": "PNG"}


class RenderError(Exception):
    """The object has no frame we can show (no pixel data, unknown codec, bad frame index)."""


def render_frame(
    source: str | Path | IO[bytes],
    *,
    frame: int = 0,
    window: tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    fmt: str = "jpeg",
    quality: int = 85,
) -> bytes:
    """One frame as image bytes; `window` is (center, width); `size` a (w, h) box to fit in."""
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {sorted(_FORMATS)}")
    ds, arr = _decode(source, frame)
    try:
        return _encode(Image.fromarray(_to_8bit(arr, ds, frame, window)), size, fmt, quality)
    except Exception as exc:  # a decoded frame that fits no image (odd shape, type or LUT): nothing to show
        raise RenderError(f"cannot render frame {frame}: {_first_line(exc)}") from None


def _encode(image: Image.Image, size: tuple[int, int] | None, fmt: str, quality: int) -> bytes:
    if size is not None:
        image.thumbnail((max(1, size[0]), max(1, size[1])), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=max(1, min(quality, 95)), optimize=True)
    else:
        image.save(out, "PNG", optimize=False)
    return out.getvalue()


def thumbnail(instance: Instance) -> bytes:
    return _cached_render(instance, THUMBNAIL_PX)


def preview(instance: Instance) -> bytes:
    return _cached_render(instance, PREVIEW_PX)


def cache_key(instance: Instance, px: int) -> str:
    return f"thumbs/{instance.sop_uid[-2:]}/{instance.sop_uid}-{px}.jpg"


def _cached_render(instance: Instance, px: int) -> bytes:
    """From the render cache (storage.render_cache: the bucket on S3, shared by every node), or
    rendered now and kept there."""
    key = cache_key(instance, px)
    cached = storage.cached_render(key)
    if cached is not None:
        return cached
    with storage.open_instance(instance) as fh:
        data = render_frame(fh, frame=instance.number_of_frames // 2, size=(px, px), quality=80)
    storage.cache_render(key, data)
    return data


# --- decoding -------------------------------------------------------------------------


def _decode(source: str | Path | IO[bytes], frame: int) -> tuple[Dataset, np.ndarray]:
    """The header (every element before the pixel data) and the one decoded frame."""
    try:
        with _opened(source) as fh, part10.readable(fh, part10.InflateLimits.of(settings), storage.temp_dir()) as src:
            header = dcmread(src, stop_before_pixels=True)
            if frame < 0 or frame >= max(_int(header.get("NumberOfFrames")) or 1, 1):
                raise RenderError(f"frame {frame} is out of range")
            pixels = (_int(header.get("Rows")) or 0) * (_int(header.get("Columns")) or 0)
            if pixels > MAX_FRAME_PIXELS:
                raise RenderError(f"a frame of {pixels} pixels is more than the {MAX_FRAME_PIXELS} we decode")
            src.seek(0)
            arr = pixel_array(src, index=frame)
    except RenderError:
        raise
    except part10.InvalidFile as exc:  # a deflate bomb (stored before the limits, or under higher ones)
        log.warning("not rendering a file: %s", exc)
        raise RenderError(f"cannot decode frame {frame}: {exc.reason}") from None
    except Exception as exc:  # pydicom and its plugins raise many kinds; all mean "cannot show this"
        raise RenderError(f"cannot decode frame {frame}: {_first_line(exc)}") from None
    return header, arr


@contextmanager
def _opened(source: str | Path | IO[bytes]) -> Iterator[BinaryIO]:
    """The source as a binary file: a path is opened (and closed after), a file is used as is."""
    if isinstance(source, str | Path):
        with open(source, "rb") as fh:
            yield fh
        return
    yield cast(BinaryIO, source)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _to_8bit(arr: np.ndarray, ds: Dataset, frame: int, window: tuple[float, float] | None) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        return _scale_color(apply_color_lut(arr, ds))
    if arr.ndim == 3:
        return _scale_color(arr)
    values = _grayscale(arr, _frame_view(ds, frame), window)
    inverse = (photometric == "MONOCHROME1") != (str(ds.get("PresentationLUTShape", "")).strip() == "INVERSE")
    return 255 - values if inverse else values


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """A flat dataset with the frame's rescale and window, also for enhanced multi-frame
    objects that keep them in functional groups (PS3.3 C.7.6.16)."""
    flat = Dataset()
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            flat[keyword] = ds[keyword]
    for keyword in ("ModalityLUTSequence", "VOILUTSequence", "VOILUTFunction", "BitsStored", "PixelRepresentation"):
        if keyword in ds:
            flat[keyword] = ds[keyword]
    for group in _functional_groups(ds, frame):
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if sequence in group and len(group[sequence].value):
                for element in group[sequence].value[0]:
                    if element.keyword and element.keyword not in flat:
                        flat[element.keyword] = element
    return flat


def _functional_groups(ds: Dataset, frame: int) -> list[Dataset]:
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared is not None and len(shared):
        groups.append(shared[0])
    return groups


def _grayscale(arr: np.ndarray, ds: Dataset, window: tuple[float, float] | None) -> np.ndarray:
    values = apply_modality_lut(arr, ds).astype(np.float64) if _has_modality(ds) else arr.astype(np.float64)
    if window is not None:
        return _linear_window(values, *window)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        try:
            # A LUT is indexed by integers: round the Modality LUT output.
            mapped = apply_voi_lut(np.rint(values).astype(np.int64), ds, prefer_lut=True).astype(np.float64)
        except (ValueError, AttributeError, IndexError, TypeError):
            log.info("unusable VOI LUT sequence; using a default window")
        else:
            return _stretch(mapped, *_lut_range(ds))
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        return _linear_window(values, center, width)
    low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    return _stretch(values, float(low), float(high))


def _has_modality(ds: Dataset) -> bool:
    return "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds


def _lut_range(ds: Dataset) -> tuple[float, float]:
    data = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    return (float(data.min()), float(data.max())) if data.size else (0.0, 1.0)


def _first_number(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str | bytes | int | float) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1: the linear VOI function."""
    width = max(width, 1.0)
    low = center - 0.5 - (width - 1) / 2
    return _stretch(values, low, low + width - 1)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        high = low + 1
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _scale_color(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    top = float(arr.max()) if arr.size else 0.0
    if top <= 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255).astype(np.uint8)

"""imaging.render and the render task: windows, LUTs, inversion, colour, frames, caching."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imaging import render, tasks
from imaging.ingest import ingest_bytes
from imaging.models import Instance
from imaging.render import RenderError, render_frame
from tests.imaging.dicomgen import make_ct_series, part10_bytes


def _png(ds: Dataset, **kwargs: object) -> np.ndarray:
    data = render_frame(io.BytesIO(part10_bytes(ds)), fmt="png", **kwargs)
    return np.asarray(Image.open(io.BytesIO(data)))


def _ct(rows: int = 64, cols: int = 64) -> Dataset:
    return make_ct_series(1, rows, cols)[0]


# The phantom: air (-1000 HU) in the corner, water (0 HU) in the middle, a bone ring (1000 HU).
AIR, WATER, BONE = (2, 63), (32, 32), (32, 8)


def test_ct_window_from_the_tags_after_rescale():
    image = _png(_ct())  # window 40/400: -160..240 HU

    assert image[AIR] == 0
    assert 90 < image[WATER] < 110
    assert image[BONE] == 255


def test_window_argument_overrides_the_tags():
    image = _png(_ct(), window=(0, 4000))  # -2000..2000 HU

    assert 50 < image[AIR] < 80
    assert 120 < image[WATER] < 135
    assert 180 < image[BONE] < 200


def test_monochrome1_is_inverted():
    ds = _ct()
    ds.PhotometricInterpretation = "MONOCHROME1"

    image = _png(ds)

    assert (image[AIR], image[BONE]) == (255, 0)


def test_voi_lut_sequence_is_applied_when_there_is_no_window():
    ds = _ct()
    del ds.WindowCenter, ds.WindowWidth
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]  # 4096 entries from 0 HU (lower values take the first)
    item.add_new(0x00283006, "US", [4095 - i for i in range(4096)])  # LUT Data: a descending ramp
    ds.VOILUTSequence = Sequence([item])

    image = _png(ds)

    assert image[AIR] == 255  # a default window would have made air black: the LUT was used
    assert 180 < image[BONE] < 205


def test_default_window_spans_the_percentiles_when_the_object_has_none():
    ds = _ct()
    del ds.WindowCenter, ds.WindowWidth

    image = _png(ds)

    assert image.min() == 0 and image.max() == 255


def test_size_fits_the_box_and_keeps_the_aspect():
    data = render_frame(io.BytesIO(part10_bytes(_ct(64, 128))), size=(32, 32))

    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("JPEG", (32, 16))


def test_multi_frame_renders_the_frame_asked_for_and_refuses_others():
    ds = _ct(16, 16)
    frames = np.stack([np.full((16, 16), 24, np.uint16), np.full((16, 16), 2024, np.uint16)])
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()

    assert _png(ds, frame=0, window=(0, 2000))[0, 0] == 0
    assert _png(ds, frame=1, window=(0, 2000))[0, 0] == 255
    with pytest.raises(RenderError):
        _png(ds, frame=2)


def test_rgb_is_kept_in_colour():
    ds = _ct(4, 4)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 0] = 200
    ds.PixelData = pixels.tobytes()

    image = _png(ds)

    assert image.shape == (4, 4, 3)
    assert tuple(image[1, 1]) == (200, 0, 0)


def test_object_without_pixel_data_is_a_render_error():
    ds = _ct()
    del ds.PixelData

    with pytest.raises(RenderError):
        render_frame(io.BytesIO(part10_bytes(ds)))


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="fmt"):
        render_frame(io.BytesIO(part10_bytes(_ct())), fmt="gif")


# --- thumbnails, previews and the task ----------------------------------------------------


def _stored(clinic, actor, ds: Dataset | None = None):  # type: ignore[no-untyped-def]
    return ingest_bytes(part10_bytes(ds or _ct()), institution=clinic, actor=actor, via="test").instance


def test_thumbnail_is_rendered_once_then_served_from_the_cache(clinic, actor, settings, monkeypatch):
    instance = _stored(clinic, actor)
    first = render.thumbnail(instance)

    def no_second_render(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("rendered again")

    monkeypatch.setattr(render, "render_frame", no_second_render)

    assert render.thumbnail(instance) == first
    assert Image.open(io.BytesIO(first)).size == (64, 64)  # never enlarged
    cached = settings.STORAGES["default"]["OPTIONS"]["location"] / render.cache_key(instance, 128)
    assert cached.read_bytes() == first


def test_preview_is_at_most_512_pixels(clinic, actor):
    instance = _stored(clinic, actor, make_ct_series(1, 600, 300)[0])

    assert Image.open(io.BytesIO(render.preview(instance))).size == (256, 512)
    assert Image.open(io.BytesIO(render.thumbnail(instance))).size == (64, 128)


def test_render_task_marks_the_instance_and_is_safe_to_run_twice(clinic, actor):
    instance = _stored(clinic, actor)

    assert tasks.render_instance.apply(args=[instance.pk]).get() is True
    assert tasks.render_instance.apply(args=[instance.pk]).get() is True
    instance.refresh_from_db()
    assert instance.rendered


def test_render_task_marks_objects_without_pixels_unrenderable(clinic, actor):
    ds = _ct()
    del ds.PixelData
    instance = _stored(clinic, actor, ds)

    assert tasks.render_instance.apply(args=[instance.pk]).get() is False
    instance.refresh_from_db()
    assert (instance.rendered, instance.unrenderable) == (False, True)


def test_the_sweep_queues_again_only_renders_still_owed_after_the_retry_age(clinic, actor, settings):
    owed, done, unrenderable = (_stored(clinic, actor) for _ in range(3))
    Instance.objects.filter(pk=done.pk).update(rendered=True)
    # owed: its request was lost (here: on_commit does not run inside the test's transaction)
    Instance.objects.filter(pk=unrenderable.pk).update(rendered=False, unrenderable=True)
    settings.RETRY_AFTER_SECONDS = 3600

    assert tasks.requeue_owed_renders.apply().get() == 0  # stored just now: its request may be queued

    assert tasks.requeue_owed_renders.apply(kwargs={"older_than_seconds": 0}).get() == 1
    owed.refresh_from_db()
    done.refresh_from_db()
    assert owed.rendered and done.rendered


def test_render_task_for_a_deleted_instance_does_nothing(db):
    assert tasks.render_instance.apply(args=[987654]).get() is False


def test_frame_too_large_to_decode_safely_is_refused_before_decoding(monkeypatch):
    ds = _ct(16, 16)
    monkeypatch.setattr(render, "MAX_FRAME_PIXELS", 16 * 16 - 1)

    with pytest.raises(RenderError, match="pixels"):
        render_frame(io.BytesIO(part10_bytes(ds)))

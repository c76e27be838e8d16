"""Files no one here wrote: pydicom's bundled test files and PyPI's pydicom-data.

Every file is either stored byte-identical (with a preamble or file meta put in front
only when it had none) and rendered to a thumbnail, or refused with a reason and
nothing stored. The modalities, encodings and codecs the product promises must render.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from pydicom import uid as pydicom_uid
from pydicom.data.data_manager import DATA_ROOT, external_data_sources

from imaging import render, storage
from imaging.ingest import IngestError, ingest_path
from imaging.models import Instance
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.stored import index_counts, stored_files

pytestmark = pytest.mark.integration

_ROOTS = {
    "pydicom": Path(DATA_ROOT) / "test_files",
    "pydicom-data": Path(external_data_sources()["pydicom-data"].data_path),
}
SAMPLES = {
    f"{source}/{path.relative_to(root)}": path
    for source, root in _ROOTS.items()
    for path in sorted(root.rglob("*"))
    if path.is_file()
}

# What the product promises to show (issue 3): each must be stored and rendered.
MUST_RENDER = {
    "pydicom/CT_small.dcm": "CT",
    "pydicom/MR_small.dcm": "MR",
    "pydicom-data/US1_UNCR.dcm": "US, RGB",
    "pydicom-data/gdcm-US-ALOKA-16.dcm": "US, implicit VR",
    "pydicom-data/SC_rgb.dcm": "RGB",
    "pydicom/examples_ybr_color.dcm": "YBR, JPEG baseline",
    "pydicom/examples_palette.dcm": "palette colour",
    "pydicom-data/OBXXXX1A_2frame.dcm": "multi-frame",
    "pydicom-data/eCT_Supplemental.dcm": "enhanced CT, multi-frame",
    "pydicom-data/liver.dcm": "multi-frame",
    "pydicom/MR_small_bigendian.dcm": "big endian",
    "pydicom-data/SC_rgb_expb_2frame.dcm": "big endian, multi-frame, RGB",
    "pydicom-data/color3d_jpeg_baseline.dcm": "JPEG baseline, multi-frame",
    "pydicom/SC_rgb_small_odd_jpeg.dcm": "JPEG baseline",
    "pydicom-data/JPEG-LL.dcm": "JPEG lossless",
    "pydicom/MR_small_jpeg_ls_lossless.dcm": "JPEG-LS",
    "pydicom/MR_small_jp2klossless.dcm": "JPEG 2000 lossless",
    "pydicom-data/US1_J2KI.dcm": "JPEG 2000",
    "pydicom/MR_small_RLE.dcm": "RLE",
    "pydicom/SC_rgb_rle_2frame.dcm": "RLE, RGB, multi-frame",
    "pydicom-data/mlut_18.dcm": "Modality LUT",
    "pydicom-data/vlut_04.dcm": "VOI LUT",
}
# Files that are broken on purpose, and what we say about them.
MUST_REFUSE = {
    "pydicom/MR_truncated.dcm": "truncated",
    "pydicom/rtplan_truncated.dcm": "truncated",
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
    "pydicom/meta_missing_tsyntax.dcm": "missing-attribute",
    "pydicom/no_meta.dcm": "not-dicom",
    "pydicom/zipMR.gz": "not-dicom",
    "pydicom/README.txt": "not-dicom",
    "pydicom/test-SR.dcm": "missing-attribute",  # no Patient ID
    "pydicom-data/bad_sequence.dcm": "invalid-attribute",
}
# JPEG Extended with 12-bit samples: only the GPL libjpeg decodes it, which we do not ship.
STORED_NOT_RENDERED = {"pydicom/JPGExtended.dcm", "pydicom/JPEG-lossy.dcm"}


def test_the_sample_sets_are_installed():
    assert len(SAMPLES) > 200
    assert set(MUST_RENDER) | set(MUST_REFUSE) | STORED_NOT_RENDERED <= set(SAMPLES)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_file_is_stored_byte_identical_and_rendered_or_refused_with_a_reason(name, clinic, actor, dicom_dir):
    sent = SAMPLES[name].read_bytes()
    try:
        result = ingest_path(SAMPLES[name], institution=clinic, actor=actor, via="test")
    except IngestError as exc:
        assert name not in MUST_RENDER, f"{MUST_RENDER[name]} sample refused: {exc}"
        assert exc.code == MUST_REFUSE.get(name, exc.code) and exc.reason
        assert index_counts() == (0, 0, 0, 0) and stored_files(dicom_dir) == []
        return
    assert name not in MUST_REFUSE, f"stored although {MUST_REFUSE[name]}"
    stored = storage.local_path(result.instance).read_bytes()
    assert stored == sent or (stored.endswith(sent) and stored[128:132] == b"DICM")
    try:
        thumbnail = render.thumbnail(result.instance)
    except render.RenderError as exc:
        assert name not in MUST_RENDER, f"{MUST_RENDER[name]} sample not rendered: {exc}"
        assert str(exc)
        return
    assert name not in STORED_NOT_RENDERED, "a 12-bit JPEG decoder appeared: move it to MUST_RENDER"
    image = Image.open(io.BytesIO(thumbnail))
    assert image.format == "JPEG" and max(image.size) <= render.THUMBNAIL_PX


def test_renders_of_a_grayscale_sample_are_not_blank(clinic, actor):
    ingest_path(SAMPLES["pydicom/CT_small.dcm"], institution=clinic, actor=actor, via="test")

    image = Image.open(io.BytesIO(render.thumbnail(Instance.objects.get()))).convert("L")

    low, high = image.getextrema()
    assert high - low > 100


@pytest.mark.parametrize(
    "syntax",
    [pydicom_uid.DeflatedExplicitVRLittleEndian, pydicom_uid.ImplicitVRLittleEndian, pydicom_uid.ExplicitVRBigEndian],
)
def test_generated_ct_in_other_native_syntaxes_is_stored_and_rendered(syntax, clinic, actor, tmp_path):
    path = tmp_path / "ct.dcm"
    path.write_bytes(part10_bytes(make_ct_series(1, 64, 64, transfer_syntax=syntax)[0]))

    result = ingest_path(path, institution=clinic, actor=actor, via="test")

    assert result.instance.transfer_syntax_uid == syntax
    assert storage.local_path(result.instance).read_bytes() == path.read_bytes()
    assert Image.open(io.BytesIO(render.thumbnail(result.instance))).size == (64, 64)

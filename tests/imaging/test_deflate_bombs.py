"""Deflate bombs (PS3.5 A.5 deflated data sets that inflate far beyond their size): refused
as too-large by ingest, STOW-RS and upload, skipped by the readers of stored files, and never
inflated whole in memory. (Over C-STORE against the real server: test_fuzz_servers.py.)

Memory is checked as the process's peak resident size (VmHWM, reset through
/proc/self/clear_refs): it must stay far below what the bomb inflates to.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom import uid as pydicom_uid

from imaging import render, storage
from imaging.dicom import part10
from imaging.dicomweb import transfer
from imaging.ingest import IngestError, ingest_bytes, ingest_path
from imaging.models import Instance
from tests.dicomweb.conftest import BASE, token_client
from tests.imaging.dicomgen import deflate_bomb, make_ct_series, part10_bytes
from tests.imaging.stored import index_counts, stored_files
from tests.imaging.test_upload import en_client, post, zipped

MB = 1024 * 1024
BOMB_MB = 512  # what the bomb inflates to; on disk it is about 0.5 MB
MEMORY_BOUND = 64 * MB  # far below BOMB_MB: the bomb was never inflated in memory
JSON = "application/dicom+json"
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=bomb-boundary'


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return deflate_bomb(BOMB_MB)


@pytest.fixture
def small_limits(settings) -> None:  # type: ignore[no-untyped-def]
    settings.DICOM_MAX_INFLATED_BYTES = 8 * MB


def peak_rss_growth(work: Callable[[], Any]) -> int:
    """How far this process's peak resident size rose above its size before `work`."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = _vm_hwm(Path("/proc/self/status"))
    work()
    return _vm_hwm(Path("/proc/self/status")) - before


def _vm_hwm(status: Path) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in {status}")


def _refused(work: Callable[[], Any]) -> IngestError:
    with pytest.raises(IngestError) as caught:
        work()
    return caught.value


def test_a_deflate_bomb_over_the_inflated_limit_is_refused_as_too_large_in_bounded_memory(  # type: ignore[no-untyped-def]
    bomb, small_limits, clinic, actor, dicom_dir
) -> None:
    refusal: list[IngestError] = []

    growth = peak_rss_growth(
        lambda: refusal.append(_refused(lambda: ingest_bytes(bomb, institution=clinic, actor=actor, via="test")))
    )

    (error,) = refusal
    assert (error.code, error.dicom_status, error.http_status) == ("too-large", 0xA700, 413)
    assert "deflated data set inflates to more than 8388608 bytes" in error.reason
    assert growth < MEMORY_BOUND
    assert index_counts() == (0, 0, 0, 0) and stored_files(dicom_dir) == []


def test_a_deflate_bomb_under_the_absolute_limit_is_refused_by_its_ratio(settings, bomb, clinic, actor) -> None:  # type: ignore[no-untyped-def]
    settings.DICOM_MAX_INFLATED_BYTES = 2048 * MB

    error = _refused(lambda: ingest_bytes(bomb, institution=clinic, actor=actor, via="test"))

    assert error.code == "too-large"
    limit = settings.DICOM_MAX_INFLATE_RATIO * (len(bomb) - len(bomb.split(b"DICM", 1)[0]))
    assert int(error.params["limit"]) < limit  # its own size times the ratio, not the absolute limit


def test_a_small_deflated_file_of_one_value_is_stored_whatever_its_ratio(clinic, actor) -> None:  # type: ignore[no-untyped-def]
    blank = deflate_bomb(4)  # 4 MB of zeros, deflated a thousandfold: under the ratio-free 16 MB

    result = ingest_bytes(blank, institution=clinic, actor=actor, via="test")

    assert result.created and result.instance.transfer_syntax_uid == pydicom_uid.DeflatedExplicitVRLittleEndian
    assert storage.local_path(result.instance).read_bytes() == blank


def test_a_deflate_stream_cut_short_is_refused_as_truncated(clinic, actor) -> None:  # type: ignore[no-untyped-def]
    whole = part10_bytes(make_ct_series(1, 64, 64, transfer_syntax=pydicom_uid.DeflatedExplicitVRLittleEndian)[0])

    error = _refused(lambda: ingest_bytes(whole[:-200], institution=clinic, actor=actor, via="test"))

    assert error.code == "truncated"


def test_stow_answers_a_deflate_bomb_part_with_a_failure_and_stores_the_rest(  # type: ignore[no-untyped-def]
    bomb, small_limits, alliance_world
) -> None:
    good = make_ct_series(1, 16, 16)[0]
    body = b""
    for part in (bomb, part10_bytes(good)):
        body += b"--bomb-boundary\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    body += b"--bomb-boundary--\r\n"
    client = token_client(alliance_world.owner)
    responses: list[Any] = []

    growth = peak_rss_growth(
        lambda: responses.append(
            client.generic(
                "POST", f"{BASE}/studies", body, content_type=STOW_TYPE, HTTP_ACCEPT="application/dicom+json"
            )
        )
    )

    (response,) = responses
    assert response.status_code == 202
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"][0] for item in failed] == [0xA700]
    assert list(Instance.objects.values_list("sop_uid", flat=True)) == [good.SOPInstanceUID]
    assert growth < MEMORY_BOUND


def test_an_uploaded_deflate_bomb_is_refused_with_its_reason(bomb, small_limits, alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = en_client(alliance_world.owner)
    responses: list[Any] = []

    growth = peak_rss_growth(lambda: responses.append(post(client, [("bomb.dcm", bomb)])))

    (result,) = responses[0].json()["results"]
    assert result["status"] == "refused"
    assert "inflates to more than" in result["reason"]
    assert growth < MEMORY_BOUND
    assert not Instance.objects.exists()


def test_a_zip_member_that_inflates_beyond_the_ratio_is_not_unpacked(alliance_world) -> None:  # type: ignore[no-untyped-def]
    zeros = b"\x00" * (64 * MB)  # deflates about a thousandfold, past the ratio-free 16 MB
    good = part10_bytes(make_ct_series(1, 16, 16)[0])
    archive = zipped({"zeros.dcm": zeros, "good.dcm": good})

    response = post(en_client(alliance_world.owner), [("export.zip", archive)])

    results = response.json()["results"]
    assert [(r["name"], r["status"]) for r in results] == [
        ("export.zip/zeros.dcm", "refused"),
        ("export.zip/good.dcm", "stored"),
    ]
    assert "100-fold" in results[0]["reason"]


def test_a_deflated_dicom_bomb_inside_a_zip_is_refused_by_ingest(bomb, small_limits, alliance_world) -> None:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bomb.dcm", bomb)

    response = post(en_client(alliance_world.owner), [("export.zip", buffer.getvalue())])

    (result,) = response.json()["results"]
    assert result["status"] == "refused" and "inflates to more than" in result["reason"]


@pytest.fixture
def stored_bomb(settings, clinic, actor) -> Instance:  # type: ignore[no-untyped-def]
    """A 64 MB deflate bomb stored under limits that let it in, then the limits lowered (as a
    file stored before them, or under higher ones, is met by the readers)."""
    settings.DICOM_MAX_INFLATED_BYTES, settings.DICOM_MAX_INFLATE_RATIO = 128 * MB, 10_000
    instance = ingest_bytes(deflate_bomb(64), institution=clinic, actor=actor, via="test").instance
    settings.DICOM_MAX_INFLATED_BYTES, settings.DICOM_MAX_INFLATE_RATIO = 8 * MB, 100
    return instance


def test_a_stored_deflate_bomb_is_not_rendered_and_is_logged(stored_bomb, caplog) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(render.RenderError, match="inflates to more than"):
        render.thumbnail(stored_bomb)

    assert "not rendering a file" in caplog.text


def test_a_stored_deflate_bomb_is_not_transcoded(stored_bomb) -> None:  # type: ignore[no-untyped-def]
    growth = peak_rss_growth(
        lambda: pytest.raises(
            part10.InvalidFile, transfer.to_explicit_little_endian, storage.open_instance(stored_bomb)
        )
    )

    assert growth < MEMORY_BOUND


def test_a_deflated_instance_within_the_limits_is_rendered_and_transcoded(clinic, actor, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = make_ct_series(1, 64, 64, transfer_syntax=pydicom_uid.DeflatedExplicitVRLittleEndian)[0]
    path = tmp_path / "deflated.dcm"
    path.write_bytes(part10_bytes(ds))
    instance = ingest_path(path, institution=clinic, actor=actor, via="test").instance

    assert render.render_frame(storage.local_path(instance), fmt="png")
    encoded = transfer.to_explicit_little_endian(storage.open_instance(instance))
    decoded = dcmread(io.BytesIO(encoded))
    assert decoded.file_meta.TransferSyntaxUID == pydicom_uid.ExplicitVRLittleEndian
    assert decoded.PixelData == ds.PixelData


def _deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush() + b"\x00"  # PS3.5 A.5's padding byte


def _counting(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)


@pytest.mark.parametrize("size", [0, 1, MB - 1, MB, MB + 1, 3 * MB])
def test_inflating_in_pieces_gives_back_every_byte_at_any_length(size: int) -> None:
    out = io.BytesIO()

    assert part10.inflate(io.BytesIO(_deflated(_counting(size))), out, limit=size) == size

    assert out.getvalue() == _counting(size)


@pytest.mark.parametrize("size", [1, MB, MB + 1])
def test_inflating_one_byte_past_the_limit_is_too_large(size: int) -> None:
    with pytest.raises(part10.InvalidFile, match="inflates to more than") as caught:
        part10.inflate(io.BytesIO(_deflated(_counting(size))), io.BytesIO(), limit=size - 1)

    assert caught.value.code == "too-large"

"""An instance is stored only under the identity it gives everywhere (issue 21, item 4): the
data set's SOP Instance and Class UIDs must be those of its File Meta Information and, over
DIMSE, the C-STORE request's Affected SOP Instance UID; otherwise it is refused (0xA900/409)
and nothing is stored."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydicom.uid import MRImageStorage

from alliance.models import AuditEvent
from imaging.dicom import part10
from imaging.ingest import IngestError, ingest_bytes, receive_path
from tests.imaging.dicomgen import make_ct_series, new_uid, part10_bytes, part10_claiming
from tests.imaging.stored import index_counts, stored_files

LIMIT = 1 << 40


def _claiming(**meta_values: str) -> bytes:
    """A CT file whose file meta says `meta_values` (the rest as the data set says)."""
    ds = make_ct_series(1, 16, 16)[0]
    meta = copy.deepcopy(ds.file_meta)
    for keyword, value in meta_values.items():
        setattr(meta, keyword, value)
    return part10_claiming(ds, meta)


@pytest.mark.parametrize("one_walk", [True, False], ids=["one-walk", "full-way"])
@pytest.mark.parametrize(
    ("meta", "element"),
    [
        ({"MediaStorageSOPInstanceUID": new_uid()}, "(0002,0003)"),
        ({"MediaStorageSOPClassUID": MRImageStorage}, "(0002,0002)"),
    ],
)
def test_a_file_whose_meta_names_another_instance_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_walk: bool, meta: dict[str, str], element: str
) -> None:
    if not one_walk:
        monkeypatch.setattr(part10, "_read_part10_in_one_walk", lambda fp, size: None)
    path = tmp_path / "claiming.dcm"
    path.write_bytes(_claiming(**meta))
    with pytest.raises(part10.InvalidFile) as caught:
        part10.read_file(path, max_bytes=LIMIT)
    assert caught.value.code == "uid-mismatch"
    assert element in caught.value.reason and next(iter(meta.values())) in caught.value.reason


def test_a_data_set_under_another_uid_than_the_request_named_is_refused(tmp_path: Path) -> None:
    ds = make_ct_series(1, 16, 16)[0]
    path = tmp_path / "ct.dcm"
    path.write_bytes(part10_bytes(ds))
    assert part10.read_file(path, max_bytes=LIMIT, expected_sop_uid=ds.SOPInstanceUID).sop_uid == ds.SOPInstanceUID
    requested = new_uid()
    with pytest.raises(part10.InvalidFile) as caught:
        part10.read_file(path, max_bytes=LIMIT, expected_sop_uid=requested)
    assert caught.value.code == "uid-mismatch"
    assert requested in caught.value.reason and ds.SOPInstanceUID in caught.value.reason
    assert caught.value.sop_uid == ds.SOPInstanceUID


def test_a_bare_data_set_has_no_meta_to_disagree_with(tmp_path: Path) -> None:
    ds = make_ct_series(1, 16, 16)[0]
    data = part10_bytes(ds)
    path = tmp_path / "bare.dcm"
    path.write_bytes(data[132 + 12 + int.from_bytes(data[140:144], "little") :])
    assert part10.read_file(path, max_bytes=LIMIT).sop_uid == ds.SOPInstanceUID


def test_any_ingest_refuses_a_file_whose_meta_disagrees_with_409_and_stores_nothing(clinic, actor, dicom_dir) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IngestError) as caught:
        ingest_bytes(_claiming(MediaStorageSOPInstanceUID=new_uid()), institution=clinic, actor=actor, via="stow")
    assert (caught.value.code, caught.value.dicom_status, caught.value.http_status) == ("uid-mismatch", 0xA900, 409)
    assert index_counts() == (0, 0, 0, 0) and stored_files(dicom_dir) == []
    assert AuditEvent.objects.get(action="instance.store").outcome == AuditEvent.Outcome.FAILURE


def test_a_dimse_instance_is_refused_when_its_request_named_another_uid(clinic, actor, dicom_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "received.dcm"
    path.write_bytes(part10_bytes(make_ct_series(1, 16, 16)[0]))
    with pytest.raises(IngestError) as caught:
        receive_path(
            path,
            institution=clinic,
            actor=actor,
            via="dimse",
            source="127.0.0.1:4000",
            spooling=None,
            expected_sop_uid=new_uid(),
        )
    assert (caught.value.code, caught.value.dicom_status) == ("uid-mismatch", 0xA900)
    assert index_counts() == (0, 0, 0, 0) and stored_files(dicom_dir) == []

"""imaging/dicom/part10.py reads a PS3.10 file in one walk (only the attributes the index
needs); on every sample file no one here wrote, it must read exactly what pydicom's full
reader reads, or refuse exactly as the full way does."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from imaging.dicom import part10
from imaging.dicom.datasets import ATTRIBUTE_KEYWORDS, Attributes
from tests.imaging.dicomgen import make_ct_series, part10_bytes
from tests.imaging.test_sample_files import SAMPLES

LIMIT = 1 << 40


def _full_way(path: Path, monkeypatch: pytest.MonkeyPatch) -> part10.ParsedFile | part10.InvalidFile:
    with monkeypatch.context() as patch:
        patch.setattr(part10, "_read_part10_in_one_walk", lambda fp, size: None)
        return _read(path)


def _read(path: Path) -> part10.ParsedFile | part10.InvalidFile:
    try:
        return part10.read_file(path, max_bytes=LIMIT)
    except part10.InvalidFile as exc:
        return exc


def _values(attributes: Attributes) -> dict[str, object]:
    """What the index takes from the file. (encoded() differs by design: the one walk keeps
    each value as found, pydicom's data set gives what it has converted.)"""
    values: dict[str, object] = {k: attributes.text(k) for k in sorted(ATTRIBUTE_KEYWORDS)}
    for name in ("series_number", "instance_number", "rows", "columns", "number_of_frames"):
        values[name] = getattr(attributes, name)
    return values


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_one_walk_reads_what_the_full_reader_reads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = SAMPLES[name]
    quick, full = _read(path), _full_way(path, monkeypatch)
    if isinstance(full, part10.InvalidFile):
        assert isinstance(quick, part10.InvalidFile), f"{name}: the one walk accepted what the full way refuses"
        assert (quick.code, quick.reason) == (full.code, full.reason)
        return
    assert isinstance(quick, part10.ParsedFile), f"{name}: {quick}"
    assert quick.transfer_syntax_uid == full.transfer_syntax_uid
    assert quick.prefix == full.prefix
    assert _values(quick.attributes) == _values(full.attributes)


def test_a_generated_ct_goes_the_one_walk_and_names_its_attributes(tmp_path: Path) -> None:
    ds = make_ct_series(1, 16, 16, patient_id="1001")[0]
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, as Chinese modalities commonly send
    ds.PatientName = "Wang^Fang=王^芳"
    path = tmp_path / "ct.dcm"
    path.write_bytes(part10_bytes(ds))

    parsed = part10.read_file(path, max_bytes=LIMIT)

    assert parsed.attributes.partial  # read in one walk, not by pydicom's full reader
    assert parsed.attributes.patient_name == "Wang^Fang=王^芳"
    assert parsed.attributes.patient_id == "1001"
    assert (parsed.attributes.rows, parsed.attributes.columns) == (16, 16)
    with pytest.raises(LookupError):
        parsed.attributes.text("WindowCenter")  # not read: a loud error, never a silent blank


def test_a_file_cut_inside_its_header_is_refused_as_the_full_way_refuses_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = part10_bytes(make_ct_series(1, 16, 16)[0])
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:400])

    quick, full = _read(path), _full_way(path, monkeypatch)

    assert isinstance(quick, part10.InvalidFile) and isinstance(full, part10.InvalidFile)
    assert (quick.code, quick.reason) == (full.code, full.reason)
    assert io.BytesIO(data[:400]).read(132)[128:132] == b"DICM"  # it did take the one-walk branch first


def test_remembered_conversions_follow_the_character_set(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The same bytes under two character sets are two names; each file reads as pydicom reads it,
    the first time and when its values are remembered."""
    ds = make_ct_series(1, 16, 16, patient_id="1001")[0]
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    ds.PatientName = "王^芳"
    utf8 = part10_bytes(ds)
    latin1 = utf8.replace(b"ISO_IR 192", b"ISO_IR 100")  # the same name bytes, read as Latin-1
    assert latin1 != utf8
    names = []
    for i, data in enumerate((utf8, latin1, utf8)):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(data)
        quick = part10.read_file(path, max_bytes=LIMIT)
        full = _full_way(path, monkeypatch)
        assert isinstance(full, part10.ParsedFile)
        assert quick.attributes.partial
        assert quick.attributes.patient_name == full.attributes.patient_name
        assert quick.attributes.encoded("PatientName") == "王^芳".encode() + b" "  # as found in the file, padded
        names.append(quick.attributes.patient_name)
    assert names[0] == names[2] == "王^芳"
    assert names[1] == "王^芳".encode().decode("latin-1")

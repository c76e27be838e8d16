"""The real `manage.py dicom_server` process driven by dcmtk (echoscu, storescu, findscu, movescu,
getscu) and a storescp the test starts, against the test database; every test on each DIMSE
path: accelerated (imaging/dicom/accel) and pynetdicom's own (DICOM_ACCELERATE=0)."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import DATA_ROOT, external_data_sources
from pydicom.dataset import Dataset
from pydicom.filereader import read_preamble
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from alliance import audit, services
from alliance.models import AuditEvent
from imaging.dicom.datasets import SUPPORTED_TRANSFER_SYNTAXES, is_storage_sop_class, is_valid_uid
from imaging.models import Instance, Study
from tests import factories
from tests.imaging import dicomgen
from tests.processes import free_port, wait_for_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
]
ROOT = Path(__file__).resolve().parents[2]
CT_INSTANCES = 200
# pydicom's own test files, one per compression, with distinct SOP Instance UIDs, and the
# storescu option that proposes each one's transfer syntax
COMPRESSED_SAMPLES = {
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS lossless
    "J2K_pixelrep_mismatch.dcm": "-xv",  # JPEG 2000 lossless
    "SC_rgb_rle.dcm": "-xr",  # RLE lossless
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG baseline
}


def database_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    return f"postgres://{user}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def data_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return tmp_path_factory.mktemp("dicom-server-data")


@pytest.fixture(params=["1", "0"], ids=["accelerated", "plain"])
def accelerate(request: pytest.FixtureRequest) -> str:
    """DICOM_ACCELERATE for the server: each test runs on both DIMSE paths."""
    return str(request.param)


@pytest.fixture
def server_env() -> dict[str, str]:
    """More of the server's environment (a test parametrizes it to change a setting)."""
    return {}


@pytest.fixture
def server(transactional_db, data_dir, accelerate, server_env) -> Iterator[int]:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(data_dir),
        "DICOM_PORT": str(port),
        "DICOM_CHECK_DEVICE_HOST": "1",
        "DICOM_ACCELERATE": accelerate,
        **server_env,
    }
    log = (data_dir / f"server-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "dicom_server"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def world(transactional_db):  # type: ignore[no-untyped-def]
    alliance = factories.AllianceFactory(name="DIMSE Alliance")
    clin_a = factories.make_institution(alliance=alliance, ae_title="CLINA", name="Clinic A")
    clin_b = factories.make_institution(alliance=alliance, ae_title="CLINB", name="Clinic B")
    ws_port = free_port()

    def device(institution, ae_title: str, port: int = 104):  # type: ignore[no-untyped-def]
        return services.device_create(
            institution=institution, ae_title=ae_title, host="127.0.0.1", port=port, by=audit.SYSTEM
        )

    return SimpleNamespace(
        clin_a=clin_a,
        clin_b=clin_b,
        ct_a=device(clin_a, "CT_A"),
        ws_a=device(clin_a, "WS_A", ws_port),
        ct_b=device(clin_b, "CT_B"),
        ws_port=ws_port,
    )


def dcmtk(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{args[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def body_sha256(path: Path) -> tuple[str, str]:
    """(SOP Instance UID, sha256 of the data set after the file meta): what travels on the wire."""
    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.SOPInstanceUID), hashlib.sha256(body_of(path)).hexdigest()


def digests(folder: Path) -> dict[str, str]:
    return dict(body_sha256(p) for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".log"))


def find(port: int, calling: str, called: str, root: str, out: Path, *keys: str) -> list:  # type: ignore[type-arg]
    """findscu's responses, one dataset each (-X writes them to files)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dcmtk("findscu", "-aet", calling, "-aec", called, root, "-X", "-od", str(out), *keys, "127.0.0.1", str(port))
    return [dcmread(p) for p in sorted(out.iterdir())]


def k(*pairs: str) -> list[str]:
    return [item for pair in pairs for item in ("-k", pair)]


@pytest.fixture(scope="module")
def ct_study(tmp_path_factory) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("ct")
    datasets = dicomgen.make_ct_series(CT_INSTANCES, patient_id="PA-1001", patient_name="Zhang^San")
    dicomgen.write_series(datasets, folder)
    samples = tmp_path_factory.mktemp("compressed")
    for name in COMPRESSED_SAMPLES:
        shutil.copy(get_testdata_file(name), samples / name)
    return SimpleNamespace(
        folder=folder,
        samples=samples,
        study_uid=str(datasets[0].StudyInstanceUID),
        series_uid=str(datasets[0].SeriesInstanceUID),
        sop_uids=[str(ds.SOPInstanceUID) for ds in datasets],
    )


def test_store_find_move_and_get_round_trip_byte_for_byte(server, world, ct_study, tmp_path, data_dir) -> None:  # type: ignore[no-untyped-def]
    port, ct = str(server), ct_study
    dcmtk("echoscu", "-aet", "CT_A", "-aec", "CLINA", "127.0.0.1", port)
    dcmtk("storescu", "-aet", "CT_A", "-aec", "CLINA", "+sd", "+r", "127.0.0.1", port, str(ct.folder))
    for name, propose in COMPRESSED_SAMPLES.items():
        dcmtk("storescu", "-aet", "CT_A", "-aec", "CLINA", propose, "127.0.0.1", port, str(ct.samples / name))
    assert Instance.objects.count() == CT_INSTANCES + len(COMPRESSED_SAMPLES)
    study = Study.objects.get(study_uid=ct.study_uid)
    assert (study.institution_id, study.num_instances) == (world.clin_a.pk, CT_INSTANCES)

    check_find_levels_and_matching(server, ct, tmp_path)
    check_get_is_byte_identical(port, ct, tmp_path)
    check_move_is_byte_identical(port, world, ct, tmp_path, data_dir)
    check_clinic_b_sees_nothing(server, ct, tmp_path)
    assert AuditEvent.objects.filter(action="dicom.find", actor_name="CT_A", object_id=ct.study_uid).exists()
    assert AuditEvent.objects.filter(action="dicom.get", object_id=ct.study_uid, basis="own-institution").exists()
    assert AuditEvent.objects.filter(action="dicom.move", object_id=ct.study_uid, detail__destination="WS_A").exists()


def check_find_levels_and_matching(port: int, ct: SimpleNamespace, tmp: Path) -> None:
    out = tmp / "find"

    def count(root: str, *keys: str) -> int:
        return len(find(port, "CT_A", "CLINA", root, out, *keys))

    # patient root
    (patient,) = find(
        port, "CT_A", "CLINA", "-P", out, *k("QueryRetrieveLevel=PATIENT", "PatientName=zhang*", "PatientID")
    )
    assert patient.PatientID == "PA-1001"
    assert count("-P", *k("QueryRetrieveLevel=PATIENT", "PatientName=Z?ANG^SAN", "PatientID")) == 1
    assert count("-P", *k("QueryRetrieveLevel=STUDY", "PatientID=PA-1001", "StudyInstanceUID")) == 1
    assert count("-P", *k("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={ct.study_uid}", "Modality=CT")) == 1
    image_keys = k("QueryRetrieveLevel=IMAGE", f"SeriesInstanceUID={ct.series_uid}", "SOPInstanceUID")
    assert count("-P", *image_keys) == CT_INSTANCES
    # study root: single value, universal, range, wildcard, list of UIDs
    (found,) = find(
        port,
        "CT_A",
        "CLINA",
        "-S",
        out,
        *k(
            "QueryRetrieveLevel=STUDY",
            "StudyDate=20260101-20261231",
            "ModalitiesInStudy=CT",
            "StudyInstanceUID",
            "NumberOfStudyRelatedInstances",
            "PatientName",
        ),
    )
    assert (found.StudyInstanceUID, int(found.NumberOfStudyRelatedInstances)) == (ct.study_uid, CT_INSTANCES)
    assert str(found.PatientName) == "Zhang^San"
    older = find(
        port, "CT_A", "CLINA", "-S", out, *k("QueryRetrieveLevel=STUDY", "StudyDate=-20251231", "StudyInstanceUID")
    )
    assert len(older) == 3 and ct.study_uid not in {ds.StudyInstanceUID for ds in older}  # the samples' old studies
    assert count("-S", *k("QueryRetrieveLevel=STUDY", "StudyInstanceUID")) == 1 + 3  # CT + the samples' studies
    assert count("-S", *k("QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + ct.study_uid, "SeriesNumber=1")) == 1
    uid_list = "\\".join(ct.sop_uids[:3])
    assert count("-S", *k("QueryRetrieveLevel=IMAGE", f"SOPInstanceUID={uid_list}", "InstanceNumber")) == 3


def check_get_is_byte_identical(port: str, ct: SimpleNamespace, tmp: Path) -> None:
    got = tmp / "get"
    got.mkdir()
    dcmtk(
        "getscu",
        *("-aet", "CT_A", "-aec", "CLINA", "-S", "-od", str(got)),
        *k("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={ct.study_uid}"),
        *("127.0.0.1", port),
    )
    assert digests(got) == digests(ct.folder)


def check_move_is_byte_identical(port: str, world: SimpleNamespace, ct: SimpleNamespace, tmp: Path, data: Path) -> None:
    moved = tmp / "moved"
    moved.mkdir()
    receiver = subprocess.Popen(
        ["storescp", "+xa", "+B", "-aet", "WS_A", "-od", str(moved), str(world.ws_port)],  # +B: bytes as received
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_for_port(world.ws_port, receiver)
        study_uids = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in ct.samples.iterdir()}
        for uid in [ct.study_uid, *sorted(study_uids)]:
            dcmtk(
                "movescu",
                *("-aet", "CT_A", "-aec", "CLINA", "-aem", "WS_A", "-S"),
                *k("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid}"),
                *("127.0.0.1", port),
            )
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    received = digests(moved)
    assert received == digests(data / "dicom")  # what the server keeps is what it received...
    sent = digests(ct.folder)
    assert {uid: received[uid] for uid in sent} == sent  # ...and the CT files went through unchanged
    # (storescu re-encodes some of pydicom's odd samples as it sends them, e.g. odd-length OW)


def check_clinic_b_sees_nothing(port: int, ct: SimpleNamespace, tmp: Path) -> None:
    out = tmp / "find_b"
    assert find(port, "CT_B", "CLINB", "-S", out, *k("QueryRetrieveLevel=STUDY", "StudyInstanceUID")) == []
    assert find(port, "CT_B", "CLINB", "-P", out, *k("QueryRetrieveLevel=PATIENT", "PatientID")) == []
    got = tmp / "get_b"
    got.mkdir()
    dcmtk(
        "getscu",
        *("-aet", "CT_B", "-aec", "CLINB", "-S", "-od", str(got)),
        *k("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={ct.study_uid}"),
        *("127.0.0.1", str(port)),
    )
    assert list(got.iterdir()) == []
    refused = dcmtk(
        "movescu",
        *("-aet", "CT_B", "-aec", "CLINB", "-aem", "WS_A", "-S"),
        *k("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={ct.study_uid}"),
        *("127.0.0.1", str(port)),
        check=False,
    )
    assert "MoveDestinationUnknown" in refused.stdout + refused.stderr


def test_unknown_device_is_rejected_at_association_and_audited(server, world) -> None:  # type: ignore[no-untyped-def]
    done = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "CLINA", "127.0.0.1", str(server), check=False)
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    wrong_called = dcmtk("echoscu", "-aet", "CT_A", "-aec", "NOSUCH", "127.0.0.1", str(server), check=False)
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
    denied = AuditEvent.objects.filter(action="dicom.associate", outcome=AuditEvent.Outcome.DENIED)
    assert sorted(denied.values_list("actor_name", flat=True)) == ["CT_A", "INTRUDER"]


def test_dataset_without_patient_id_is_refused_and_nothing_is_stored(server, world) -> None:  # type: ignore[no-untyped-def]
    (ds,) = dicomgen.make_ct_series(1, 64, 64)
    del ds.PatientID
    scu = AE(ae_title="CT_A")
    scu.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = scu.associate("127.0.0.1", server, ae_title="CLINA")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0xA900
    assert "PatientID" in status.ErrorComment or "Patient ID" in status.ErrorComment
    assert not Instance.objects.exists()


def send_files_as_they_are(port: int, paths: list[Path]) -> list[Any]:
    """C-STORE each file's data set bytes unchanged; pynetdicom names each instance (Affected
    SOP Instance UID) by its file meta's Media Storage SOP Instance UID."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        contexts = set()
        for path in paths:
            meta = dcmread(path, stop_before_pixels=True).file_meta
            contexts.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
        assoc = associate(port, contexts)
        try:
            return [assoc.send_c_store(path) for path in paths]
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def test_an_instance_sent_under_another_uid_than_its_own_is_refused_and_nothing_is_stored(  # type: ignore[no-untyped-def]
    server, world, tmp_path, data_dir
) -> None:
    ds = dicomgen.make_ct_series(1, 64, 64)[0]
    meta = copy.deepcopy(ds.file_meta)
    meta.MediaStorageSOPInstanceUID = dicomgen.new_uid()  # the request names this one
    claiming = tmp_path / "claiming.dcm"
    claiming.write_bytes(dicomgen.part10_claiming(ds, meta))
    (status,) = send_files_as_they_are(server, [claiming])
    assert status.Status == 0xA900
    assert "(0008,0018)" in status.ErrorComment or "(0002,0003)" in status.ErrorComment
    assert not Instance.objects.exists()
    assert [p for p in (data_dir / "dicom").rglob("*") if p.is_file()] == []


def test_a_refusal_whose_reason_holds_a_backslash_is_answered_and_the_association_goes_on(  # type: ignore[no-untyped-def]
    server, world, tmp_path
) -> None:
    """The reason names the bad value, backslash and all; an Error Comment is one LO value."""
    bad, good = dicomgen.make_ct_series(2, 32, 32)
    bad.StudyInstanceUID = "1.2\\3.4"  # two values where a UID belongs
    paths = [tmp_path / "bad.dcm", tmp_path / "good.dcm"]
    for path, ds in zip(paths, (bad, good), strict=True):
        path.write_bytes(dicomgen.part10_bytes(ds))
    refused, stored = send_files_as_they_are(server, paths)
    assert refused.Status == 0xA900
    assert refused.ErrorComment == "Study Instance UID (0020,000D) '1.2//3.4' is not a valid UID"
    assert stored.Status == 0x0000  # the same association, still there
    assert list(Instance.objects.values_list("sop_uid", flat=True)) == [good.SOPInstanceUID]


@pytest.mark.parametrize("server_env", [{"DICOM_MAX_FILE_MB": "1"}])
def test_an_instance_over_the_size_limit_is_refused_a700_and_the_association_goes_on(  # type: ignore[no-untyped-def]
    server, world, tmp_path, data_dir
) -> None:
    large = dicomgen.make_ct_series(1, 1024, 1024)[0]  # 2 MiB of pixels, over a 1 MiB limit
    small = dicomgen.make_ct_series(1, 32, 32)[0]
    paths = [tmp_path / "large.dcm", tmp_path / "small.dcm"]
    for path, ds in zip(paths, (large, small), strict=True):
        path.write_bytes(dicomgen.part10_bytes(ds))
    refused, stored = send_files_as_they_are(server, paths)
    assert refused.Status == 0xA700
    assert "the limit of 1048576 bytes" in refused.ErrorComment
    assert stored.Status == 0x0000
    assert list(Instance.objects.values_list("sop_uid", flat=True)) == [small.SOPInstanceUID]
    failed = AuditEvent.objects.filter(action="instance.store", outcome=AuditEvent.Outcome.FAILURE)
    assert [event.detail["code"] for event in failed] == ["too-large"]
    assert [p for p in (data_dir / "tmp").rglob("*") if p.is_file()] == []  # nothing left half-received


def sample_files() -> dict[str, tuple[str, str, Path]]:
    """pydicom's and pydicom-data's files that a peer could send: SOP Instance UID -> (class, syntax, path),
    the first file of each UID only (several samples are one image in several encodings)."""
    roots = [Path(DATA_ROOT) / "test_files", Path(external_data_sources()["pydicom-data"].data_path)]
    found: dict[str, tuple[str, str, Path]] = {}
    for path in sorted(p for root in roots for p in root.rglob("*.dcm")):
        if path.stat().st_size > 4_000_000:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
                sop_class, sop_uid = str(meta.SOPClassUID), str(meta.SOPInstanceUID)
                syntax = str(meta.file_meta.TransferSyntaxUID)
        except Exception:  # noqa: S112 - not something a DICOM peer could send at all
            continue
        if is_storage_sop_class(sop_class) and syntax in SUPPORTED_TRANSFER_SYNTAXES and is_valid_uid(sop_uid):
            found.setdefault(sop_uid, (sop_class, syntax, path))
    return found


def associate(port: int, contexts: set[tuple[str, str]], *, get: bool = False) -> Any:
    ae = AE(ae_title="CT_A")
    if get:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    roles = [build_role(c, scp_role=True) for c in {c for c, _ in contexts}] if get else []

    def keep(event: evt.Event) -> int:
        received.append((str(event.request.AffectedSOPInstanceUID), event.encoded_dataset(False)))
        return 0x0000

    handlers = [(evt.EVT_C_STORE, keep)]
    received: list[tuple[str, bytes]] = []
    assoc = ae.associate("127.0.0.1", port, ae_title="CLINA", ext_neg=roles, evt_handlers=handlers)
    assert assoc.is_established
    assoc.received = received
    return assoc


def test_other_vendors_files_round_trip_byte_for_byte_or_are_refused_with_a_reason(server, world, accelerate) -> None:  # type: ignore[no-untyped-def]
    """Byte for byte on the accelerated path, which sends the stored file; pynetdicom's own path
    decodes each stored file and encodes it again (pydicom normalises some of these samples'
    odd encodings on the way), so there every stored instance comes back, by its UID."""
    samples = sample_files()
    assert len(samples) > 40
    outcomes: dict[str, Any] = {}
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send each file's data set bytes as they are, not re-encoded
    try:
        for batch in batches(list(samples.items())):
            assoc = associate(server, {(c, s) for _, (c, s, _) in batch})
            try:
                for uid, (_, _, path) in batch:
                    outcomes[uid] = assoc.send_c_store(path)
            finally:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    stored = {uid for uid, status in outcomes.items() if status.Status == 0x0000}
    refused = {uid: status for uid, status in outcomes.items() if status.Status != 0x0000}
    assert len(stored) > 30
    assert all(status.get("ErrorComment") for status in refused.values()), refused
    assert set(Instance.objects.values_list("sop_uid", flat=True)) == stored
    retrievable = [(uid, samples[uid]) for uid in sorted(stored)]  # every stored one comes back as it was sent
    for batch in batches(retrievable):
        assoc = associate(server, {(c, s) for _, (c, s, _) in batch}, get=True)
        try:
            for uid, _ in batch:
                query = Dataset()
                query.QueryRetrieveLevel = "IMAGE"
                query.SOPInstanceUID = uid
                statuses = [s.Status for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
                assert statuses[-1] == 0x0000, uid
        finally:
            received = assoc.received
            assoc.release()
        assert sorted(uid for uid, _ in received) == sorted(uid for uid, _ in batch)
        if accelerate == "1":
            expected = sorted(hashlib.sha256(body_of(samples[uid][2])).hexdigest() for uid, _ in batch)
            assert sorted(hashlib.sha256(body).hexdigest() for _, body in received) == expected


def batches(items: list[Any], size: int = 40) -> Iterator[list[Any]]:
    """At most `size` instances per association, so their contexts stay under the 128 allowed."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def body_of(path: Path) -> bytes:
    with path.open("rb") as f:
        read_preamble(f, False)
        f.seek(132 + 8)  # the value of (0002,0000) File Meta Information Group Length, explicit VR UL
        group_length = int.from_bytes(f.read(4), "little")
        f.seek(132 + 12 + group_length)
        return f.read()


def test_a_restarted_server_indexes_what_a_stopped_one_answered_but_did_not_index(world, tmp_path, accelerate) -> None:  # type: ignore[no-untyped-def]
    """What a server killed between its answers and its indexer leaves in DATA_DIR/spool:
    the next `dicom_server` indexes it, with its sender, before it listens."""
    from imaging import spool

    data = tmp_path / "data"
    left = data / "spool" / "0123456789ab-4242"
    left.mkdir(parents=True)
    sender = spool.Sender(world.clin_a.pk, audit.Actor.for_device(world.ct_a), "dimse", "127.0.0.1:40001")
    (left / "a0.json").write_bytes(sender.to_json())
    series = dicomgen.make_ct_series(2, 32, 32, patient_id="PA-SPOOL")
    for i, ds in enumerate(series):
        (left / f"a0-{i}.dcm").write_bytes(dicomgen.part10_bytes(ds))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(data),
        "DICOM_PORT": str(port),
        "DICOM_ACCELERATE": accelerate,
    }
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "dicom_server"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(port, proc)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "indexed 2 instance(s) left in the spool" in log.read_text()
    assert not left.exists()
    stored = Instance.objects.filter(series__study__patient__patient_id="PA-SPOOL")
    assert sorted(i.sop_uid for i in stored) == sorted(ds.SOPInstanceUID for ds in series)
    events = AuditEvent.objects.filter(action="instance.store", object_id__in=[ds.SOPInstanceUID for ds in series])
    assert {(e.actor_name, e.source) for e in events} == {("CT_A", "127.0.0.1:40001")}

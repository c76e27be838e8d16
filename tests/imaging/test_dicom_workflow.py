"""The real `manage.py dicom_server` process as a modality meets it: its worklist read by dcmtk's
`findscu -W`, MPPS and storage commitment from a pynetdicom SCU (this dcmtk has no stgcmtscu),
the study it sends completing the step, on each DIMSE path (accelerated and plain)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
)

from alliance import audit, services
from alliance.models import AuditEvent
from imaging import worklist
from imaging.dicom.procedures import STORAGE_COMMITMENT_INSTANCE
from imaging.models import Instance, ScheduledStep, StorageCommitment
from tests.imaging import dicomgen
from tests.imaging import test_dicom_server as dicom_server
from tests.imaging.test_dicom_server import dcmtk, k
from tests.processes import free_port

# The server process and its world, as tests/imaging/test_dicom_server.py starts them (on each
# DIMSE path); server_env below adds to their environment.
accelerate, data_dir, server, world = (
    dicom_server.accelerate,
    dicom_server.data_dir,
    dicom_server.server,
    dicom_server.world,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
]
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def server_env() -> dict[str, str]:
    # the follow-up of a stored study (imaging.tasks.render_instances) runs in the server process
    return {"CELERY_TASK_ALWAYS_EAGER": "1", "TIME_ZONE": "Asia/Shanghai"}


def schedule(institution: Any, accession: str, when: datetime, **more: Any) -> ScheduledStep:
    fields = {
        "by": audit.SYSTEM,
        "institution": institution,
        "patient_id": f"P-{accession}",
        "issuer": institution,
        "patient_name": "Wang^Fang=王^芳",
        "birth_date": None,
        "sex": "F",
        "accession_number": accession,
        "modality": "CT",
        "scheduled_at": when,
        "station_ae": "CT_A",
        "procedure_description": "CT chest",
        "source": "api",
        **more,
    }
    return worklist.schedule_step(**fields)


@pytest.fixture
def steps(world: Any) -> dict[str, ScheduledStep]:
    day = datetime(2030, 5, 10, tzinfo=SHANGHAI)
    return {
        "morning": schedule(world.clin_a, "A-1", day.replace(hour=9)),
        "afternoon_any": schedule(world.clin_a, "A-2", day.replace(hour=15), station_ae=""),
        "dx": schedule(world.clin_a, "A-3", day.replace(hour=10), modality="DX", station_ae=""),
        "next_day": schedule(world.clin_a, "A-4", day + timedelta(days=1, hours=9)),
        "clinic_b": schedule(world.clin_b, "B-1", day.replace(hour=9), station_ae="CT_B"),
    }


def worklist_find(port: int, calling: str, out: Path, *keys: str) -> list[Dataset]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dcmtk(
        "findscu",
        "-W",
        "-aet",
        calling,
        "-aec",
        "CLINA" if calling != "CT_B" else "CLINB",
        "-X",
        "-od",
        str(out),
        *keys,
        "127.0.0.1",
        str(port),
    )
    return [dcmread(p) for p in sorted(out.iterdir())]


SPS = "ScheduledProcedureStepSequence[0]."
RETURN_KEYS = k(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    SPS + "ScheduledStationAETitle",
    SPS + "ScheduledProcedureStepStartTime",
    SPS + "ScheduledProcedureStepID",
    SPS + "ScheduledProcedureStepStatus",
)


def test_findscu_reads_the_devices_worklist_by_date_modality_and_station(server, world, steps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "mwl"
    on_the_day = k(SPS + "ScheduledProcedureStepStartDate=20300510", SPS + "Modality=CT", *RETURN_KEYS[1::2])
    found = worklist_find(server, "CT_A", out, *on_the_day)
    assert [ds.AccessionNumber for ds in found] == ["A-1", "A-2"]
    first = found[0]
    assert (str(first.PatientName), first.PatientID, first.IssuerOfPatientID) == ("Wang^Fang=王^芳", "P-A-1", "CLINA")
    assert first.StudyInstanceUID == steps["morning"].study_uid
    item = first.ScheduledProcedureStepSequence[0]
    assert (item.ScheduledStationAETitle, item.ScheduledProcedureStepStartTime) == ("CT_A", "090000")
    assert (item.ScheduledProcedureStepID, item.ScheduledProcedureStepStatus) == (steps["morning"].step_id, "SCHEDULED")

    by_station = worklist_find(server, "CT_A", out, *k(SPS + "ScheduledStationAETitle=CT_A", "AccessionNumber"))
    assert [ds.AccessionNumber for ds in by_station] == ["A-1", "A-3", "A-2", "A-4"]  # any station
    in_range = k(SPS + "ScheduledProcedureStepStartDate=20300511-", "AccessionNumber")
    assert [ds.AccessionNumber for ds in worklist_find(server, "CT_A", out, *in_range)] == ["A-4"]
    by_patient = worklist_find(server, "CT_A", out, *k("PatientID=P-A-3", "AccessionNumber"))
    assert [ds.AccessionNumber for ds in by_patient] == ["A-3"]
    # clinic B's modality reads clinic B's worklist, nothing of clinic A's
    theirs = worklist_find(server, "CT_B", out, *k("AccessionNumber", SPS + "Modality"))
    assert [ds.AccessionNumber for ds in theirs] == ["B-1"]
    read = AuditEvent.objects.filter(action="worklist.find", actor_name="CT_A", object_id=str(steps["morning"].pk))
    assert read.exists() and read.first().patient == str(steps["morning"].patient_id)


NAMES = ["Wang^Fang=王^芳", "Li^Lei", "O'Neil^Ann", "张^伟", "Smith^John^^Dr", "Ng^A"]  # odd and even lengths


@pytest.mark.parametrize("syntax", ["-xi", "-xe"], ids=["implicit", "explicit"])
def test_findscu_gets_a_day_list_whole_in_each_transfer_syntax(server, world, tmp_path, syntax) -> None:  # type: ignore[no-untyped-def]
    """A station's day of 40 exams, every key a modality asks, each match its own response
    (on the accelerated path encoded by imaging/dicom/accel/find.py): what dcmtk decodes is
    what was scheduled, empty where nothing is held, and every match is audited."""
    day = datetime(2030, 6, 3, 7, tzinfo=SHANGHAI)
    made = [
        schedule(
            world.clin_a,
            f"L-{i:02d}" + "X" * (i % 2),  # odd and even
            day + timedelta(minutes=11 * i),
            patient_id=f"PL-{i:03d}",
            patient_name=NAMES[i % len(NAMES)],
            sex="MF"[i % 2],
            procedure_description=["CT chest", "胸部 CT 平扫", "", "Abdomen, 3 phases"][i % 4],
            station_ae="" if i % 5 == 0 else "CT_A",
        )
        for i in range(40)
    ]
    keys = k(
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "AdmissionID",  # not held: returned empty
        SPS + "ScheduledStationAETitle=CT_A",
        SPS + "ScheduledProcedureStepStartDate=20300603",
        SPS + "ScheduledProcedureStepStartTime",
        SPS + "Modality",
        SPS + "ScheduledPerformingPhysicianName",
        SPS + "ScheduledProcedureStepDescription",
        SPS + "ScheduledProcedureStepID",
        SPS + "ScheduledProcedureStepStatus",
    )
    found = worklist_find(server, "CT_A", tmp_path / "day", syntax, *keys)
    assert [ds.AccessionNumber for ds in found] == [step.accession_number for step in made]
    for ds, step in zip(found, made, strict=True):
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert (str(ds.PatientName), ds.PatientID, ds.IssuerOfPatientID) == (
            step.patient_name,
            step.patient.patient_id,
            "CLINA",
        )
        assert (ds.PatientBirthDate, ds.PatientSex, ds.AdmissionID) == ("", step.sex, "")
        assert (ds.StudyInstanceUID, ds.RequestedProcedureID) == (step.study_uid, step.requested_procedure_id)
        assert ds.RequestedProcedureDescription == step.procedure_description
        (item,) = ds.ScheduledProcedureStepSequence
        start = step.scheduled_at.astimezone(SHANGHAI)
        assert (item.ScheduledStationAETitle, item.Modality) == (step.station_ae, "CT")
        assert (item.ScheduledProcedureStepStartDate, item.ScheduledProcedureStepStartTime) == (
            start.strftime("%Y%m%d"),
            start.strftime("%H%M%S"),
        )
        assert (str(item.ScheduledPerformingPhysicianName), item.ScheduledProcedureStepDescription) == (
            "",
            step.procedure_description,
        )
        assert (item.ScheduledProcedureStepID, item.ScheduledProcedureStepStatus) == (step.step_id, "SCHEDULED")
    audited = AuditEvent.objects.filter(action="worklist.find", actor_name="CT_A", object_type="scheduled_step")
    assert sorted(audited.values_list("object_id", flat=True)) == sorted(str(step.pk) for step in made)


def test_an_unregistered_device_is_refused_and_a_malformed_query_gets_a900(server, world, steps) -> None:  # type: ignore[no-untyped-def]
    refused = dcmtk(
        "findscu", "-W", "-aet", "INTRUDER", "-aec", "CLINA", *k("PatientName"), "127.0.0.1", str(server), check=False
    )
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    assert AuditEvent.objects.filter(action="dicom.associate", actor_name="INTRUDER", outcome="denied").exists()

    scu = AE(ae_title="CT_A")
    scu.add_requested_context(ModalityWorklistInformationFind)
    assoc = scu.associate("127.0.0.1", server, ae_title="CLINA")
    query = Dataset()
    query.PatientName = ""
    item = Dataset()
    item.ScheduledProcedureStepStartDate = "2030-05-10"
    query.ScheduledProcedureStepSequence = [item]
    ((status, identifier),) = list(assoc.send_c_find(query, ModalityWorklistInformationFind))
    two_items = Dataset()
    two_items.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    ((status_two, _),) = list(assoc.send_c_find(two_items, ModalityWorklistInformationFind))
    assoc.release()
    assert (status.Status, identifier) == (0xA900, None)
    assert "ScheduledProcedureStepStartDate" in status.ErrorComment
    assert status_two.Status == 0xA900


def mpps_create(step: ScheduledStep) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedStationAETitle = "CT_A"
    item = Dataset()
    item.AccessionNumber = step.accession_number
    item.StudyInstanceUID = step.study_uid
    item.ScheduledProcedureStepID = step.step_id
    ds.ScheduledStepAttributesSequence = Sequence([item])
    return ds


def test_mpps_moves_the_step_and_a_finished_one_may_no_longer_change(server, world, steps) -> None:  # type: ignore[no-untyped-def]
    scu = AE(ae_title="CT_A")
    scu.add_requested_context(ModalityPerformedProcedureStep)
    assoc = scu.associate("127.0.0.1", server, ae_title="CLINA")
    uid = generate_uid()
    created, _ = assoc.send_n_create(mpps_create(steps["morning"]), ModalityPerformedProcedureStep, uid)
    in_progress = ScheduledStep.objects.get(pk=steps["morning"].pk).status
    twice, _ = assoc.send_n_create(mpps_create(steps["morning"]), ModalityPerformedProcedureStep, uid)
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    finished, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    again, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    unknown, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, generate_uid())
    bad = mpps_create(steps["afternoon_any"])
    bad.PerformedProcedureStepStatus = "COMPLETED"
    malformed, _ = assoc.send_n_create(bad, ModalityPerformedProcedureStep, generate_uid())
    assoc.release()
    assert (created.Status, in_progress) == (0x0000, "in-progress")
    assert twice.Status == 0x0111
    assert finished.Status == 0x0000 and ScheduledStep.objects.get(pk=steps["morning"].pk).status == "completed"
    assert (again.Status, again.ErrorID) == (0x0110, 0xA710)
    assert unknown.Status == 0x0112
    assert malformed.Status == 0x0106 and ScheduledStep.objects.get(pk=steps["afternoon_any"].pk).status == "scheduled"


def test_the_study_sent_with_the_accession_number_completes_the_step(server, world, steps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "ct"
    folder.mkdir()
    datasets = dicomgen.make_ct_series(3, 64, 64, patient_id="P-A-2", accession_number="A-2")
    dicomgen.write_series(datasets, folder)
    dcmtk("storescu", "-aet", "CT_A", "-aec", "CLINA", "+sd", "+r", "127.0.0.1", str(server), str(folder))
    step = steps["afternoon_any"]
    for _ in range(100):  # the follow-up runs after the commit, in a batch
        step.refresh_from_db()
        if step.status == "completed":
            break
        time.sleep(0.1)
    assert step.status == "completed" and step.study.study_uid == datasets[0].StudyInstanceUID
    assert ScheduledStep.objects.get(pk=steps["clinic_b"].pk).status == "scheduled"


def commitment_request(uids: list[tuple[str, str]]) -> Dataset:
    info = Dataset()
    info.TransactionUID = generate_uid()
    items = []
    for sop_class, sop_uid in uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_uid
        items.append(ref)
    info.ReferencedSOPSequence = items
    return info


@pytest.fixture
def stored(server, world, tmp_path) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    folder = tmp_path / "stored"
    folder.mkdir()
    datasets = dicomgen.make_ct_series(4, 64, 64, patient_id="P-SC", accession_number="SC-1")
    dicomgen.write_series(datasets, folder)
    dcmtk("storescu", "-aet", "CT_A", "-aec", "CLINA", "+sd", "+r", "127.0.0.1", str(server), str(folder))
    return [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in datasets]


def test_storage_commitment_is_reported_on_the_same_association(server, world, stored) -> None:  # type: ignore[no-untyped-def]
    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.request.EventTypeID, event.event_information))
        arrived.set()
        return 0x0000, None

    scu = AE(ae_title="CT_A")
    scu.add_requested_context(StorageCommitmentPushModel)
    assoc = scu.associate("127.0.0.1", server, ae_title="CLINA", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    missing = (CTImageStorage, generate_uid())
    request = commitment_request([*stored, missing])
    status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE)
    assert status.Status == 0x0000
    assert arrived.wait(30)
    assoc.release()
    ((event_type, info),) = reports
    assert event_type == 2 and info.TransactionUID == request.TransactionUID
    assert sorted(r.ReferencedSOPInstanceUID for r in info.ReferencedSOPSequence) == sorted(u for _, u in stored)
    ((failed,),) = [info.FailedSOPSequence]
    assert (failed.ReferencedSOPInstanceUID, failed.FailureReason) == (missing[1], 0x0112)
    assert info.RetrieveAETitle == "CLINA"
    row = StorageCommitment.objects.get(transaction_uid=request.TransactionUID)
    for _ in range(50):
        row.refresh_from_db()
        if row.state == "delivered":
            break
        time.sleep(0.1)
    assert row.state == "delivered"


@pytest.fixture
def modality(world) -> Iterator[tuple[Any, list[tuple[int, Dataset]], threading.Event]]:  # type: ignore[no-untyped-def]
    """A modality's own storage commitment SCU role listening for reports on new associations."""
    port = free_port()
    device = services.device_create(
        institution=world.clin_a, ae_title="MOD_A", host="127.0.0.1", port=port, by=audit.SYSTEM
    )
    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.request.EventTypeID, event.event_information))
        arrived.set()
        return 0x0000, None

    ae = AE(ae_title="MOD_A")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    listening = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    yield device, reports, arrived
    listening.shutdown()


def test_a_report_the_request_association_cannot_take_goes_out_on_one_of_its_own(
    server, world, stored, modality
) -> None:  # type: ignore[no-untyped-def]
    device, reports, arrived = modality
    scu = AE(ae_title="MOD_A")
    scu.add_requested_context(StorageCommitmentPushModel)
    assoc = scu.associate("127.0.0.1", server, ae_title="CLINA")  # takes no report: answers 0x0110
    request = commitment_request(stored[:2])
    status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE)
    assert status.Status == 0x0000
    assert arrived.wait(60), "no report on a new association"
    assoc.release()
    ((event_type, info),) = reports
    assert event_type == 1 and len(info.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in info
    assert Instance.objects.filter(sop_uid__in=[u for _, u in stored]).count() == 4
    row = StorageCommitment.objects.get(transaction_uid=request.TransactionUID)
    for _ in range(50):
        row.refresh_from_db()
        if row.state == "delivered":
            break
        time.sleep(0.1)
    assert (row.state, row.device_id) == ("delivered", device.pk)

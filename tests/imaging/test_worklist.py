"""The worklist's services: scheduling, the same order twice, bad values, discontinuing."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from io import BytesIO
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence as DicomSequence

from alliance import audit
from alliance import services as alliance_services
from alliance.models import AuditEvent
from imaging import commitment, storage, tasks, worklist, worklist_query
from imaging.dicom.procedures import CommitmentRequest, PerformedStep, Reference, ScheduledRef, WorklistQuery
from imaging.dicom.status import DimseFailure
from imaging.models import Instance
from imaging.query import InvalidCriterion
from imaging.worklist import ScheduledStep, discontinue_step, schedule_step
from tests import factories

pytestmark = pytest.mark.django_db


def order(clinic, **overrides):  # type: ignore[no-untyped-def]
    fields = {
        "by": audit.Actor("user", "1", "dr.li", clinic.pk),
        "institution": clinic,
        "patient_id": "P1001",
        "issuer": clinic,
        "patient_name": "Wang^Fang=王^芳",
        "birth_date": date(1961, 3, 2),
        "sex": "F",
        "accession_number": "A0001",
        "modality": "CT",
        "scheduled_at": timezone.now() + timedelta(hours=2),
        "station_ae": "CT_CLINA",
        "procedure_description": "CT chest",
        "source": "api",
    }
    fields.update(overrides)
    return schedule_step(**fields)


def test_schedule_step_makes_a_scheduled_step_with_its_patient_and_audits_it(clinic) -> None:
    step = order(clinic, consult_id=7)
    assert step.status == ScheduledStep.Status.SCHEDULED
    assert (step.patient.issuer_id, step.patient.patient_id) == (clinic.pk, "P1001")
    assert step.requested_procedure_id == "A0001" and step.consult_id == 7
    assert step.study_uid.startswith("2.25.")
    assert step.changes.get().to_status == "scheduled"
    event = AuditEvent.objects.get(action="worklist.schedule")
    assert event.object_id == str(step.pk) and event.patient == str(step.patient_id)


def test_the_same_order_twice_returns_the_first_step(clinic) -> None:
    first = order(clinic)
    assert order(clinic).pk == first.pk
    assert ScheduledStep.objects.count() == 1
    assert AuditEvent.objects.filter(action="worklist.schedule").count() == 1


def test_an_accession_number_used_for_another_patient_is_refused(clinic) -> None:
    order(clinic)
    with pytest.raises(ValidationError) as error:
        order(clinic, patient_id="P2002")
    assert "accession_number" in error.value.message_dict


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accession_number", ""),
        ("accession_number", "A" * 17),
        ("modality", "c t!"),
        ("station_ae", "has space"),
        ("scheduled_at", datetime(2030, 1, 1, 9, 0)),  # noqa: DTZ001 - a naive time is the bad input
        ("source", "fax"),
        ("patient_id", ""),
        ("sex", "X"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field_and_nothing_is_stored(clinic, field, value) -> None:
    with pytest.raises(ValidationError) as error:
        order(clinic, **{field: value})
    assert field in error.value.message_dict
    assert not ScheduledStep.objects.exists()


def test_discontinue_moves_the_step_and_logs_it_once_only(clinic) -> None:
    step = order(clinic)
    by = audit.Actor("user", "2", "admin", clinic.pk)
    step = discontinue_step(by=by, step=step, reason="patient left")
    assert step.status == "discontinued"
    assert [c.to_status for c in step.changes.all()] == ["scheduled", "discontinued"]
    assert AuditEvent.objects.filter(action="worklist.discontinue").count() == 1
    with pytest.raises(ValidationError):
        discontinue_step(by=by, step=step)


# --- the MWL information model (imaging.worklist_query) -----------------------------------

LOCAL = ZoneInfo("Asia/Shanghai")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2030, 5, day, hour, minute, tzinfo=LOCAL)


@pytest.fixture
def steps(clinic, other_clinic, settings):  # type: ignore[no-untyped-def]
    settings.TIME_ZONE = "Asia/Shanghai"
    made = {
        "ct_morning": order(clinic, accession_number="A1", scheduled_at=at(10, 9), station_ae="CT_CLINA"),
        "ct_any_station": order(clinic, accession_number="A2", scheduled_at=at(10, 14), station_ae="", patient_id="P2"),
        "dx_next_day": order(
            clinic, accession_number="A3", modality="DX", scheduled_at=at(11, 8), patient_id="P3", station_ae=""
        ),
        "other_clinic": order(other_clinic, accession_number="A1", scheduled_at=at(10, 9), patient_id="P9"),
    }
    made["done"] = order(clinic, accession_number="A4", scheduled_at=at(10, 10), patient_id="P4")
    discontinue_step(by=audit.SYSTEM, step=made["done"])
    return made


def query(*, top: dict[str, str] | None = None, **step_keys: str) -> WorklistQuery:
    ds = Dataset()
    for keyword, value in (top or {}).items():
        setattr(ds, keyword, value)
    item = Dataset()
    for keyword, value in step_keys.items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return WorklistQuery.from_identifier(ds)


def matched(clinic, q: WorklistQuery) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.accession_number for s in worklist_query.find(ScheduledStep.objects.filter(institution=clinic), q)]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ["A1", "A2", "A3"]),  # universal: what is still to do, oldest first
        ({"Modality": "CT"}, ["A1", "A2"]),
        ({"ScheduledProcedureStepStartDate": "20300510"}, ["A1", "A2"]),
        ({"ScheduledProcedureStepStartDate": "20300511-"}, ["A3"]),
        ({"ScheduledProcedureStepStartDate": "20300510", "ScheduledProcedureStepStartTime": "1200-1800"}, ["A2"]),
        (
            {"ScheduledProcedureStepStartDate": "20300510-20300511", "ScheduledProcedureStepStartTime": "1000-0900"},
            ["A2", "A3"],
        ),
        ({"ScheduledStationAETitle": "CT_CLINA"}, ["A1", "A2", "A3"]),  # A2 and A3: any station
        ({"ScheduledStationAETitle": "CT_OTHER"}, ["A2", "A3"]),
        ({"ScheduledProcedureStepStatus": "DISCONTINUED"}, ["A4"]),
        ({"ScheduledProcedureStepStatus": "ARRIVED"}, []),
    ],
)
def test_worklist_matching_keys_of_the_scheduled_step(clinic, steps, keys, expected) -> None:  # type: ignore[no-untyped-def]
    assert matched(clinic, query(**keys)) == expected


def test_worklist_matches_patient_keys_at_the_top_level(clinic, steps) -> None:  # type: ignore[no-untyped-def]
    assert matched(clinic, query(top={"PatientID": "P2"})) == ["A2"]
    assert matched(clinic, query(top={"PatientName": "wang*"})) == ["A1", "A2", "A3"]
    assert matched(clinic, query(top={"AccessionNumber": "A3"})) == ["A3"]
    assert matched(clinic, query(top={"StudyInstanceUID": steps["ct_morning"].study_uid})) == ["A1"]


def test_a_malformed_date_is_an_invalid_criterion(clinic, steps) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidCriterion):
        matched(clinic, query(ScheduledProcedureStepStartDate="2030-05-10"))


def test_more_than_one_scheduled_step_item_is_refused_a900() -> None:
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    with pytest.raises(DimseFailure) as failure:
        WorklistQuery.from_identifier(ds)
    assert failure.value.status == 0xA900


def test_the_answer_holds_every_key_asked_and_the_step_in_local_time(clinic, steps) -> None:  # type: ignore[no-untyped-def]
    q = query(
        top={"PatientName": "", "PatientID": "", "IssuerOfPatientID": "", "AccessionNumber": "", "AdmissionID": ""},
        Modality="",
        ScheduledProcedureStepStartDate="",
        ScheduledProcedureStepStartTime="",
        ScheduledProcedureStepID="",
        ScheduledProcedureStepStatus="",
        ScheduledStationAETitle="",
        ScheduledProtocolCodeSequence=[],
    )
    step = steps["ct_morning"]
    answers = worklist_query.answers(q)
    (row,) = answers.rows(ScheduledStep.objects.filter(pk=step.pk))
    ds = answers.identifier(row).dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert (str(ds.PatientName), ds.PatientID, ds.IssuerOfPatientID) == ("Wang^Fang=王^芳", "P1001", "CLINA")
    assert ds.AdmissionID in ("", None)  # asked, not held: returned empty (PS3.4 C.2.2.1.1)
    item = ds.ScheduledProcedureStepSequence[0]
    assert (item.ScheduledProcedureStepStartDate, item.ScheduledProcedureStepStartTime) == ("20300510", "090000")
    assert (item.ScheduledProcedureStepID, item.ScheduledProcedureStepStatus) == (f"SPS{step.pk}", "SCHEDULED")
    assert item.ScheduledStationAETitle == "CT_CLINA" and len(item.ScheduledProtocolCodeSequence) == 0


def test_every_key_of_every_match_is_answered_from_the_one_query(clinic, steps, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    every = {keyword: "" for keyword in worklist_query._TOP_VALUES}
    q = query(top=every, **{keyword: "" for keyword in worklist_query._STEP_VALUES})
    answer = worklist_query.answers(q)
    with django_assert_num_queries(1):  # the rows' columns only: nothing is read row by row
        rows = answer.rows(ScheduledStep.objects.filter(institution=clinic))
        answers = [answer.identifier(row).dataset() for row in rows]
        audited = [answer.audited(row) for row in rows]
    assert [ds.AccessionNumber for ds in answers] == ["A1", "A2", "A3"]
    assert audited == [
        (str(steps[name].pk), str(steps[name].patient_id)) for name in ("ct_morning", "ct_any_station", "dx_next_day")
    ]
    first = answers[0]
    assert (str(first.PatientName), first.IssuerOfPatientID, first.PatientBirthDate) == (
        "Wang^Fang=王^芳",
        "CLINA",
        "19610302",
    )
    item = first.ScheduledProcedureStepSequence[0]
    assert (item.Modality, item.ScheduledProcedureStepDescription, item.ScheduledPerformingPhysicianName) == (
        "CT",
        "CT chest",
        None,
    )


# The answers as imaging.worklist_query built them before it answered from the rows (main at
# 222e63a): a pydicom DataElement per asked key, from the step's model instance.


def pydicom_answer(step: ScheduledStep, q: WorklistQuery) -> Dataset:
    local = timezone.localtime(step.scheduled_at)
    top = {
        "PatientName": step.patient_name,
        "PatientID": step.patient.patient_id,
        "IssuerOfPatientID": step.patient.issuer.ae_title,
        "PatientBirthDate": step.birth_date.strftime("%Y%m%d") if step.birth_date else None,
        "PatientSex": step.sex,
        "AccessionNumber": step.accession_number,
        "RequestedProcedureID": step.requested_procedure_id,
        "RequestedProcedureDescription": step.procedure_description,
        "StudyInstanceUID": step.study_uid,
    }
    item = {
        "ScheduledStationAETitle": step.station_ae,
        "ScheduledProcedureStepStartDate": local.strftime("%Y%m%d"),
        "ScheduledProcedureStepStartTime": local.strftime("%H%M%S"),
        "Modality": step.modality,
        "ScheduledPerformingPhysicianName": step.performing_physician,
        "ScheduledProcedureStepDescription": step.procedure_description,
        "ScheduledProcedureStepID": step.step_id,
        "ScheduledProcedureStepStatus": worklist_query.DICOM_STATUS[ScheduledStep.Status(step.status)],
    }

    def filled(keywords: list[str], values: dict[str, str | None]) -> Dataset:
        ds = Dataset()
        for keyword in keywords:
            tag = tag_for_keyword(keyword)
            if tag is not None:
                vr = dictionary_VR(tag)
                found = DicomSequence() if vr == "SQ" else values.get(keyword) or None
                ds[tag] = DataElement(tag, vr, found, validation_mode=config.IGNORE)
        return ds

    ds = filled(q.keywords, top)
    ds[0x00080005] = DataElement(0x00080005, "CS", "ISO_IR 192")
    if q.step_asked:
        ds[0x00400100] = DataElement(0x00400100, "SQ", DicomSequence([filled(q.step_keywords, item)]))
    return ds


def pydicom_bytes(ds: Dataset, implicit: bool) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return out.getvalue()


BENCH_KEYS = {
    "top": {
        "PatientName": "",
        "PatientID": "",
        "AccessionNumber": "",
        "StudyInstanceUID": "",
        "RequestedProcedureID": "",
    },
    "ScheduledStationAETitle": "",
    "ScheduledProcedureStepStartDate": "",
    "ScheduledProcedureStepStartTime": "",
    "Modality": "",
    "ScheduledProcedureStepID": "",
    "ScheduledProcedureStepDescription": "",
}
QUERIES = {
    "as the bench asks": lambda: query(**BENCH_KEYS),  # type: ignore[arg-type]
    "every key we hold": lambda: query(
        top=dict.fromkeys(worklist_query._TOP_VALUES, ""), **dict.fromkeys(worklist_query._STEP_VALUES, "")
    ),
    "keys we do not hold, of several VRs": lambda: query(
        top={"PatientName": "", "AdmissionID": "", "PatientWeight": "", "PregnancyStatus": "", "Modality": ""},
        ScheduledProtocolCodeSequence=[],
        PatientName="",
        RequestedProcedureID="",
    ),
    "an ambiguous VR (pydicom writes it)": lambda: query(top={"PatientName": "", "SmallestImagePixelValue": None}),
    "no step sequence": lambda: WorklistQuery.from_identifier(Dataset.from_json({"00100010": {"vr": "PN"}})),
    "an empty step item": lambda: query(top={"PatientName": "", "PatientID": ""}),
    "a name wildcard and a date range": lambda: query(
        top={"PatientName": "wang*", "PatientBirthDate": ""},
        ScheduledProcedureStepStartDate="20300510-20300511",
        ScheduledPerformingPhysicianName="",
        ScheduledProcedureStepStatus="",
    ),
}


@pytest.fixture
def varied(clinic, steps):  # type: ignore[no-untyped-def]
    """Beside `steps`: Chinese names of both kinds, missing birth date and sex, no station."""
    order(
        clinic,
        accession_number="A5",
        patient_id="P5",
        patient_name="李^娜",
        birth_date=None,
        sex="",
        station_ae="",
        scheduled_at=at(10, 11, 30),
        procedure_description="胸部 CT 平扫",
        performing_physician="Zhang^Wei=张^伟",
    )
    order(
        clinic,
        accession_number="A6X",
        patient_id="P6",
        patient_name="",
        procedure_description="",
        scheduled_at=at(11, 9),
    )
    return steps


@pytest.mark.parametrize("make", QUERIES.values(), ids=QUERIES.keys())
def test_answers_from_rows_are_the_bytes_of_the_pydicom_built_answers(clinic, varied, make) -> None:  # type: ignore[no-untyped-def]
    q = make()
    visible = ScheduledStep.objects.filter(institution=clinic)
    answers = worklist_query.answers(q)
    rows = answers.rows(visible)
    models = list(worklist_query.find(visible, q).select_related("patient__issuer"))
    assert [answers.audited(row) for row in rows] == [(s.audit_id, s.audit_patient) for s in models]
    assert rows, "every query here matches"
    for row, step in zip(rows, models, strict=True):
        old = pydicom_answer(step, q)
        for implicit in (True, False):
            expected = pydicom_bytes(old, implicit)
            match = answers.identifier(row)
            written = match.written(implicit)
            assert (written if written is not None else pydicom_bytes(match.dataset(), implicit)) == expected
            assert pydicom_bytes(match.dataset(), implicit) == expected
            new = read_dataset(BytesIO(expected if written is None else written), implicit, True)
            assert new == read_dataset(BytesIO(expected), implicit, True)
        if "SmallestImagePixelValue" in q.criteria:
            assert answers.identifier(row).written(True) is None  # left to pydicom, whole


def test_chinese_and_empty_values_arrive_as_they_were_scheduled(clinic, varied) -> None:  # type: ignore[no-untyped-def]
    q = QUERIES["every key we hold"]()
    answers = worklist_query.answers(q)
    found = {}
    for row in answers.rows(ScheduledStep.objects.filter(institution=clinic)):
        ds = read_dataset(BytesIO(answers.identifier(row).written(False) or b""), False, True)
        ds.decode()
        found[ds.AccessionNumber] = ds
    li, blank = found["A5"], found["A6X"]
    assert (str(li.PatientName), li.PatientBirthDate, li.PatientSex) == ("李^娜", "", "")
    item = li.ScheduledProcedureStepSequence[0]
    assert item.ScheduledPerformingPhysicianName.ideographic == "张^伟"
    assert (item.ScheduledProcedureStepDescription, item.ScheduledStationAETitle) == ("胸部 CT 平扫", "")
    assert (blank.PatientName, blank.RequestedProcedureDescription) == ("", "")


# --- MPPS (imaging.worklist.mpps_*) ----------------------------------------------------------


def performed(**fields) -> PerformedStep:  # type: ignore[no-untyped-def]
    return PerformedStep(status="IN PROGRESS", **fields)


def test_mpps_moves_its_scheduled_step_in_progress_then_completed(clinic, steps) -> None:  # type: ignore[no-untyped-def]
    step = steps["ct_morning"]
    device = audit.Actor("device", "1", "CT_CLINA", clinic.pk)
    refs = (ScheduledRef(step_id=step.step_id),)
    worklist.mpps_started(
        by=device, institution=clinic, device_ae="CT_CLINA", sop_uid="1.2.3", performed=performed(scheduled=refs)
    )
    step.refresh_from_db()
    assert (step.status, step.mpps_uid) == ("in-progress", "1.2.3")
    worklist.mpps_updated(by=device, institution=clinic, sop_uid="1.2.3", performed=PerformedStep(status="COMPLETED"))
    step.refresh_from_db()
    assert step.status == "completed"
    with pytest.raises(worklist.PerformedStepError) as error:
        worklist.mpps_updated(
            by=device, institution=clinic, sop_uid="1.2.3", performed=PerformedStep(status="COMPLETED")
        )
    assert error.value.kind == worklist.FINAL


def test_mpps_discontinued_takes_the_step_off_with_the_modality_reason(clinic, steps) -> None:  # type: ignore[no-untyped-def]
    step = steps["ct_any_station"]
    device = audit.Actor("device", "1", "CT_CLINA", clinic.pk)
    refs = (ScheduledRef(accession_number="A2"),)
    worklist.mpps_started(
        by=device, institution=clinic, device_ae="CT_CLINA", sop_uid="1.2.4", performed=performed(scheduled=refs)
    )
    worklist.mpps_updated(
        by=device,
        institution=clinic,
        sop_uid="1.2.4",
        performed=PerformedStep(status="DISCONTINUED", reason="patient refused"),
    )
    step.refresh_from_db()
    assert step.status == "discontinued"
    assert step.changes.last().reason == "patient refused"


def test_mpps_of_another_institution_or_twice_is_refused(clinic, other_clinic, steps) -> None:  # type: ignore[no-untyped-def]
    device = audit.Actor("device", "1", "CT_CLINA", clinic.pk)
    refs = (ScheduledRef(accession_number="A1"),)
    worklist.mpps_started(
        by=device, institution=other_clinic, device_ae="CT_B", sop_uid="1.2.5", performed=performed(scheduled=refs)
    )
    steps["ct_morning"].refresh_from_db()
    assert steps["ct_morning"].status == "scheduled"  # clinic B's "A1" is another order
    with pytest.raises(worklist.PerformedStepError) as duplicate:
        worklist.mpps_started(
            by=device, institution=clinic, device_ae="CT_CLINA", sop_uid="1.2.5", performed=performed()
        )
    assert duplicate.value.kind == worklist.DUPLICATE
    with pytest.raises(worklist.PerformedStepError) as unknown:
        worklist.mpps_updated(
            by=device, institution=clinic, sop_uid="1.2.5", performed=PerformedStep(status="COMPLETED")
        )
    assert unknown.value.kind == worklist.UNKNOWN


@pytest.mark.parametrize(
    ("attributes", "status"),
    [
        ({}, 0x0120),
        ({"PerformedProcedureStepStatus": "COMPLETED", "ScheduledStepAttributesSequence": []}, 0x0106),
        ({"PerformedProcedureStepStatus": "DONE", "ScheduledStepAttributesSequence": []}, 0x0106),
        ({"PerformedProcedureStepStatus": "IN PROGRESS"}, 0x0120),
    ],
)
def test_a_malformed_mpps_n_create_gets_its_status(attributes, status) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    with pytest.raises(DimseFailure) as failure:
        PerformedStep.from_create(ds)
    assert failure.value.status == status


# --- the study that comes (ingest's follow-up) ------------------------------------------------


def test_a_study_with_the_accession_number_completes_its_step_in_the_follow_up(clinic, other_clinic, steps) -> None:  # type: ignore[no-untyped-def]
    study = factories.store_ct_study(clinic, slices=2, accession_number="A2", patient_id="P2")
    factories.store_ct_study(other_clinic, slices=1, accession_number="A3", patient_id="P3")
    ids = list(Instance.objects.values_list("pk", flat=True))
    tasks.render_instances(ids)
    by_accession = {s.accession_number: s for s in ScheduledStep.objects.filter(institution=clinic)}
    assert (by_accession["A2"].status, by_accession["A2"].study_id) == ("completed", study.pk)
    assert by_accession["A3"].status == "scheduled"  # clinic B's study is not clinic A's order
    assert AuditEvent.objects.filter(action="worklist.complete").count() == 1
    assert worklist.complete_from_instances(ids) == 0  # again: nothing more to do


# --- storage commitment (imaging.commitment) ----------------------------------------------------


def test_commitment_lists_what_is_held_durably_and_why_the_rest_is_not(clinic, other_clinic) -> None:  # type: ignore[no-untyped-def]
    device = alliance_services.device_create(
        institution=clinic, ae_title="CT_CLINA", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    mine = factories.store_ct_study(clinic, slices=2)
    theirs = factories.store_ct_study(other_clinic, slices=1, patient_id="P9")
    held = list(Instance.objects.filter(series__study=mine).order_by("pk"))
    gone = held[1]
    storage.dicom_storage().delete(gone.storage_key)  # indexed, but its file is not there
    other = Instance.objects.get(series__study=theirs)
    refs = (
        Reference(held[0].sop_class_uid, held[0].sop_uid),
        Reference(gone.sop_class_uid, gone.sop_uid),
        Reference("1.2.840.10008.5.1.4.1.1.7", held[0].sop_uid),
        Reference(other.sop_class_uid, other.sop_uid),
        Reference(other.sop_class_uid, "1.2.3.4.5"),
    )
    row = commitment.commitment_check(device=device, request=CommitmentRequest("1.2.3.99", refs))
    report = commitment.report_of(row, retrieve_ae="CLINA")
    assert report.committed == (refs[0],)
    assert [(f.reference, f.reason) for f in report.failed] == [
        (refs[1], 0x0112),
        (refs[2], 0x0119),
        (refs[3], 0x0112),  # another institution's: not ours to commit to
        (refs[4], 0x0112),
    ]
    info = report.event_information()
    assert report.event_type == 2 and info.TransactionUID == "1.2.3.99" and info.RetrieveAETitle == "CLINA"
    assert [item.FailureReason for item in info.FailedSOPSequence] == [0x0112, 0x0119, 0x0112, 0x0112]


@pytest.mark.parametrize(
    ("action_type", "fields", "status"),
    [
        (2, {"TransactionUID": "1.2.3"}, 0x0123),
        (1, {}, 0x0115),
        (1, {"TransactionUID": "not a uid"}, 0x0115),
        (1, {"TransactionUID": "1.2.3"}, 0x0115),  # no Referenced SOP Sequence
    ],
)
def test_a_malformed_commitment_request_gets_its_status(action_type, fields, status) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset()
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    with pytest.raises(DimseFailure) as failure:
        CommitmentRequest.from_action(action_type, ds)
    assert failure.value.status == status

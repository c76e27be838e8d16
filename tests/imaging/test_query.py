"""PS3.4 C.2.2.2 matching over the index, as C-FIND and QIDO-RS use it."""

from __future__ import annotations

from datetime import date, time
from types import SimpleNamespace

import pytest

from alliance import audit
from alliance.access import Principal
from imaging import access, grants
from imaging.models import Patient
from imaging.query import InvalidCriterion, Level, find, identifier, unsupported_keys
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def index(db):  # type: ignore[no-untyped-def]
    alliance = factories.AllianceFactory(name="Query Alliance")
    w = SimpleNamespace(
        clin_a=factories.make_institution(alliance=alliance, ae_title="CLINA"),
        clin_b=factories.make_institution(alliance=alliance, ae_title="CLINB"),
    )
    doe = Patient.objects.create(issuer=w.clin_a, patient_id="1001", name="DOE^JOHN", birth_date=date(1960, 5, 1))
    wang = Patient.objects.create(issuer=w.clin_a, patient_id="1002", name="Wang^XiaoDong=王^小东", sex="M")
    other = Patient.objects.create(issuer=w.clin_b, patient_id="1001", name="DOE^JANE")
    ct = factories.StudyFactory(
        institution=w.clin_a,
        patient=doe,
        study_uid="1.2.3.1",
        study_date=date(2024, 3, 1),
        study_time=time(10, 30, 15),
        modalities="CT\\SR",
        accession_number="ACC1",
        description="Chest CT",
        series=0,
    )
    factories.SeriesFactory(study=ct, series_uid="1.2.3.1.1", modality="CT", instances=3)
    factories.SeriesFactory(study=ct, series_uid="1.2.3.1.2", modality="SR", instances=1)
    mr = factories.StudyFactory(
        institution=w.clin_a,
        patient=wang,
        study_uid="1.2.3.2",
        study_date=date(2024, 6, 15),
        study_time=time(8, 0),
        modalities="MR",
        accession_number="",
        description="Head MR",
        series=0,
    )
    factories.SeriesFactory(study=mr, series_uid="1.2.3.2.1", modality="MR", instances=2)
    b = factories.StudyFactory(
        institution=w.clin_b,
        patient=other,
        study_uid="1.2.3.3",
        study_date=date(2024, 3, 1),
        accession_number="",
        description="",
        series=0,
    )
    factories.SeriesFactory(study=b, series_uid="1.2.3.3.1", modality="CT", instances=1)
    device_a = SimpleNamespace(active=True, institution=w.clin_a, institution_id=w.clin_a.pk)
    visible = access.studies_visible_to(Principal.for_device(device_a))  # type: ignore[arg-type]
    return SimpleNamespace(world=w, ct=ct, mr=mr, b=b, doe=doe, wang=wang, visible=visible)


def uids(rows) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r.study_uid for r in rows)


def test_universal_match_returns_only_visible_studies(index) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"StudyInstanceUID": ""}, index.visible)) == ["1.2.3.1", "1.2.3.2"]
    assert uids(find(Level.STUDY, {"PatientName": "*"}, index.visible)) == ["1.2.3.1", "1.2.3.2"]


def test_single_value_match_on_patient_id_does_not_cross_issuers(index) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"PatientID": "1001"}, index.visible)) == ["1.2.3.1"]


def test_person_name_matches_case_insensitively_with_wildcards(index) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"PatientName": "doe^john"}, index.visible)) == ["1.2.3.1"]
    assert uids(find(Level.STUDY, {"PatientName": "wang*"}, index.visible)) == ["1.2.3.2"]
    assert uids(find(Level.STUDY, {"PatientName": "*王^小?"}, index.visible)) == ["1.2.3.2"]
    assert uids(find(Level.STUDY, {"PatientName": "D?E*"}, index.visible)) == ["1.2.3.1"]


def test_other_strings_match_case_sensitively(index) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"StudyDescription": "Chest*"}, index.visible)) == ["1.2.3.1"]
    assert uids(find(Level.STUDY, {"StudyDescription": "chest*"}, index.visible)) == []


def test_wildcard_characters_of_regular_expressions_are_literal(index) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"StudyDescription": "Chest.C*"}, index.visible)) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240301", ["1.2.3.1"]),
        ("20240101-20240401", ["1.2.3.1"]),
        ("20240401-", ["1.2.3.2"]),
        ("-20240615", ["1.2.3.1", "1.2.3.2"]),
        ("2024.06.15", ["1.2.3.2"]),
    ],
)
def test_date_single_and_range_matching(index, value, expected) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"StudyDate": value}, index.visible)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1030", ["1.2.3.1"]), ("0900-", ["1.2.3.1"]), ("-0800", ["1.2.3.2"]), ("080000-103015", ["1.2.3.1", "1.2.3.2"])],
)
def test_time_matching_covers_the_period_a_partial_time_names(index, value, expected) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"StudyTime": value}, index.visible)) == expected


@pytest.mark.parametrize(
    ("keyword", "value"), [("StudyDate", "2024-03"), ("StudyDate", "yesterday"), ("StudyTime", "25")]
)
def test_malformed_dates_and_times_name_the_key(index, keyword, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidCriterion) as caught:
        list(find(Level.STUDY, {keyword: value}, index.visible))
    assert caught.value.keyword == keyword


def test_list_of_uids_matches_any(index) -> None:  # type: ignore[no-untyped-def]
    found = find(Level.STUDY, {"StudyInstanceUID": "1.2.3.1\\1.2.3.2\\1.2.3.3"}, index.visible)
    assert uids(found) == ["1.2.3.1", "1.2.3.2"]


def test_modalities_in_study_matches_any_of_its_values(index) -> None:  # type: ignore[no-untyped-def]
    assert uids(find(Level.STUDY, {"ModalitiesInStudy": "SR"}, index.visible)) == ["1.2.3.1"]
    assert uids(find(Level.STUDY, {"ModalitiesInStudy": "MR\\SR"}, index.visible)) == ["1.2.3.1", "1.2.3.2"]
    assert uids(find(Level.STUDY, {"ModalitiesInStudy": "C"}, index.visible)) == []


def test_series_level_filters_on_study_and_series_keys(index) -> None:  # type: ignore[no-untyped-def]
    rows = find(Level.SERIES, {"StudyInstanceUID": "1.2.3.1", "Modality": "CT"}, index.visible)
    assert [s.series_uid for s in rows] == ["1.2.3.1.1"]
    assert [s.series_uid for s in find(Level.SERIES, {"SeriesNumber": "2"}, index.visible)] == ["1.2.3.1.2"]


def test_image_level_lists_instances_in_order(index) -> None:  # type: ignore[no-untyped-def]
    rows = find(Level.IMAGE, {"SeriesInstanceUID": "1.2.3.1.1"}, index.visible)
    assert [i.sop_uid for i in rows] == ["1.2.3.1.1.1", "1.2.3.1.1.2", "1.2.3.1.1.3"]
    assert list(find(Level.IMAGE, {"SeriesInstanceUID": "1.2.3.3.1"}, index.visible)) == []


def test_patient_level_counts_only_what_the_caller_sees(index) -> None:  # type: ignore[no-untyped-def]
    grant_b_study_to_clinic_a(index)
    rows = list(find(Level.PATIENT, {"PatientID": "1001"}, index.visible))
    assert sorted(p.issuer.ae_title for p in rows) == ["CLINA", "CLINB"]
    ds = identifier(
        next(p for p in rows if p.issuer.ae_title == "CLINA"),
        Level.PATIENT,
        [
            "PatientName",
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances",
        ],
    )
    assert (ds.NumberOfPatientRelatedStudies, ds.NumberOfPatientRelatedSeries) == (1, 2)
    assert ds.NumberOfPatientRelatedInstances == 4


def grant_b_study_to_clinic_a(index) -> None:  # type: ignore[no-untyped-def]
    grants.grant_study(
        study=index.b, grantee=grants.Grantee.institution(index.world.clin_a), basis="consult:1", by=audit.SYSTEM
    )


def test_granted_study_becomes_visible(index) -> None:  # type: ignore[no-untyped-def]
    grant_b_study_to_clinic_a(index)
    assert uids(find(Level.STUDY, {}, index.visible)) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]


def test_identifier_returns_requested_keys_with_counts_and_empty_unknowns(index) -> None:  # type: ignore[no-untyped-def]
    row = find(Level.STUDY, {"StudyInstanceUID": "1.2.3.1"}, index.visible).get()
    keys = [
        "StudyInstanceUID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "InstitutionName",
        "SeriesInstanceUID",
    ]
    ds = identifier(row, Level.STUDY, keys)
    assert ds.QueryRetrieveLevel == "STUDY"
    assert (ds.StudyDate, ds.StudyTime) == ("20240301", "103015")
    assert list(ds.ModalitiesInStudy) == ["CT", "SR"]
    assert (ds.NumberOfStudyRelatedInstances, ds.NumberOfStudyRelatedSeries) == (4, 2)
    assert ds["InstitutionName"].is_empty and ds["SeriesInstanceUID"].is_empty
    assert str(ds.PatientName) == "DOE^JOHN"


def test_unsupported_keys_name_what_the_index_cannot_answer() -> None:
    assert unsupported_keys(Level.STUDY, ["PatientName", "InstitutionName", "Modality", "QueryRetrieveLevel"]) == [
        "InstitutionName",
        "Modality",
    ]
    assert unsupported_keys(Level.SERIES, ["StudyDate", "Modality", "NumberOfPatientRelatedStudies"]) == [
        "NumberOfPatientRelatedStudies"
    ]


def test_study_query_has_no_n_plus_one(index, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_max_num_queries(1):
        rows = list(find(Level.IMAGE, {}, index.visible))
        for row in rows:
            identifier(row, Level.IMAGE, ["PatientID", "IssuerOfPatientID", "StudyDate", "Modality", "SOPInstanceUID"])
    assert len(rows) == 6

"""Making, editing, publishing and withdrawing a teaching case (consults.teaching.services)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import numpy as np
import pydicom
import pytest
from django.core.exceptions import ValidationError

from alliance.access import AccessDenied
from alliance.models import AuditEvent
from consults.teaching import deid, services
from consults.teaching.models import Cleared, Status, TeachingImage
from demo import synthetic
from imaging import storage
from imaging.models import Instance
from tests.factories import store_ct_study
from tests.teaching.conftest import PATIENT_ID, ingest, make_case, principal, published, ready

pytestmark = pytest.mark.django_db


def read(image: TeachingImage) -> pydicom.Dataset:
    with storage.open_instance(image) as handle:  # type: ignore[arg-type]
        return pydicom.dcmread(handle)


def radiograph(t: SimpleNamespace) -> Any:
    """A chest radiograph (DX: flagged for burned-in text) of the hospital, 128 x 110 pixels."""
    patient = synthetic.PatientInfo("H-5150", "Li^Na=李^娜", dt.date(1961, 5, 2), "F")
    info = synthetic.StudyInfo(
        seed="teaching-dx",
        patient=patient,
        date=dt.date(2026, 5, 1),
        accession_number="DX-77",
        description="Chest PA",
        institution_name="Lead Hospital",
    )
    return ingest([synthetic.chest_radiograph(info, rows=128, columns=110)], t.world.hosp)


def test_making_a_case_copies_the_series_de_identified_under_its_own_prefix(teaching: Any) -> None:
    case = make_case(teaching)
    images = list(case.images.all())
    assert case.status == Status.DRAFT and len(images) == 3
    original = teaching.study
    for image in images:
        assert image.storage_key.startswith(f"teaching/{case.pk}/")
        ds = read(image)
        assert ds.PatientName == "" and ds.PatientID == "ANONYMIZED" and ds.get("AccessionNumber", "") == ""
        assert ds.StudyInstanceUID == deid.keyed_uid(original.study_uid) == image.study_uid
        assert ds.PatientIdentityRemoved == "YES" and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113105"]
    assert len({i.series_uid for i in images}) == 1
    assert not Instance.objects.filter(storage_key__startswith="teaching/").exists()  # no patient study


def test_the_same_study_copied_twice_gets_the_same_uids(teaching: Any) -> None:
    first, second = make_case(teaching), make_case(teaching)
    assert sorted(first.images.values_list("sop_uid", flat=True)) == sorted(
        second.images.values_list("sop_uid", flat=True)
    )


def test_only_a_specialist_who_may_read_the_study_makes_a_case(teaching: Any) -> None:
    w = teaching.world
    far_study = store_ct_study(w.clin_b, slices=1)
    series = far_study.series.get().series_uid
    with pytest.raises(AccessDenied):
        services.case_create(by=teaching.by, study=far_study, series_uids=[series], key_sop_uids=[], title="x")
    own = store_ct_study(w.clin_a, slices=1)
    with pytest.raises(AccessDenied):  # a clinician of the study's own clinic
        services.case_create(
            by=principal(w.owner), study=own, series_uids=[own.series.get().series_uid], key_sop_uids=[], title="x"
        )


def test_nothing_chosen_or_no_title_is_a_clear_error(teaching: Any) -> None:
    with pytest.raises(ValidationError) as nothing:
        services.case_create(by=teaching.by, study=teaching.study, series_uids=[], key_sop_uids=[], title="x")
    assert "series" in nothing.value.message_dict
    with pytest.raises(ValidationError) as untitled:
        make_case(teaching, title=" ")
    assert "title" in untitled.value.message_dict


def test_publishing_asks_for_the_text_and_the_tags(teaching: Any) -> None:
    case = make_case(teaching)
    with pytest.raises(ValidationError) as refused:
        services.case_publish(case=case, by=teaching.by)
    assert set(refused.value.message_dict) == {"question", "findings", "diagnosis", "body_part"}
    case = ready(case, teaching.by)
    services.case_publish(case=case, by=teaching.by)
    case.refresh_from_db()
    assert case.status == Status.PUBLISHED and case.published_at is not None


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("findings", "张伟 presented with cough."),
        ("discussion", "Patient H-7781 was followed up."),
        ("diagnosis", "Pneumonia (accession ACC-9)."),
        ("question", "Seen at Lead Hospital: what is it?"),
        ("title", "Mr Zhang's chest"),
    ],
)
def test_publishing_refuses_text_that_names_the_patient(teaching: Any, field: str, text: str) -> None:
    case = ready(make_case(teaching), teaching.by, **{field: text})
    with pytest.raises(ValidationError) as refused:
        services.case_publish(case=case, by=teaching.by)
    assert field in refused.value.message_dict
    assert PATIENT_ID not in str(refused.value)  # the message names the field, not the value


def test_words_that_only_contain_an_identifier_are_not_refused(teaching: Any) -> None:
    case = ready(make_case(teaching), teaching.by, discussion="The liver and the wall of the zhangjiang clinic study")
    assert "discussion" not in services.publish_problems(case)


def test_a_flagged_radiograph_waits_for_a_check_or_a_mask(teaching: Any) -> None:
    study = radiograph(teaching)
    case = services.case_create(
        by=teaching.by, study=study, series_uids=[study.series.get().series_uid], key_sop_uids=[], title="A film"
    )
    image = case.images.get()
    assert image.burned_in == "modality" and image.needs_clearing
    case = ready(case, teaching.by, modality="DX")
    assert "images" in services.publish_problems(case)
    services.images_confirm(case=case, by=teaching.by, images=[image])
    image.refresh_from_db()
    assert image.cleared == Cleared.CONFIRMED and "images" not in services.publish_problems(case)


def test_a_mask_blanks_the_rectangle_in_a_new_copy(teaching: Any, django_capture_on_commit_callbacks: Any) -> None:
    study = radiograph(teaching)
    case = services.case_create(
        by=teaching.by, study=study, series_uids=[study.series.get().series_uid], key_sop_uids=[], title="A film"
    )
    image = case.images.get()
    old_key, old_uid = image.storage_key, image.sop_uid
    with django_capture_on_commit_callbacks(execute=True):
        services.image_mask(case=case, image=image, by=teaching.by, rect=(0, 0, 40, 20))
    image.refresh_from_db()
    ds = read(image)
    pixels = ds.pixel_array
    assert image.sop_uid != old_uid and ds.SOPInstanceUID == image.sop_uid
    assert (pixels[:20, :40] == pixels.min()).all() and pixels[60:, 60:].max() > pixels.min()
    assert ds.BurnedInAnnotation == "NO" and "113101" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert image.cleared == Cleared.MASKED and image.masks == [[0, 0, 40, 20]]
    assert storage.local_path_for_key(old_key) is not None and not storage.local_path_for_key(old_key).exists()
    with pytest.raises(ValidationError):
        services.image_mask(case=case, image=image, by=teaching.by, rect=(100, 0, 40, 20))  # beyond 110 columns


def test_only_the_author_edits_and_publishes(teaching: Any) -> None:
    case = make_case(teaching)
    other = principal(teaching.world.outsider_specialist)
    with pytest.raises(AccessDenied):
        ready(case, other)
    with pytest.raises(AccessDenied):
        services.case_publish(case=case, by=other)


def test_withdrawing_needs_a_reason_and_the_author_or_the_alliance_admin(teaching: Any) -> None:
    case = published(teaching)
    w = teaching.world
    with pytest.raises(AccessDenied):
        services.case_unpublish(case=case, by=principal(w.hosp_admin), reason="old")
    with pytest.raises(ValidationError):
        services.case_unpublish(case=case, by=teaching.by, reason=" ")
    services.case_unpublish(case=case, by=principal(w.alliance_admin), reason="An error in the findings")
    case.refresh_from_db()
    assert case.status == Status.UNPUBLISHED and case.unpublish_reason == "An error in the findings"
    ready(case, teaching.by, findings="Corrected findings.")  # the author edits it again
    services.case_publish(case=case, by=teaching.by)


def test_authoring_publishing_and_withdrawing_are_audited(teaching: Any) -> None:
    case = published(teaching)
    services.case_unpublish(case=case, by=teaching.by, reason="redo")
    actions = list(
        AuditEvent.objects.filter(object_type="teaching_case", object_id=str(case.pk))
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["teaching.create", "teaching.edit", "teaching.publish", "teaching.unpublish"]
    created = AuditEvent.objects.get(action="teaching.create")
    assert created.patient == str(teaching.study.patient_id) and created.detail["study"] == teaching.study.study_uid
    assert created.actor_name == "specialist"


def test_discarding_a_draft_removes_its_copies(teaching: Any, django_capture_on_commit_callbacks: Any) -> None:
    case = make_case(teaching)
    keys = list(case.images.values_list("storage_key", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        services.case_discard(case=case, by=teaching.by)
    assert not any(storage.local_path_for_key(k).exists() for k in keys)  # type: ignore[union-attr]


def test_leaving_a_series_out_removes_its_copies(teaching: Any, django_capture_on_commit_callbacks: Any) -> None:
    case = make_case(teaching)
    series = case.images.first().series_uid
    with django_capture_on_commit_callbacks(execute=True):
        assert services.series_remove(case=case, by=teaching.by, series_uid=series) == 3
    assert not case.images.exists()
    assert "images" in services.publish_problems(ready(case, teaching.by))


def test_masked_pixels_keep_their_range(teaching: Any) -> None:
    """MONOCHROME2 blanks to the darkest value the image holds, not to an arbitrary zero."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPInstanceUID = "2.25.1"
    ds.set_pixel_data(np.full((8, 8), 500, dtype=np.int16), "MONOCHROME2", 12)
    ds.PixelData = (np.arange(64, dtype=np.int16).reshape(8, 8) + 100).tobytes()
    deid.apply_masks(ds, [(0, 0, 2, 2)])
    assert ds.pixel_array[0, 0] == 100 and ds.pixel_array[7, 7] == 163


def test_a_key_image_is_copied_alone_and_opens_the_viewer(teaching: Any) -> None:
    from consults.teaching.views import viewer_config_for

    study = store_ct_study(teaching.world.hosp, slices=4, patient_id="H-1")
    key = study.series.get().instances.order_by("instance_number")[2]
    case = services.case_create(by=teaching.by, study=study, series_uids=[], key_sop_uids=[key.sop_uid], title="Key")
    image = case.images.get()
    assert image.is_key and image.sop_uid == deid.keyed_uid(key.sop_uid)
    config = viewer_config_for(case)
    assert config is not None and config["start_sop_uid"] == image.sop_uid and config["first"]["count"] == 1


def test_a_study_s_key_images_are_marked_within_a_chosen_series(teaching: Any) -> None:
    series = teaching.study.series.get()
    key = series.instances.order_by("instance_number").last()
    case = services.case_create(
        by=teaching.by, study=teaching.study, series_uids=[series.series_uid], key_sop_uids=[key.sop_uid], title="k"
    )
    assert case.images.count() == 3 and list(
        case.images.filter(is_key=True).values_list("instance_number", flat=True)
    ) == [key.instance_number]


def test_the_kept_list_of_diseases_is_seeded_and_kept_in_django_admin(teaching: Any) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from consults.teaching.models import Disease

    assert Disease.objects.filter(active=True).count() >= 50 and Disease.objects.get(code="lung-cancer").icd10 == "C34"
    operator = get_user_model().objects.create_superuser("operator", "op@example.org", "Correct-horse-42!")
    client = Client()
    client.force_login(operator)
    page = client.get("/django-admin/teaching/disease/?q=pneumonia")
    assert page.status_code == 200 and "community-acquired-pneumonia" in page.content.decode()

"""The teaching pages and the viewer's DICOMweb for a case, as the alliance's doctors use them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from alliance import audit
from alliance import services as alliance_services
from alliance.models import AuditEvent
from consults.teaching import services
from consults.teaching.models import CaseView, Comment, QuizAttempt, Status
from tests.conftest import client_for
from tests.teaching.conftest import make_case, principal, published

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/dicom+json"}
EN = {"HTTP_ACCEPT_LANGUAGE": "en"}


def test_another_clinic_s_doctor_finds_the_published_case_in_the_library(teaching: Any) -> None:
    case = published(teaching)
    make_case(teaching, title="A draft nobody else sees")
    page = client_for(teaching.world.stranger).get("/teaching/", HTTP_ACCEPT_LANGUAGE="en")
    body = page.content.decode()
    assert page.status_code == 200 and case.title in body and "A draft nobody else sees" not in body
    cards = body[body.index('id="case-list"') :]
    assert case.answer.name not in cards and case.diagnosis not in cards  # the quiz's answer stays hidden
    listed = AuditEvent.objects.get(action="teaching.list")
    assert listed.object_id == str(case.pk) and listed.actor_name == "stranger" and listed.patient == ""


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("q=opacity", True),
        ("q=fracture", False),
        ("modality=CT&body_part=chest", True),
        ("modality=MR", False),
        ("difficulty=advanced", False),
        ("quiz=on", True),
    ],
)
def test_the_library_searches_by_text_and_tags(teaching: Any, query: str, found: bool) -> None:
    case = published(teaching)
    body = client_for(teaching.world.stranger).get(f"/teaching/?{query}").content.decode()
    assert (case.title in body) is found


def test_the_library_searches_by_disease(teaching: Any) -> None:
    case = published(teaching)
    disease = case.diseases.get()
    client = client_for(teaching.world.stranger)
    assert case.title in client.get(f"/teaching/?disease={disease.pk}").content.decode()
    other = case.distractors.exclude(pk=disease.pk).first()
    assert case.title not in client.get(f"/teaching/?disease={other.pk}").content.decode()


def test_the_quiz_hides_the_diagnosis_until_the_doctor_answers(teaching: Any) -> None:
    case = published(teaching)
    client = client_for(teaching.world.stranger)
    before = client.get(f"/teaching/{case.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'id="quiz-form"' in before and "What do you see?" in before
    assert case.diagnosis not in before and case.findings not in before and 'id="thread"' not in before
    answered = client.post(f"/teaching/{case.pk}/answer/", {"choice": case.answer_id}, follow=True)
    after = answered.content.decode()
    assert case.diagnosis in after and 'id="quiz-form"' not in after and "tc-right" in after
    attempt = QuizAttempt.objects.get()
    assert attempt.correct and attempt.doctor == teaching.world.stranger
    again = client.post(f"/teaching/{case.pk}/answer/", {"choice": case.answer_id}, follow=True, **EN)
    assert QuizAttempt.objects.count() == 1 and "already" in again.content.decode()


def test_a_wrong_answer_scores_nothing_and_shows_the_right_one(teaching: Any) -> None:
    case = published(teaching)
    wrong = case.distractors.first()
    client = client_for(teaching.world.stranger)
    answered = client.post(f"/teaching/{case.pk}/answer/", {"choice": wrong.pk}, follow=True, HTTP_ACCEPT_LANGUAGE="en")
    page = answered.content.decode()
    assert "tc-wrong" in page and case.answer.name in page
    assert not QuizAttempt.objects.get().correct
    library = client.get("/teaching/").content.decode()
    assert "0 / 1" in library


def test_showing_the_answer_counts_as_not_answered(teaching: Any) -> None:
    case = published(teaching)
    client = client_for(teaching.world.stranger)
    page = client.post(f"/teaching/{case.pk}/answer/", {"reveal": "1"}, follow=True).content.decode()
    assert case.diagnosis in page
    attempt = QuizAttempt.objects.get()
    assert attempt.choice is None and not attempt.correct
    assert client.post(f"/teaching/{case.pk}/answer/", {"choice": case.answer_id}).status_code == 302
    assert QuizAttempt.objects.count() == 1


def test_a_choice_not_offered_is_refused(teaching: Any) -> None:
    case = published(teaching)
    from consults.teaching.models import Disease

    outside = Disease.objects.exclude(pk__in=[case.answer_id, *case.distractors.values_list("pk", flat=True)]).first()
    client = client_for(teaching.world.stranger)
    page = client.post(f"/teaching/{case.pk}/answer/", {"choice": outside.pk}, follow=True, **EN).content.decode()
    assert "Choose one of the answers offered" in page and not QuizAttempt.objects.exists()


def test_quiz_mode_goes_to_the_next_unanswered_quiz(teaching: Any) -> None:
    first, second = published(teaching), published(teaching)
    client = client_for(teaching.world.stranger)
    assert client.get("/teaching/quiz/")["Location"] == f"/teaching/{first.pk}/"
    client.post(f"/teaching/{first.pk}/answer/", {"choice": first.answer_id})
    assert client.get("/teaching/quiz/")["Location"] == f"/teaching/{second.pk}/"
    client.post(f"/teaching/{second.pk}/answer/", {"reveal": "1"})
    done = client.get("/teaching/quiz/", HTTP_ACCEPT_LANGUAGE="en")
    assert done.status_code == 200 and "No quiz waits for you" in done.content.decode()


def test_reading_a_case_is_counted_and_audited_without_a_patient(teaching: Any) -> None:
    case = published(teaching)
    client = client_for(teaching.world.stranger)
    client.get(f"/teaching/{case.pk}/")
    client.get(f"/teaching/{case.pk}/")
    assert CaseView.objects.get(doctor=teaching.world.stranger).count == 2
    events = AuditEvent.objects.filter(action="teaching.view", actor_name="stranger")
    assert events.count() == 2 and set(events.values_list("patient", flat=True)) == {""}


def test_an_author_reading_their_own_case_is_not_counted(teaching: Any) -> None:
    case = published(teaching)
    client_for(teaching.author).get(f"/teaching/{case.pk}/")
    assert not CaseView.objects.exists()
    assert AuditEvent.objects.filter(action="teaching.view", actor_name="specialist").exists()


def test_the_library_lists_many_cases_in_a_fixed_number_of_queries(teaching: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(teaching.world.stranger)

    def queries() -> int:
        with CaptureQueriesContext(connection) as seen:
            assert client.get("/teaching/").status_code == 200
        return len(seen)

    first = published(teaching)
    client.post(f"/teaching/{first.pk}/answer/", {"reveal": "1"})
    one = queries()
    for _ in range(4):
        published(teaching)
    assert queries() == one


def test_the_thread_is_for_those_who_answered(teaching: Any) -> None:
    case = published(teaching)
    client = client_for(teaching.world.stranger)
    client.post(f"/teaching/{case.pk}/answer/", {"reveal": "1"})
    client.post(f"/teaching/{case.pk}/comments/", {"body": "Why not tuberculosis?"})
    page = client.get(f"/teaching/{case.pk}/").content.decode()
    assert "Why not tuberculosis?" in page and Comment.objects.get().author == teaching.world.stranger
    assert AuditEvent.objects.filter(action="teaching.comment").exists()


def test_a_draft_is_the_author_s_alone(teaching: Any) -> None:
    case = make_case(teaching)
    w = teaching.world
    assert client_for(teaching.author).get(f"/teaching/{case.pk}/").status_code == 200
    assert client_for(teaching.author).get(f"/teaching/{case.pk}/edit/").status_code == 200
    for doctor in (w.stranger, w.outsider_specialist, w.alliance_admin, w.hosp_admin):
        client = client_for(doctor)
        assert client.get(f"/teaching/{case.pk}/").status_code == 404
        assert client.get(f"/teaching/{case.pk}/edit/").status_code == 404
        images = case.images.first()
        url = f"/teaching/{case.pk}/dicomweb/studies/{images.study_uid}/series"
        assert client.get(url, **JSON).status_code == 404


def test_the_author_publishes_from_the_edit_page(teaching: Any) -> None:
    from tests.teaching.conftest import ready

    case = ready(make_case(teaching), teaching.by)
    client = client_for(teaching.author)
    unconfirmed = client.post(f"/teaching/{case.pk}/publish/", follow=True, **EN)
    case.refresh_from_db()
    assert case.status == Status.DRAFT and "Confirm that nothing" in unconfirmed.content.decode()
    response = client.post(f"/teaching/{case.pk}/publish/", {"confirm": "1"})
    case.refresh_from_db()
    assert response.status_code == 302 and case.status == Status.PUBLISHED


def test_the_edit_page_saves_and_says_what_stops_publishing(teaching: Any) -> None:
    case = make_case(teaching)
    client = client_for(teaching.author)
    page = client.get(f"/teaching/{case.pk}/edit/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'id="publish-problems"' in page and "Teaching question" in page
    saved = client.post(
        f"/teaching/{case.pk}/edit/",
        {"title": "Renamed", "question": "Zhang Wei's film?", "difficulty": "advanced", "modality": "CT"},
        follow=True,
        **EN,
    )
    case.refresh_from_db()
    assert case.title == "Renamed" and case.difficulty == "advanced"
    assert "names the patient" in saved.content.decode()  # the question names the patient


def test_a_quiz_needs_two_to_five_wrong_choices(teaching: Any) -> None:
    case = make_case(teaching)
    from consults.teaching.models import Disease

    answer = Disease.objects.first()
    page = client_for(teaching.author).post(
        f"/teaching/{case.pk}/edit/",
        {"title": "t", "difficulty": "intermediate", "answer": answer.pk},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert page.status_code == 200 and "A quiz offers 2 to 5 wrong choices" in page.content.decode()


def test_making_a_case_from_a_study_page(teaching: Any) -> None:
    client = client_for(teaching.author)
    study = teaching.study
    page = client.get(f"/teaching/new/?study={study.study_uid}", HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200 and "Copy the images and make a draft" in page.content.decode()
    assert AuditEvent.objects.filter(action="study.view", object_id=study.study_uid).exists()
    series = study.series.get().series_uid
    made = client.post("/teaching/new/", {"study": study.study_uid, "title": "From the study page", "series": [series]})
    assert made.status_code == 302 and made["Location"].endswith("/edit/")
    assert 'id="make-teaching-case"' in client.get(f"/imaging/studies/{study.study_uid}/").content.decode()


def test_a_clinician_or_a_stranger_cannot_make_a_case(teaching: Any) -> None:
    study = teaching.study
    assert client_for(teaching.world.owner).get(f"/teaching/new/?study={study.study_uid}").status_code == 403
    # a specialist who may not read the study: the same 404 as a missing one, the refusal audited
    other = teaching.world.outsider_specialist
    clin_study = make_foreign_study(teaching)
    assert client_for(other).get(f"/teaching/new/?study={clin_study.study_uid}").status_code == 404
    assert AuditEvent.objects.filter(outcome="denied", object_id=clin_study.study_uid).exists()


def make_foreign_study(teaching: Any) -> Any:
    from tests.factories import store_ct_study

    return store_ct_study(teaching.world.clin_b, slices=1)


def test_the_module_switched_off_hides_the_pages_and_the_menu_entry(teaching: Any) -> None:
    case = published(teaching)
    w = teaching.world
    client = client_for(w.stranger)
    assert 'id="nav-teaching"' in client.get("/").content.decode()
    modules = [m for m in alliance_services.ALL_MODULES if m != "teaching"]
    alliance_services.institution_update(institution=w.clin_b, modules=modules, by=audit.SYSTEM)
    assert client.get("/teaching/").status_code == 404
    assert client.get(f"/teaching/{case.pk}/").status_code == 404
    image = case.images.first()
    assert client.get(f"/teaching/{case.pk}/dicomweb/studies/{image.study_uid}/series", **JSON).status_code == 404
    assert 'id="nav-teaching"' not in client.get("/").content.decode()
    assert client_for(w.colleague).get("/teaching/").status_code == 200  # clinic A keeps it


def test_the_library_speaks_chinese(teaching: Any) -> None:
    published(teaching)
    page = client_for(teaching.world.stranger).get("/teaching/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "教学病例" in page and "测验模式" in page


# --- the viewer's DICOMweb ------------------------------------------------------------------


def test_the_case_page_gives_the_viewer_the_case_s_dicomweb(teaching: Any) -> None:
    case = published(teaching)
    page = client_for(teaching.world.stranger).get(f"/teaching/{case.pk}/").content.decode()
    start = page.index('id="viewer-config"')
    config = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    image = case.images.order_by("instance_number").first()
    assert config["dicomweb"] == f"/teaching/{case.pk}/dicomweb" and config["study_uid"] == image.study_uid
    assert config["first"]["count"] == 3 and config["first"]["first_metadata"]["00080018"]["Value"] == [image.sop_uid]
    assert config["patient"]["id"] == "" and teaching.study.patient.patient_id not in page


def test_the_viewer_reads_the_case_s_images_through_its_dicomweb(teaching: Any) -> None:
    case = published(teaching)
    client = client_for(teaching.world.stranger)
    client.get(f"/teaching/{case.pk}/")  # opened: the reads below belong to it
    image = case.images.order_by("instance_number").first()
    root = f"/teaching/{case.pk}/dicomweb/studies/{image.study_uid}"
    series = client.get(f"{root}/series", **JSON)
    assert series.status_code == 200 and series.json()[0]["00201209"]["Value"] == [3]
    instances = client.get(f"{root}/series/{image.series_uid}/instances", **JSON).json()
    assert [i["00080018"]["Value"][0] for i in instances][0] == image.sop_uid
    metadata = client.get(f"{root}/series/{image.series_uid}/metadata", **JSON)
    text = b"".join(metadata.streaming_content).decode()
    assert metadata.status_code == 200 and image.sop_uid in text and teaching.study.study_uid not in text
    frame = client.get(
        f"{root}/series/{image.series_uid}/instances/{image.sop_uid}/frames/1",
        HTTP_ACCEPT="multipart/related; type=application/octet-stream; transfer-syntax=*",
    )
    assert frame.status_code == 200
    rendered = client.get(
        f"{root}/series/{image.series_uid}/instances/{image.sop_uid}/rendered", HTTP_ACCEPT="image/jpeg"
    )
    assert rendered.status_code == 200 and rendered["Content-Type"] == "image/jpeg"
    thumb = client.get(f"{root}/series/{image.series_uid}/thumbnail", HTTP_ACCEPT="image/jpeg")
    assert thumb.status_code == 200
    assert not AuditEvent.objects.filter(action="teaching.image").exists()  # part of the opening


def test_image_reads_without_opening_the_case_are_audited_as_teaching_reads(teaching: Any) -> None:
    case = published(teaching)
    image = case.images.first()
    client = client_for(teaching.world.stranger)
    url = f"/teaching/{case.pk}/dicomweb/studies/{image.study_uid}/series/{image.series_uid}/metadata"
    assert client.get(url, **JSON).status_code == 200
    event = AuditEvent.objects.get(action="teaching.image")
    assert event.object_id == str(case.pk) and event.patient == "" and event.detail["read"] == "dicomweb.metadata"


def test_another_case_s_pk_does_not_reach_this_case_s_images(teaching: Any) -> None:
    one, other = published(teaching), make_case(teaching)
    image = other.images.first()
    path = f"studies/{image.study_uid}/series/{image.series_uid}/instances/{image.sop_uid}/metadata"
    url = f"/teaching/{one.pk}/dicomweb/{path}"
    # the same study copied twice has the same UIDs: the published case serves its own copy
    assert client_for(teaching.world.stranger).get(url, **JSON).status_code == 200
    assert (
        client_for(teaching.world.stranger).get(url.replace(f"/{one.pk}/", f"/{other.pk}/"), **JSON).status_code == 404
    )


def test_the_library_thumbnail_is_served(teaching: Any) -> None:
    case = published(teaching)
    client = client_for(teaching.world.stranger)
    client.get("/teaching/")
    thumb = client.get(f"/teaching/{case.pk}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    assert not AuditEvent.objects.filter(action="teaching.thumbnail").exists()  # part of the listing
    assert Client().get(f"/teaching/{case.pk}/thumbnail.jpg").status_code == 302


# --- continuing education -----------------------------------------------------------------


def test_the_institution_admin_sees_who_learned_what(teaching: Any) -> None:
    w = teaching.world
    first, second = published(teaching), published(teaching)
    colleague = client_for(w.colleague)
    colleague.get(f"/teaching/{first.pk}/")
    colleague.post(f"/teaching/{first.pk}/answer/", {"choice": first.answer_id})
    colleague.get(f"/teaching/{second.pk}/")
    colleague.post(f"/teaching/{second.pk}/answer/", {"choice": second.distractors.first().pk})
    client_for(w.owner).post(f"/teaching/{first.pk}/answer/", {"reveal": "1"})
    page = client_for(w.inst_admin_a).get("/teaching/learning/", HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    body = page.content.decode()
    row = body[body.index('data-doctor="colleague"') :]
    row = row[: row.index("</tr>")]
    assert [cell.split(">")[-1] for cell in row.split("</td>")[1:5]] == ["2", "2", "1", "50%"]
    owner_row = body[body.index('data-doctor="owner"') :]
    assert [c.split(">")[-1] for c in owner_row[: owner_row.index("</tr>")].split("</td>")[1:5]] == ["0", "0", "0", "—"]
    assert "stranger" not in body  # another institution's doctor
    assert client_for(w.colleague).get("/teaching/learning/").status_code == 403


def test_the_consult_page_offers_its_reader_a_teaching_case(teaching: Any) -> None:
    from consults import services as consult_services
    from consults.models import Status as ConsultStatus

    w = teaching.world
    from tests.factories import store_ct_study

    study = store_ct_study(w.clin_a, slices=1)
    owner = principal(w.owner)
    consult = consult_services.consult_create(by=owner, studies=[study], question="Nodule?", pool=w.pool)
    consult_services.consult_request(consult=consult, by=owner)
    reader = principal(w.specialist)
    consult_services.consult_claim(consult=consult, by=reader)
    consult_services.consult_start_report(consult=consult, by=reader)
    consult_services.consult_sign(consult=consult, by=reader, findings="f", impression="i")
    consult.refresh_from_db()
    assert consult.status == ConsultStatus.COMPLETED
    client = client_for(w.specialist)
    assert 'id="make-teaching-case"' in client.get(f"/consults/{consult.pk}/").content.decode()
    picked = client.get(f"/teaching/new/?consult={consult.pk}")
    assert picked.status_code == 302 and picked["Location"] == f"/teaching/new/?study={study.study_uid}"
    assert client.get(picked["Location"]).status_code == 200
    assert (
        services.case_create(
            by=reader, study=study, series_uids=[study.series.get().series_uid], key_sop_uids=[], title="From a consult"
        ).images.count()
        == 1
    )

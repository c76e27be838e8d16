"""Safe reporting (issue 15): priority words with deadlines, signing with the password again,
two-level sign-off (书写 → 审核), and the loser of a claim race told who won."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.utils import translation
from rest_framework.test import APIClient

from alliance.access import AccessDenied, resolve_principal
from alliance.models import AuditEvent
from alliance.reauth import IdentityNotConfirmed
from consults import access, priorities, selectors, services
from consults.forms import ConsultRequestForm
from consults.models import Consult, ConsultTransition, Notification, PriorityPolicy, ReportVersion, Status
from imaging import access as imaging_access
from imaging.models import FilmLink
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import PASSWORD, make_doctor

FINDINGS = "右上肺结节，直径8毫米。"


def api_for(doctor: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(doctor.user)
    return client


def _request(doctor: Any) -> Any:
    request = RequestFactory().post("/")
    request.user = doctor.user
    return request


@pytest.fixture
def two_level(world: Any) -> SimpleNamespace:
    """The pool with two-level sign-off: world.specialist is the junior, a senior reviews."""
    senior = make_doctor(institution=world.hosp, roles=["specialist"], username="senior", title="主任医师")
    other = make_doctor(institution=world.hosp, roles=["specialist"], username="member")
    world.specialist.title = "住院医师"
    world.specialist.save()
    world.pool.members.add(senior, other)
    world.pool.reviewers.add(senior)
    world.pool.two_level_signoff = True
    world.pool.save()
    return SimpleNamespace(senior=senior, member=other)


def _sign(world: Any, consult: Consult) -> ReportVersion:
    spec = resolve_principal(world.specialist.user)
    return services.consult_sign(consult=consult, by=spec, findings=FINDINGS, impression="Nodule 8 mm.")


# --- 1. priorities ----------------------------------------------------------------------


def test_priority_labels_read_most_urgent_first_with_their_deadline_in_chinese(world: Any) -> None:
    with translation.override("zh-hans"):
        labels = list(priorities.priority_labels(world.alliance).values())
    assert labels == ["危急 · 1 小时内", "紧急 · 2 小时内", "加急 · 8 小时内", "常规 · 24 小时内"]


def test_priority_labels_in_english_keep_the_order_and_say_the_deadline(world: Any) -> None:
    with translation.override("en"):
        labels = priorities.priority_labels(world.alliance)
    assert list(labels) == ["stat", "asap", "urgent", "routine"]
    assert list(labels.values()) == [
        "STAT · within 1 hour",
        "ASAP · within 2 hours",
        "Urgent · within 8 hours",
        "Routine · within 24 hours",
    ]


def test_priority_label_takes_the_alliances_own_deadline(world: Any) -> None:
    PriorityPolicy.objects.create(
        alliance=world.alliance, priority="asap", deadline_minutes=90, claim_timeout_minutes=20
    )
    with translation.override("zh-hans"):
        assert priorities.priority_label("asap", world.alliance) == "紧急 · 90 分钟内"
        assert priorities.priority_label("urgent", world.alliance.pk) == "加急 · 8 小时内"


def test_consult_form_offers_priorities_most_urgent_first_with_deadlines(world: Any) -> None:
    form = ConsultRequestForm(principal=resolve_principal(world.owner.user))
    with translation.override("zh-hans"):
        choices = [(code, str(label)) for code, label in form.fields["priority"].choices]
    assert choices == [
        ("stat", "危急 · 1 小时内"),
        ("asap", "紧急 · 2 小时内"),
        ("urgent", "加急 · 8 小时内"),
        ("routine", "常规 · 24 小时内"),
    ]


def test_worklist_case_page_and_api_show_the_same_priority_words(world: Any) -> None:
    consult = walk(world, Status.REQUESTED, priority="asap")
    page = client_for(world.specialist).get("/consults/?tab=unclaimed", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "紧急 · 2 小时内" in page.content.decode()
    case = client_for(world.owner).get(f"/consults/{consult.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "紧急 · 2 小时内" in case.content.decode()
    body = api_for(world.owner).get(f"/api/v1/consults/{consult.pk}/", HTTP_ACCEPT_LANGUAGE="en").json()
    assert body["priority"] == "asap" and body["priority_label"] == "ASAP · within 2 hours"


def test_policy_page_lists_priorities_most_urgent_first(world: Any) -> None:
    page = client_for(world.alliance_admin).get("/consults/policy/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    places = [
        page.index(word) for word in ("危急 · 1 小时内", "紧急 · 2 小时内", "加急 · 8 小时内", "常规 · 24 小时内")
    ]
    assert places == sorted(places)


# --- 2. signing -------------------------------------------------------------------------


def test_starting_a_report_leaves_the_draft_empty_even_when_a_template_matches(world: Any) -> None:
    services.report_template_create(
        alliance=world.alliance, name="Normal chest", modality="CT", findings="未见异常。", impression="正常。",
        actor=resolve_principal(world.alliance_admin.user).actor,
    )  # fmt: skip
    consult = walk(world, Status.IN_PROGRESS)
    draft = ReportVersion.objects.get(report__consult=consult)
    assert (draft.findings, draft.impression, draft.recommendation) == ("", "", "")
    editor = client_for(world.specialist).get(f"/consults/{consult.pk}/report/").content.decode()
    assert "未见异常。</textarea>" not in editor and "Normal chest" in editor
    template_id = selectors.templates_for(consult).get().pk
    picked = client_for(world.specialist).get(f"/consults/{consult.pk}/report/?template={template_id}").content.decode()
    assert "未见异常。</textarea>" in picked
    draft.refresh_from_db()
    assert draft.findings == ""  # picking shows the text; nothing is stored until the reader saves


def test_sign_button_opens_the_confirmation_with_the_report_text_and_does_not_sign(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    client = client_for(world.specialist)
    answer = client.post(
        f"/consults/{consult.pk}/report/", {"findings": FINDINGS, "impression": "Nodule 8 mm.", "sign": "1"}
    )
    assert answer.status_code == 302 and answer["Location"] == f"/consults/{consult.pk}/sign/"
    consult.refresh_from_db()
    assert consult.status == Status.IN_PROGRESS
    page = client.get(answer["Location"]).content.decode()
    assert FINDINGS in page and 'type="password"' in page and 'id="sign-confirm"' in page


def test_wrong_password_refuses_the_signature_says_so_and_is_audited(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    services.consult_save_draft(
        consult=consult, by=resolve_principal(world.specialist.user), findings=FINDINGS, impression="Nodule."
    )
    page = client_for(world.specialist).post(
        f"/consults/{consult.pk}/sign/", {"password": "not-my-password"}, HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert page.status_code == 200 and "密码错误：未签署。" in page.content.decode()
    consult.refresh_from_db()
    assert consult.status == Status.IN_PROGRESS
    refusal = AuditEvent.objects.get(action="auth.reconfirm")
    assert refusal.outcome == AuditEvent.Outcome.FAILURE and refusal.detail["purpose"] == "consult.sign"


def test_right_password_signs_and_the_case_page_shows_signer_title_and_time(world: Any) -> None:
    world.specialist.title = "副主任医师"
    world.specialist.save()
    consult = walk(world, Status.IN_PROGRESS)
    services.consult_save_draft(
        consult=consult, by=resolve_principal(world.specialist.user), findings=FINDINGS, impression="Nodule."
    )
    client = client_for(world.specialist)
    assert client.post(f"/consults/{consult.pk}/sign/", {"password": PASSWORD}).status_code == 302
    consult.refresh_from_db()
    assert consult.status == Status.COMPLETED
    signed = ReportVersion.objects.get(report__consult=consult)
    page = client_for(world.owner).get(f"/consults/{consult.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    when = signed.signed_at.astimezone().strftime("%Y-%m-%d")
    assert f"signed by {world.specialist.display_name}" in page and "副主任医师" in page and when in page


def test_the_service_refuses_a_missing_password_before_signing(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    with pytest.raises(IdentityNotConfirmed) as refused:
        services.consult_sign_confirmed(
            request=_request(world.specialist),
            consult=consult,
            by=resolve_principal(world.specialist.user),
            secret="",
            impression="x",
        )
    assert refused.value.reason == "missing"
    assert Consult.objects.get(pk=consult.pk).status == Status.IN_PROGRESS


@pytest.mark.parametrize(("password", "code"), [("", "password_missing"), ("nope", "password_wrong")])
def test_api_sign_refuses_a_missing_or_wrong_password_with_its_code(world: Any, password: str, code: str) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    answer = api_for(world.specialist).post(
        f"/api/v1/consults/{consult.pk}/sign/", {"impression": "Nodule.", "password": password}, format="json"
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == code
    assert Consult.objects.get(pk=consult.pk).status == Status.IN_PROGRESS


def test_api_sign_with_the_password_signs_and_returns_the_signer_title(world: Any) -> None:
    world.specialist.title = "主治医师"
    world.specialist.save()
    consult = walk(world, Status.IN_PROGRESS)
    answer = api_for(world.specialist).post(
        f"/api/v1/consults/{consult.pk}/sign/", {"impression": "Nodule.", "password": PASSWORD}, format="json"
    )
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "completed" and body["report_status"] == "final"
    assert body["report"][0]["signed_by"]["title"] == "主治医师" and body["report"][0]["signed_at"]


def test_report_pdf_html_carries_signer_name_title_and_time(world: Any) -> None:
    world.specialist.title = "主任医师"
    world.specialist.save()
    consult = walk(world, Status.COMPLETED)
    case = selectors.case_detail(consult)
    with translation.override("en"):
        html = render_to_string("consults/report_pdf.html", {"consult": consult, **case})
    assert f"Signed by {world.specialist.display_name} at" in html and "主任医师" in html and "PRELIMINARY" not in html


# --- 3. two-level sign-off --------------------------------------------------------------


def test_a_juniors_signature_is_preliminary_and_tells_the_requester_and_the_reviewers(
    world: Any, two_level: Any
) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    version = _sign(world, consult)
    consult.refresh_from_db()
    assert consult.status == Status.PRELIMINARY and version.preliminary and consult.completed_at is None
    assert consult.transitions.last().action == "sign_preliminary"
    told = set(Notification.objects.filter(consult=consult, verb="sign_preliminary").values_list("user", flat=True))
    assert told == {world.owner.user_id, two_level.senior.user_id}
    assert not FilmLink.objects.filter(case=consult.basis).exists()  # the film waits for the verification


def test_a_reviewers_own_signature_is_final_at_once(world: Any, two_level: Any) -> None:
    world.pool.reviewers.add(world.specialist)
    consult = walk(world, Status.COMPLETED)
    assert consult.transitions.last().action == "sign"


def test_the_reviewer_verifies_the_report_is_final_and_the_requester_is_told_again(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    services.consult_verify(consult=consult, by=resolve_principal(two_level.senior.user))
    consult.refresh_from_db()
    assert consult.status == Status.COMPLETED and consult.completed_at is not None
    log = list(consult.transitions.values_list("action", "from_status", "to_status"))[-2:]
    assert log == [("sign_preliminary", "in-progress", "preliminary"), ("verify", "preliminary", "completed")]
    assert Notification.objects.filter(consult=consult, verb="verify", user=world.owner.user).exists()
    assert FilmLink.objects.filter(case=consult.basis).exists()


def test_a_returned_report_goes_back_to_the_junior_who_fixes_and_signs_again(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    senior = resolve_principal(two_level.senior.user)
    draft = services.consult_return_report(consult=consult, by=senior, comments="Measure the nodule on lung window.")
    consult.refresh_from_db()
    assert consult.status == Status.IN_PROGRESS and draft.number == 2 and draft.findings == FINDINGS
    assert ConsultTransition.objects.filter(consult=consult, action="return_report").get().reason.startswith("Measure")
    assert Notification.objects.filter(consult=consult, verb="return_report", user=world.specialist.user).exists()
    editor = client_for(world.specialist).get(f"/consults/{consult.pk}/report/").content.decode()
    assert "Measure the nodule on lung window." in editor
    second = _sign(world, consult)
    assert second.number == 2 and second.preliminary
    services.consult_verify(consult=consult, by=senior)
    assert Consult.objects.get(pk=consult.pk).status == Status.COMPLETED
    versions = ReportVersion.objects.filter(report__consult=consult).order_by("number")
    assert [v.review_outcome for v in versions] == ["returned", "approved"]


def test_returning_without_comments_is_refused(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    with pytest.raises(ValidationError):
        services.consult_return_report(consult=consult, by=resolve_principal(two_level.senior.user), comments=" ")


def test_a_pool_member_who_is_no_reviewer_may_not_verify(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    with pytest.raises(AccessDenied):
        services.consult_verify(consult=consult, by=resolve_principal(two_level.member.user))
    with pytest.raises(AccessDenied):
        services.consult_return_report(consult=consult, by=resolve_principal(two_level.member.user), comments="x")
    with pytest.raises(AccessDenied):
        services.consult_verify(consult=consult, by=resolve_principal(world.owner.user))  # the requester
    answer = api_for(two_level.member).post(f"/api/v1/consults/{consult.pk}/verify/", {"password": PASSWORD})
    assert answer.status_code in (403, 404)


def test_a_reviewer_may_not_verify_their_own_report(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    world.pool.reviewers.add(world.specialist)  # promoted after signing: still not their own reviewer
    with pytest.raises(AccessDenied):
        services.consult_verify(consult=consult, by=resolve_principal(world.specialist.user))
    with pytest.raises(AccessDenied):
        services.consult_return_report(consult=consult, by=resolve_principal(world.specialist.user), comments="x")


def test_verify_and_return_out_of_turn_are_409_over_the_api(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    senior = api_for(two_level.senior)
    verify = senior.post(f"/api/v1/consults/{consult.pk}/verify/", {"password": PASSWORD}, format="json")
    assert verify.status_code == 409
    back = senior.post(f"/api/v1/consults/{consult.pk}/return-report/", {"comments": "x"}, format="json")
    assert back.status_code == 409
    with pytest.raises(services.IllegalTransition):
        services.consult_verify(consult=consult, by=resolve_principal(two_level.senior.user))


def test_the_junior_cannot_sign_again_while_the_report_waits_for_review(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    with pytest.raises(services.IllegalTransition):
        _sign(world, consult)


def test_api_verify_needs_the_reviewers_password(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    senior = api_for(two_level.senior)
    wrong = senior.post(f"/api/v1/consults/{consult.pk}/verify/", {"password": "nope"}, format="json")
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "password_wrong"
    right = senior.post(f"/api/v1/consults/{consult.pk}/verify/", {"password": PASSWORD}, format="json")
    assert right.status_code == 200 and right.json()["report_status"] == "final"
    assert right.json()["report"][0]["reviews"][0]["outcome"] == "approved"


def test_the_requester_sees_preliminary_on_the_case_page_the_api_and_the_pdf(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    consult.refresh_from_db()
    page = client_for(world.owner).get(f"/consults/{consult.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert 'id="preliminary-banner"' in page and "初步报告" in page and FINDINGS in page
    body = api_for(world.owner).get(f"/api/v1/consults/{consult.pk}/").json()
    assert body["status"] == "preliminary" and body["report_status"] == "preliminary"
    assert body["report"][0]["preliminary"] is True
    with translation.override("zh-hans"):
        html = render_to_string("consults/report_pdf.html", {"consult": consult, **selectors.case_detail(consult)})
    assert 'class="watermark"' in html and 'id="preliminary-banner"' in html
    listed = api_for(world.owner).get("/api/v1/consults/?tab=reports").json()
    assert [r["report_status"] for r in listed["results"]] == ["preliminary"]


def test_the_reviewers_worklist_shows_reports_waiting_for_verification(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    senior = resolve_principal(two_level.senior.user)
    assert [c.pk for c in selectors.worklist(senior, "review")] == [consult.pk]
    assert selectors.worklist_counts(senior)["review"] == 1
    page = client_for(two_level.senior).get("/consults/?tab=review", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "待审核" in page and f"/consults/{consult.pk}/" in page
    assert selectors.worklist_counts(resolve_principal(two_level.member.user))["review"] == 0
    member_page = client_for(two_level.member).get("/consults/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "待审核" not in member_page


def test_after_a_claim_the_images_stay_with_the_claimer_and_the_reviewers_only(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    study = consult.studies.get()

    def sees(doctor: Any) -> bool:
        return imaging_access.studies_visible_to(resolve_principal(doctor.user)).filter(pk=study.pk).exists()

    assert sees(world.specialist) and sees(two_level.senior) and not sees(two_level.member)


def test_without_two_level_sign_off_a_claim_narrows_to_the_claimer_alone(world: Any) -> None:
    senior = make_doctor(institution=world.hosp, roles=["specialist"], username="senior")
    world.pool.members.add(senior)
    world.pool.reviewers.add(senior)  # a reviewer, but the pool has the setting off
    consult = walk(world, Status.ACCEPTED)
    visible = imaging_access.studies_visible_to(resolve_principal(senior.user))
    assert not visible.filter(pk=consult.studies.get().pk).exists()
    assert walk(world, Status.COMPLETED).transitions.last().action == "sign"


def test_the_case_page_offers_verify_and_return_to_the_reviewer_only(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    senior_page = client_for(two_level.senior).get(f"/consults/{consult.pk}/").content.decode()
    assert 'data-action="verify"' in senior_page and 'data-action="return_report"' in senior_page
    junior_page = client_for(world.specialist).get(f"/consults/{consult.pk}/").content.decode()
    assert 'data-action="verify"' not in junior_page


def test_verify_on_the_page_with_a_wrong_password_is_refused(world: Any, two_level: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    client = client_for(two_level.senior)
    answer = client.post(f"/consults/{consult.pk}/verify/", {"password": "nope"}, follow=True)
    assert "密码错误：未签署。" in answer.content.decode()
    assert Consult.objects.get(pk=consult.pk).status == Status.PRELIMINARY


# --- 4. the claim race ------------------------------------------------------------------


def _rival(world: Any) -> Any:
    rival = make_doctor(institution=world.hosp, roles=["specialist"], username="rival")
    world.pool.members.add(rival)
    return rival


def test_the_second_claim_is_told_who_claimed_first_in_the_service(world: Any) -> None:
    rival = _rival(world)
    consult = walk(world, Status.ACCEPTED)
    with (
        translation.override("en"),
        pytest.raises(services.IllegalTransition, match=f"already claimed by {world.specialist.display_name}"),
    ):
        services.consult_claim(consult=consult, by=resolve_principal(rival.user))


def test_the_second_claim_over_the_api_is_409_already_claimed_not_404(world: Any) -> None:
    rival = _rival(world)
    consult = walk(world, Status.ACCEPTED)  # it left the rival's view with the claim
    answer = api_for(rival).post(f"/api/v1/consults/{consult.pk}/claim/", HTTP_ACCEPT_LANGUAGE="en")
    assert (
        answer.status_code == 409
        and f"already claimed by {world.specialist.display_name}" in answer.json()["error"]["message"]
    )
    assert api_for(rival).get(f"/api/v1/consults/{consult.pk}/").status_code == 404  # nothing else is shown


def test_the_second_claim_on_the_page_says_who_claimed_and_returns_to_the_worklist(world: Any) -> None:
    rival = _rival(world)
    consult = walk(world, Status.ACCEPTED)
    answer = client_for(rival).post(f"/consults/{consult.pk}/claim/", follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert answer.redirect_chain[-1][0] == "/consults/"
    assert f"already claimed by {world.specialist.display_name}" in answer.content.decode()


def test_a_claim_by_someone_who_was_never_a_candidate_stays_404(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    answer = api_for(world.outsider_specialist).post(f"/api/v1/consults/{consult.pk}/claim/")
    assert answer.status_code == 404


@pytest.mark.integration  # WeasyPrint and poppler's pdftotext
def test_the_preliminary_report_pdf_says_so_and_names_the_signers_title(
    world: Any, two_level: Any, tmp_path: Any
) -> None:
    import subprocess

    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    answer = client_for(world.owner).get(f"/consults/{consult.pk}/report.pdf", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert answer.status_code == 200
    path = tmp_path / "report.pdf"
    path.write_bytes(answer.content)
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, text=True
    ).stdout
    assert "初步报告：由书写医生签署" in text and "住院医师" in text and "常规 · 24 小时内" in text


# --- the sign page: one access decision, audited --------------------------------------------


def test_may_sign_is_the_owner_of_a_report_in_progress_with_the_signature_the_pool_asks(
    world: Any, two_level: Any
) -> None:
    consult = walk(world, Status.ACCEPTED)
    spec = resolve_principal(world.specialist.user)
    assert not access.may_sign(spec, consult)  # not started
    services.consult_start_report(consult=consult, by=spec)
    consult.refresh_from_db()
    assert access.may_sign(spec, consult)  # a junior's preliminary signature
    for other in (world.owner, two_level.senior, two_level.member, world.hosp_admin):
        assert not access.may_sign(resolve_principal(other.user), consult)
    _sign(world, consult)
    consult.refresh_from_db()
    assert not access.may_sign(spec, consult)  # waits for the reviewer


def test_showing_the_sign_page_and_the_report_editor_is_audited(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    client = client_for(world.specialist)
    for page in ("report", "sign"):
        before = AuditEvent.objects.filter(action="consult.view", object_id=str(consult.pk)).count()
        assert client.get(f"/consults/{consult.pk}/{page}/").status_code == 200
        shown = AuditEvent.objects.filter(action="consult.view", object_id=str(consult.pk))
        assert shown.count() == before + 1 and shown.last().patient


def test_api_sign_by_someone_who_may_not_sign_is_refused_before_the_password(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    answer = api_for(world.outsider_specialist).post(
        f"/api/v1/consults/{consult.pk}/sign/", {"impression": "Nodule.", "password": "guess"}, format="json"
    )
    assert answer.status_code in (403, 404)
    answer = api_for(world.owner).post(
        f"/api/v1/consults/{consult.pk}/sign/", {"impression": "Nodule.", "password": "guess"}, format="json"
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "permission_denied"
    assert not AuditEvent.objects.filter(action="auth.reconfirm").exists()
    assert Consult.objects.get(pk=consult.pk).status == Status.IN_PROGRESS


@pytest.mark.parametrize("device", [True, False])
def test_the_verify_form_asks_for_what_the_identity_check_takes(world: Any, two_level: Any, device: bool) -> None:
    from tests.consults.test_pages import _second_factor_drift

    consult = walk(world, Status.IN_PROGRESS)
    _sign(world, consult)
    _second_factor_drift(two_level.senior, device=device)
    page = client_for(two_level.senior).get(f"/consults/{consult.pk}/").content.decode()
    assert ("身份验证器应用显示的验证码" in page) is device
    assert ("您的密码" in page) is not device

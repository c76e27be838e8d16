"""Cloud film (issue 14): the patient's link, its check, its session, and what it may reach."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alliance.access import resolve_principal, settings_of
from alliance.models import AuditEvent
from imaging import films
from imaging.models import FilmLink, FilmSaving
from tests.conftest import client_for
from tests.factories import PatientFactory, StudyFactory

DOB = dt.date(1958, 7, 14)
SECRETS = ("李明", "LI", "MING", "P-7788", "THORAX NODULE", "1958", "Clinic A")


@pytest.fixture
def world(alliance_world: Any) -> SimpleNamespace:
    patient = PatientFactory(issuer=alliance_world.clin_a, patient_id="P-7788", name="LI^MING=李^明", birth_date=DOB)
    alliance_world.patient = patient
    alliance_world.study = StudyFactory(
        institution=alliance_world.clin_a, patient=patient, description="CT THORAX NODULE", series__instances=2
    )
    alliance_world.other_study_same_patient = StudyFactory(
        institution=alliance_world.clin_a, patient=patient, description="MR KNEE"
    )
    alliance_world.other_patient_study = StudyFactory(institution=alliance_world.clin_a, description="DX HAND")
    return alliance_world


def make(world: Any, **options: Any) -> films.Issued:
    return films.film_create(studies=[world.study], by=resolve_principal(world.owner.user), **options)


def verify(client: Client, made: films.Issued, answer: str = DOB.isoformat(), source: str = "10.0.0.1") -> Any:
    return client.post(made.path, {"answer": answer}, REMOTE_ADDR=source)


def opened(made: films.Issued, answer: str = DOB.isoformat()) -> Client:
    client = Client()
    response = verify(client, made, answer)
    assert response.status_code == 303, response.content[:500]
    return client


def without_tokens(body: bytes) -> bytes:
    """The page without what differs by request only: its CSRF token."""
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", body)


# --- the link itself ----------------------------------------------------------------------


def test_handle_is_at_least_128_bits_and_only_hashes_are_stored(world: Any) -> None:
    made = make(world)
    assert len(made.handle) >= 43  # 256 bits, URL-safe base 64
    link = FilmLink.objects.get(pk=made.link.pk)
    stored = " ".join(str(getattr(link, f.attname)) for f in FilmLink._meta.concrete_fields)
    assert made.handle not in stored and made.code not in stored
    assert films.find_link(made.handle) == link
    assert films.find_link(made.code_display.lower()) == link  # typed in lower case with the dash


def test_pin_link_shows_its_pin_once_and_keeps_only_a_password_hash(world: Any) -> None:
    made = make(world, verify="pin")
    assert re.fullmatch(r"\d{6}", made.pin)
    assert made.pin not in FilmLink.objects.get(pk=made.link.pk).pin_hash
    assert verify(Client(), made, answer=made.pin).status_code == 303


# --- the check and its lockout ---------------------------------------------------------------


def test_five_wrong_birth_dates_lock_the_link_for_fifteen_minutes_and_are_audited(world: Any) -> None:
    made = make(world)
    client = Client()
    for n in range(4):
        response = verify(client, made, "1990-01-01", source=f"10.1.0.{n}")
        assert response.status_code == 200
        assert "film" not in response.cookies
    assert verify(client, made, "1990-01-01", source="10.1.0.9").status_code == 429
    # The right answer does not open a locked link, from any address.
    assert verify(client, made, source="10.1.0.10").status_code == 429
    assert AuditEvent.objects.filter(action="film.locked", object_id=str(made.link.pk)).exists()
    assert AuditEvent.objects.filter(action="film.verify", outcome="failure").count() == 4
    FilmLink.objects.filter(pk=made.link.pk).update(locked_until=timezone.now() - dt.timedelta(seconds=1))
    assert verify(client, made, source="10.1.0.11").status_code == 303


def test_five_wrong_answers_from_one_address_lock_that_address_across_links(world: Any) -> None:
    links = [make(world) for _ in range(6)]
    client = Client()
    for made in links[:5]:
        verify(client, made, "1990-01-01", source="10.2.0.1")
    assert verify(client, links[5], source="10.2.0.1").status_code == 429
    assert verify(client, links[5], source="10.2.0.2").status_code == 303
    assert AuditEvent.objects.filter(action="film.locked", source="10.2.0.1").exists()


def test_guessing_unknown_codes_locks_the_address(world: Any) -> None:
    made = make(world)
    client = Client()
    for n in range(5):
        assert client.get(f"/film/ABCDE{n}FGHJ/", REMOTE_ADDR="10.3.0.1").status_code == 404
    assert verify(client, made, source="10.3.0.1").status_code == 429


def test_expired_revoked_and_unknown_links_give_the_same_page_and_status(world: Any) -> None:
    expired, revoked = make(world), make(world)
    FilmLink.objects.filter(pk=expired.link.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    films.film_revoke(link=revoked.link, by=resolve_principal(world.owner.user).actor)
    answers = [
        Client().get(path, REMOTE_ADDR=f"10.4.0.{n}")
        for n, path in enumerate([expired.path, revoked.path, "/film/" + "x" * 43 + "/", "/film/ZZZZZ-ZZZZZ/"])
    ]
    assert {r.status_code for r in answers} == {404}
    assert len({without_tokens(r.content) for r in answers}) == 1
    posted = [verify(Client(), m, source=f"10.4.1.{n}") for n, m in enumerate([expired, revoked])]
    assert {r.status_code for r in posted} == {404}
    assert without_tokens(posted[0].content) == without_tokens(answers[0].content)


def test_a_used_up_link_looks_like_an_unknown_one(world: Any) -> None:
    made = make(world)
    FilmLink.objects.filter(pk=made.link.pk).update(max_openings=1, openings=1)
    assert Client().get(made.path).status_code == 404


# --- nothing before the check ----------------------------------------------------------------


@pytest.mark.parametrize("check", ["dob", "pin"])
def test_no_patient_data_in_any_answer_before_the_check(world: Any, check: str) -> None:
    made = make(world, verify=check)
    client = Client()
    answers = [
        client.get(made.path),
        client.post(made.path, {"answer": "1990-01-01" if check == "dob" else "000000"}),
        client.get(reverse("films:enter")),
        client.get(reverse("films:study", args=[made.handle, world.study.study_uid])),
        client.get(reverse("films:download", args=[made.handle])),
        client.get(reverse("films:who", args=[made.handle])),
        client.get(f"/film/{made.handle}/dicomweb/studies"),
        client.get(f"/film/{made.handle}/dicomweb/studies/{world.study.study_uid}/metadata"),
    ]
    for response in answers:
        text = without_tokens(response.content).decode() + " ".join(
            f"{k}: {v}" for k, v in response.headers.items() if k.lower() != "set-cookie"
        )
        # the link's own random handle is in its URLs, and may spell "LI" by chance
        text = text.replace(made.handle, "<handle>")
        assert "film" not in response.cookies or not response.cookies["film"].value  # no session before the check
        for secret in (*SECRETS, world.study.study_uid):
            assert secret not in text, (response.request["PATH_INFO"], secret)
    assert answers[6].status_code in {401, 403}


def test_patient_pages_send_no_referrer_no_store_and_a_strict_policy(world: Any) -> None:
    made = make(world)
    client = opened(made)
    for path in (made.path, reverse("films:share", args=[made.handle]), reverse("films:enter")):
        response = client.get(path)
        assert response.status_code == 200
        assert response["Referrer-Policy"] == "no-referrer"
        assert "no-store" in response["Cache-Control"]
        policy = response["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "http" not in policy and "*" not in policy
        assert not re.search(rb'(src|href|action)="(https?:)?//', response.content)


# --- the verified session reaches its link and nothing else -------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"href", "src", "action"} and value and not value.startswith(("data:", "#")):
                self.found.append(value)


def _links_in(body: bytes) -> list[str]:
    parser = _Links()
    parser.feed(body.decode())
    return parser.found


def test_crawling_from_the_patient_page_stays_on_the_link(world: Any) -> None:
    made = make(world)
    client = opened(made)
    prefix = f"/film/{made.handle}/"
    seen, queue = set(), [made.path]
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(path)
        assert response.status_code == 200, path
        if "text/html" not in response["Content-Type"]:
            continue
        for url in _links_in(response.content):
            parts = urlsplit(url)
            assert not parts.netloc, url
            assert parts.path.startswith((prefix, "/static/", "/i18n/", "/film/")), url
            if parts.path.startswith(prefix) and "leave" not in parts.path and not parts.path.endswith(".zip"):
                queue.append(parts.path)
    assert reverse("films:study", args=[made.handle, world.study.study_uid]) in seen


def test_verified_session_cannot_reach_another_study_patient_or_doctor_page(world: Any) -> None:
    made = make(world)
    client = opened(made)
    key = made.handle
    for other in (world.other_study_same_patient, world.other_patient_study):
        assert client.get(reverse("films:study", args=[key, other.study_uid])).status_code == 404
        assert client.get(f"/film/{key}/dicomweb/studies/{other.study_uid}/metadata").status_code == 404
    found = client.get(f"/film/{key}/dicomweb/studies", HTTP_ACCEPT="application/dicom+json").json()
    assert [s["0020000D"]["Value"][0] for s in found] == [world.study.study_uid]
    assert client.post(f"/film/{key}/dicomweb/studies", b"", content_type="application/dicom").status_code == 405
    for doctor_url in (
        "/",
        "/imaging/studies/",
        f"/imaging/studies/{world.study.study_uid}/",
        f"/viewer/study/{world.study.study_uid}/",
        "/dicomweb/studies",
        f"/dicomweb/studies/{world.study.study_uid}/metadata",
        "/api/v1/studies/",
        "/api/v1/films/",
        "/consults/",
        "/audit/",
    ):
        response = client.get(doctor_url)
        assert response.status_code in {302, 401, 403}, doctor_url
        if response.status_code == 302:
            assert response["Location"].startswith(reverse("login")), doctor_url


def test_the_film_cookie_of_one_link_does_not_open_another(world: Any) -> None:
    first, second = make(world), make(world)
    client = opened(first)
    response = client.get(second.path)
    assert response.status_code == 200
    assert b'name="answer"' in response.content and b"THORAX" not in response.content
    assert client.get(f"/film/{second.handle}/dicomweb/studies").status_code in {401, 403}


def test_a_doctors_session_in_the_same_browser_does_not_widen_the_film_session(world: Any) -> None:
    made = make(world)
    client = client_for(world.owner)
    verify(client, made)
    found = client.get(f"/film/{made.handle}/dicomweb/studies", HTTP_ACCEPT="application/dicom+json").json()
    assert len(found) == 1
    assert (
        client.get(reverse("films:study", args=[made.handle, world.other_patient_study.study_uid])).status_code == 404
    )


def test_revoking_ends_a_verified_session_at_once(world: Any) -> None:
    made = make(world)
    client = opened(made)
    films.film_revoke(link=made.link, by=resolve_principal(world.owner.user).actor)
    assert client.get(made.path).status_code == 404


def test_what_a_link_shows_is_audited_with_the_link_as_the_actor(world: Any) -> None:
    made = make(world)
    client = opened(made)
    client.get(made.path)
    client.get(reverse("films:study", args=[made.handle, world.study.study_uid]))
    events = AuditEvent.objects.filter(actor_type="share", actor_id=str(made.link.pk))
    assert {"film.open", "film.view", "study.view"} <= set(events.values_list("action", flat=True))
    view = events.get(action="study.view")
    assert view.object_id == world.study.study_uid and view.basis == f"film:{made.link.pk}"


# --- share with a doctor -----------------------------------------------------------------------


def _share(client: Client, made: films.Issued, days: int = 2) -> films.Issued:
    response = client.post(reverse("films:share", args=[made.handle]), {"days": days})
    assert response.status_code == 200
    link = FilmLink.objects.filter(parent=made.link).latest("created_at")
    pin = re.search(rb"data-share-pin>(\d{6})<", response.content)
    assert pin is not None
    return films.Issued(link, films.handle_of(link), films.code_of(link), pin.group(1).decode())


def test_a_share_link_opens_with_its_pin_and_is_withdrawn_by_the_patient(world: Any) -> None:
    made = make(world)
    patient = opened(made)
    shared = _share(patient, made)
    assert shared.link.kind == "share" and shared.link.verify == "pin"
    assert shared.link.expires_at <= timezone.now() + dt.timedelta(days=2)
    doctor = opened(shared, answer=shared.pin)
    assert b"THORAX" in doctor.get(shared.path).content
    assert doctor.get(reverse("films:share", args=[shared.handle])).status_code == 404  # not shared further
    assert doctor.get(reverse("films:who", args=[shared.handle])).status_code == 404
    patient.post(reverse("films:share_revoke", args=[made.handle, shared.link.pk]))
    assert doctor.get(shared.path).status_code == 404
    assert patient.get(made.path).status_code == 200  # the patient's own link still opens


def test_a_share_lasts_one_to_seven_days_and_then_expires(world: Any) -> None:
    made = make(world)
    patient = opened(made)
    for days in (0, 8):
        patient.post(reverse("films:share", args=[made.handle]), {"days": days})
    assert not FilmLink.objects.filter(parent=made.link).exists()
    shared = _share(patient, made, days=7)
    doctor = opened(shared, answer=shared.pin)
    FilmLink.objects.filter(pk=shared.link.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert doctor.get(shared.path).status_code == 404


def test_a_share_link_dies_with_the_patients_link(world: Any) -> None:
    made = make(world)
    shared = _share(opened(made), made)
    films.film_revoke(link=made.link, by=resolve_principal(world.owner.user).actor)
    assert verify(Client(), shared, answer=shared.pin).status_code == 404


# --- who looked at my images -------------------------------------------------------------------


def test_who_looked_shows_a_consult_reading_and_a_share_opening(world: Any) -> None:
    from tests.consults.conftest import walk

    consult = walk(world, "completed", study=world.study)
    client_for(world.specialist).get(reverse("imaging:study_detail", args=[world.study.study_uid]))
    made = make(world)
    patient = opened(made)
    shared = _share(patient, made)
    opened(shared, answer=shared.pin)
    page = patient.get(reverse("films:who", args=[made.handle]), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Lead Hospital" in page and "Specialist" in page
    assert "A remote consultation: a specialist read your images" in page
    assert "A doctor you shared your images with" in page
    assert world.specialist.display_name not in page  # names are off by default
    assert consult.basis not in page  # plain words, not codes


def test_who_looked_names_doctors_only_when_the_alliance_says_so(world: Any) -> None:
    client_for(world.owner).get(reverse("imaging:study_detail", args=[world.study.study_uid]))
    made = make(world)
    patient = opened(made)
    who = reverse("films:who", args=[made.handle])
    assert world.owner.display_name not in patient.get(who).content.decode()
    knobs = settings_of(world.alliance.pk)
    knobs.film_show_doctor_names = True
    knobs.save()
    assert world.owner.display_name in patient.get(who).content.decode()


# --- film saved --------------------------------------------------------------------------------


def test_film_saved_is_counted_once_per_study_per_patient(world: Any) -> None:
    first, second = make(world), make(world)
    opened(first)
    opened(first)
    opened(second)
    shared = _share(opened(first), first)
    opened(shared, answer=shared.pin)
    saving = FilmSaving.objects.get()
    assert saving.study == world.study and saving.sheets == 2 and saving.cost == 36
    now = timezone.now()
    months = films.film_savings([world.clin_a.pk], now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    assert [(m["studies"], m["sheets"], m["yuan"]) for m in months] == [(1, 2, 36)]
    assert films.film_savings([world.clin_b.pk], now - dt.timedelta(days=1), now + dt.timedelta(days=1)) == []


def test_the_institution_admins_home_shows_film_saved(world: Any) -> None:
    opened(make(world))
    page = client_for(world.inst_admin_a).get("/").content.decode()
    assert 'id="film-savings"' in page and "36.00" in page


# --- the institution's side ----------------------------------------------------------------------


def test_the_study_page_makes_a_link_shows_its_openings_and_withdraws_it(world: Any) -> None:
    doctor = client_for(world.owner)
    response = doctor.post(reverse("imaging:film_new"), {"study": world.study.study_uid, "verify": "pin"})
    assert response.status_code == 200 and b"data-film-pin" in response.content
    link = FilmLink.objects.get()
    url = re.search(rb"data-film-url>([^<]+)<", response.content).group(1).decode()  # type: ignore[union-attr]
    made = films.issued(link)
    assert url == made.url
    opened(made, answer=made.pin)
    page = doctor.get(reverse("imaging:study_detail", args=[world.study.study_uid])).content.decode()
    assert f'data-film-link="{link.pk}"' in page
    doctor.post(reverse("imaging:film_revoke", args=[link.pk]))
    assert not films.is_usable(FilmLink.objects.get())


def test_only_the_studys_institution_makes_its_film_link(world: Any) -> None:
    stranger = client_for(world.stranger)
    assert stranger.post(reverse("imaging:film_new"), {"study": world.study.study_uid}).status_code == 404
    assert not FilmLink.objects.exists()
    made = make(world)
    assert stranger.get(reverse("imaging:film_slip", args=[made.link.pk])).status_code == 404
    assert stranger.post(reverse("imaging:film_revoke", args=[made.link.pk])).status_code == 404


def test_cloud_film_switched_off_is_absent_everywhere(world: Any) -> None:
    made = make(world)
    clinic = world.clin_a
    clinic.modules = [m for m in clinic.modules if m != "cloud_film"]
    clinic.save()
    assert Client().get(made.path).status_code == 404
    doctor = client_for(world.owner)
    assert b"film-links" not in doctor.get(reverse("imaging:study_detail", args=[world.study.study_uid])).content
    api = doctor.post("/api/v1/films/", {"study": world.study.study_uid}, content_type="application/json")
    assert api.status_code == 404 and api.json()["error"]["code"] == "module_off"
    assert doctor.get("/api/v1/films/").status_code == 404


# --- REST API --------------------------------------------------------------------------------------


def test_api_makes_lists_and_revokes_film_links(world: Any, django_assert_max_num_queries: Any) -> None:
    doctor = client_for(world.owner)
    body = {"study": world.study.study_uid, "expires_in_days": 10, "verify": "pin"}
    response = doctor.post("/api/v1/films/", body, content_type="application/json")
    assert response.status_code == 201
    made = response.json()
    assert set(made) == {"id", "url", "code", "pin", "expires_at"}
    assert made["url"].startswith("http") and "/film/" in made["url"]
    no_pin = doctor.post(
        "/api/v1/films/", {"study": world.study.study_uid, "verify": "dob"}, content_type="application/json"
    )
    assert "pin" not in no_pin.json()
    for _ in range(3):
        make(world)
    with django_assert_max_num_queries(12):
        listed = doctor.get("/api/v1/films/", {"study": world.study.study_uid}).json()
    assert listed["count"] == 5 and listed["results"][-1]["studies"] == [world.study.study_uid]
    assert doctor.get("/api/v1/films/", {"study": world.other_patient_study.study_uid}).json()["count"] == 0
    revoked = doctor.post(f"/api/v1/films/{made['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client_for(world.stranger).post(f"/api/v1/films/{made['id']}/revoke/").status_code == 404


def test_api_needs_exactly_one_of_study_consult_or_referral(world: Any) -> None:
    doctor = client_for(world.owner)
    assert doctor.post("/api/v1/films/", {}, content_type="application/json").status_code == 400
    both = {"study": world.study.study_uid, "consult": 1}
    assert doctor.post("/api/v1/films/", both, content_type="application/json").status_code == 400
    assert doctor.post("/api/v1/films/", {"consult": 999}, content_type="application/json").status_code == 400


def test_the_film_session_is_its_own_short_path_scoped_strict_cookie(world: Any) -> None:
    made = make(world)
    response = verify(Client(), made)
    cookie = response.cookies["film"]
    assert cookie["path"] == made.path and cookie["httponly"] and cookie["samesite"] == "Strict"
    assert int(cookie["max-age"]) == 30 * 60
    assert set(response.cookies) == {"film"}  # no Django session, no CSRF cookie


def test_withdrawing_goes_back_to_a_page_of_this_site_only(world: Any) -> None:
    made = make(world)
    doctor = client_for(world.owner)
    response = doctor.post(reverse("imaging:film_revoke", args=[made.link.pk]), {"back": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"
    again = make(world)
    study_page = reverse("imaging:study_detail", args=[world.study.study_uid])
    response = doctor.post(reverse("imaging:film_revoke", args=[again.link.pk]), {"back": study_page})
    assert response["Location"] == study_page


def test_a_doctor_signed_in_elsewhere_does_not_switch_the_patients_film_pages_off(world: Any) -> None:
    made = make(world)
    world.clin_b.modules = []  # the stranger's clinic has neither the image store nor cloud film
    world.clin_b.save()
    browser = client_for(world.stranger)
    assert verify(browser, made).status_code == 303
    assert browser.get(reverse("films:home", args=[made.handle])).status_code == 200


def test_the_film_desk_pages_are_cloud_films_switch(world: Any) -> None:
    from alliance.access import module_of_view
    from imaging import film_desk, film_views
    from imaging.api import films as film_api

    assert module_of_view(film_desk.new) == "cloud_film"
    assert module_of_view(film_api.FilmList.as_view()) == "cloud_film"
    assert module_of_view(film_views.home) is None


def test_a_deleted_study_leaves_the_patients_film_at_once(world: Any) -> None:
    from imaging import maintenance

    made = make(world)
    patient = opened(made)
    assert patient.get(reverse("films:home", args=[made.handle]), HTTP_ACCEPT_LANGUAGE="en").status_code == 200
    maintenance.study_delete(
        study=world.study, by=resolve_principal(world.inst_admin_a.user), reason="Wrong patient filed"
    )
    page = patient.get(reverse("films:home", args=[made.handle]), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "CT THORAX NODULE" not in page
    uid = world.study.study_uid
    assert patient.get(reverse("films:study", args=[made.handle, uid])).status_code == 404


def test_the_study_page_names_a_links_case_in_words_not_its_code(world: Any) -> None:
    from tests.consults.conftest import walk

    consult = walk(world, "completed", study=world.study)
    films.film_create_for_case(case=consult.basis, by=resolve_principal(world.owner.user))
    page = client_for(world.owner).get(
        reverse("imaging:study_detail", args=[world.study.study_uid]), HTTP_ACCEPT_LANGUAGE="en"
    )
    assert f"Consult #{consult.pk}" in page.content.decode()
    assert consult.basis not in page.content.decode()

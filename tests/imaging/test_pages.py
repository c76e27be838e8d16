"""The study list and study page: who sees what, search, pagination, query counts, audit."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alliance import audit
from alliance.models import AuditEvent
from imaging import grants, render
from imaging.views import STUDIES_PER_PAGE
from tests import factories
from tests.conftest import client_for

SEE = ("owner", "colleague", "inst_admin_a")
BLIND = ("specialist", "outsider_specialist", "stranger", "alliance_admin", "hosp_admin")


def en_client(doctor):  # type: ignore[no-untyped-def]
    client = client_for(doctor)
    client.cookies["django_language"] = "en"
    return client


@pytest.fixture
def study_a(alliance_world):  # type: ignore[no-untyped-def]
    return factories.StudyFactory(
        institution=alliance_world.clin_a, patient__name="WANG^FANG=王^芳", patient__patient_id="CLA-0001"
    )


def main_part(response) -> str:  # type: ignore[no-untyped-def]
    body = response.content.decode()
    return body[body.index("<main") : body.index("</main>")]


def listed_uids(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [row.study.study_uid for row in response.context["rows"]]


@pytest.mark.parametrize("persona", SEE)
def test_own_institution_sees_study_in_list_and_page(alliance_world, study_a, persona):  # type: ignore[no-untyped-def]
    client = en_client(getattr(alliance_world, persona))
    response = client.get(reverse("imaging:study_list"))
    assert response.status_code == 200
    assert listed_uids(response) == [study_a.study_uid]
    page = client.get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    assert page.status_code == 200
    assert "CLA-0001" in page.content.decode()
    assert "Series 1" in page.content.decode()


@pytest.mark.parametrize("persona", BLIND)
def test_others_get_empty_list_and_404(alliance_world, study_a, persona):  # type: ignore[no-untyped-def]
    client = en_client(getattr(alliance_world, persona))
    response = client.get(reverse("imaging:study_list"))
    assert response.status_code == 200
    assert listed_uids(response) == []
    assert "WANG" not in response.content.decode()
    assert client.get(reverse("imaging:study_detail", args=[study_a.study_uid])).status_code == 404


def test_missing_and_forbidden_study_look_the_same(alliance_world, study_a):  # type: ignore[no-untyped-def]
    client = en_client(alliance_world.stranger)
    forbidden = client.get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    missing = client.get(reverse("imaging:study_detail", args=["1.2.3.999"]))
    assert forbidden.status_code == missing.status_code == 404
    # The pages differ only in what every page varies: its own address and the CSRF mask.
    assert main_part(forbidden) == main_part(missing)
    assert "WANG" not in forbidden.content.decode()


def test_anonymous_is_sent_to_sign_in(db):  # type: ignore[no-untyped-def]
    from django.test import Client

    response = Client().get(reverse("imaging:study_list"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_pool_grant_shows_study_to_specialist_with_consult_badge(alliance_world, study_a):  # type: ignore[no-untyped-def]
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.pool(alliance_world.pool), basis="consult:7", by=audit.SYSTEM
    )
    client = en_client(alliance_world.specialist)
    response = client.get(reverse("imaging:study_list"))
    assert listed_uids(response) == [study_a.study_uid]
    assert "Shared via consult 7" in response.content.decode()
    page = client.get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    assert page.status_code == 200
    assert "Shared via consult 7" in page.content.decode()
    # The grant is to the pool: the hospital's other specialist still sees nothing.
    assert listed_uids(en_client(alliance_world.outsider_specialist).get(reverse("imaging:study_list"))) == []


def test_owner_sees_no_badge_on_own_study(alliance_world, study_a):  # type: ignore[no-untyped-def]
    response = en_client(alliance_world.owner).get(reverse("imaging:study_list"))
    assert response.context["rows"][0].badge == ""
    assert "Shared via" not in response.content.decode()


def test_list_is_newest_first_and_paginated(alliance_world):  # type: ignore[no-untyped-def]
    days = [date(2026, 1, d) for d in range(1, STUDIES_PER_PAGE + 4)]
    for day in days:
        factories.StudyFactory(institution=alliance_world.clin_a, study_date=day, series=0)
    client = en_client(alliance_world.owner)
    first = client.get(reverse("imaging:study_list"))
    assert [row.study.study_date for row in first.context["rows"]] == sorted(days, reverse=True)[:STUDIES_PER_PAGE]
    second = client.get(reverse("imaging:study_list"), {"page": 2})
    assert [row.study.study_date for row in second.context["rows"]] == sorted(days, reverse=True)[STUDIES_PER_PAGE:]
    assert 'rel="next"' in first.content.decode()


def test_pagination_links_keep_the_search(alliance_world):  # type: ignore[no-untyped-def]
    for _ in range(STUDIES_PER_PAGE + 1):
        factories.StudyFactory(institution=alliance_world.clin_a, modalities="MR", series=0)
    response = en_client(alliance_world.owner).get(reverse("imaging:study_list"), {"modality": "MR"})
    assert "?modality=MR&amp;page=2" in response.content.decode()


@pytest.fixture
def three_studies(alliance_world):  # type: ignore[no-untyped-def]
    a = factories.StudyFactory(
        institution=alliance_world.clin_a,
        patient__name="WANG^FANG=王^芳",
        patient__patient_id="PID-1",
        study_date=date(2026, 1, 5),
        modalities="CT\\SR",
        accession_number="ACC100",
    )
    b = factories.StudyFactory(
        institution=alliance_world.clin_a,
        patient__name="LI^MING=李^明",
        patient__patient_id="PID-2",
        study_date=date(2026, 2, 10),
        modalities="MR",
        accession_number="ACC200",
    )
    c = factories.StudyFactory(
        institution=alliance_world.clin_a,
        patient__name="ZHANG^WEI=张^伟",
        patient__patient_id="PID-3",
        study_date=date(2026, 3, 15),
        modalities="DX",
        accession_number="ACC300",
    )
    return a, b, c


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"patient_name": "wang"}, [0]),
        ({"patient_name": "王芳"}, [0]),
        ({"patient_name": "明"}, [1]),
        ({"patient_name": "li ming"}, [1]),
        ({"patient_id": "pid-2"}, [1]),
        ({"date_from": "2026-02-01"}, [2, 1]),
        ({"date_to": "2026-02-10"}, [1, 0]),
        ({"date_from": "2026-02-01", "date_to": "2026-02-28"}, [1]),
        ({"modality": "SR"}, [0]),
        ({"modality": "CT"}, [0]),
        ({"modality": "DX"}, [2]),
        ({"accession": "acc300"}, [2]),
        ({"patient_name": "nobody"}, []),
    ],
)
def test_search_filters(alliance_world, three_studies, params, expected):  # type: ignore[no-untyped-def]
    response = en_client(alliance_world.owner).get(reverse("imaging:study_list"), params)
    assert listed_uids(response) == [three_studies[i].study_uid for i in expected]


def test_institution_filter_separates_own_from_shared(alliance_world, study_a):  # type: ignore[no-untyped-def]
    hosp_study = factories.StudyFactory(institution=alliance_world.hosp)
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.institution(alliance_world.hosp), basis="referral:3", by=audit.SYSTEM
    )
    client = en_client(alliance_world.hosp_admin)
    assert set(listed_uids(client.get(reverse("imaging:study_list")))) == {study_a.study_uid, hosp_study.study_uid}
    only_a = client.get(reverse("imaging:study_list"), {"institution": alliance_world.clin_a.pk})
    assert listed_uids(only_a) == [study_a.study_uid]
    assert "Shared via referral 3" in only_a.content.decode()


def test_bad_date_range_names_the_field(alliance_world, three_studies):  # type: ignore[no-untyped-def]
    response = en_client(alliance_world.owner).get(
        reverse("imaging:study_list"), {"date_from": "2026-03-01", "date_to": "2026-01-01"}
    )
    assert response.status_code == 200
    assert response.context["form"].errors["date_to"]
    assert listed_uids(response) == []


def test_list_writes_one_audit_event_per_study_shown(alliance_world, three_studies):  # type: ignore[no-untyped-def]
    en_client(alliance_world.owner).get(reverse("imaging:study_list"), {"modality": "MR"})
    events = AuditEvent.objects.filter(action="study.list")
    assert [(e.object_id, e.basis, e.actor_name) for e in events] == [
        (three_studies[1].study_uid, "own-institution", "owner")
    ]
    assert events[0].patient == str(three_studies[1].patient_id)


def test_empty_list_writes_no_audit_event(alliance_world, study_a):  # type: ignore[no-untyped-def]
    en_client(alliance_world.stranger).get(reverse("imaging:study_list"))
    assert not AuditEvent.objects.filter(action="study.list").exists()


def test_study_page_writes_view_event_with_basis(alliance_world, study_a):  # type: ignore[no-untyped-def]
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.pool(alliance_world.pool), basis="consult:9", by=audit.SYSTEM
    )
    en_client(alliance_world.specialist).get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    event = AuditEvent.objects.get(action="study.view")
    assert (event.object_id, event.basis, event.actor_name) == (study_a.study_uid, "consult:9", "specialist")


def test_refused_study_page_writes_no_view_event(alliance_world, study_a):  # type: ignore[no-untyped-def]
    en_client(alliance_world.stranger).get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    assert not AuditEvent.objects.filter(action="study.view").exists()


def queries_of(client, url: str) -> int:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def shared_and_own(world, count: int) -> None:  # type: ignore[no-untyped-def]
    for n in range(count):
        factories.StudyFactory(institution=world.hosp, series=0)
        shared = factories.StudyFactory(institution=world.clin_a, series=0)
        grants.grant_study(study=shared, grantee=grants.Grantee.pool(world.pool), basis=f"consult:{n}", by=audit.SYSTEM)


def test_study_list_query_count_does_not_grow_with_studies(  # type: ignore[no-untyped-def]
    alliance_world, django_assert_max_num_queries
):
    client = en_client(alliance_world.specialist)  # on the pool's desk: its own studies and the pool's
    shared_and_own(alliance_world, 2)
    url = reverse("imaging:study_list")
    few = queries_of(client, url)
    shared_and_own(alliance_world, 12)
    with django_assert_max_num_queries(few):
        response = client.get(url)
    assert len(response.context["rows"]) == STUDIES_PER_PAGE


def test_study_page_query_count_does_not_grow_with_series(  # type: ignore[no-untyped-def]
    alliance_world, django_assert_max_num_queries
):
    small = factories.StudyFactory(institution=alliance_world.clin_a, series=1)
    large = factories.StudyFactory(institution=alliance_world.clin_a, series=12)
    client = en_client(alliance_world.owner)
    few = queries_of(client, reverse("imaging:study_detail", args=[small.study_uid]))
    with django_assert_max_num_queries(few):
        response = client.get(reverse("imaging:study_detail", args=[large.study_uid]))
    assert len(response.context["series_list"]) == 12


def test_viewer_link_appears_only_when_the_viewer_is_mounted(alliance_world, study_a):  # type: ignore[no-untyped-def]
    from django.urls import NoReverseMatch

    page = en_client(alliance_world.owner).get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    try:
        viewer_url = reverse("viewer:study", args=[study_a.study_uid])
    except NoReverseMatch:
        assert "Open in viewer" not in page.content.decode()
    else:
        assert viewer_url in page.content.decode()


CATALOG = Path(__file__).resolve().parents[2] / "imaging" / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


def test_imaging_catalog_translates_every_entry():  # type: ignore[no-untyped-def]
    with CATALOG.open("rb") as f:
        catalog = read_po(f, locale="zh_Hans")
    untranslated = [m.id for m in catalog if m.id and not (m.string if isinstance(m.string, str) else all(m.string))]
    assert untranslated == []


def test_study_list_speaks_chinese(alliance_world, study_a, settings, tmp_path):  # type: ignore[no-untyped-def]
    compiled = tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES"
    compiled.mkdir(parents=True)
    with CATALOG.open("rb") as source, (compiled / "django.mo").open("wb") as target:
        write_mo(target, read_po(source, locale="zh_Hans"))
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    client = client_for(alliance_world.owner)
    client.cookies["django_language"] = "zh-hans"
    body = client.get(reverse("imaging:study_list")).content.decode()
    assert "检查列表" in body
    assert "共 1 个检查" in body


@pytest.fixture
def ingested_ct(alliance_world):  # type: ignore[no-untyped-def]
    actor = audit.Actor("device", "1", "CT_CLINA", alliance_world.clin_a.pk)
    return factories.store_ct_study(alliance_world.clin_a, slices=5, actor=actor)


def test_series_thumbnail_is_the_middle_slice_as_jpeg(alliance_world, ingested_ct):  # type: ignore[no-untyped-def]
    series = ingested_ct.series.get()
    client = en_client(alliance_world.owner)
    page = client.get(reverse("imaging:study_detail", args=[ingested_ct.study_uid])).content.decode()
    url = reverse("imaging:thumbnail", args=[ingested_ct.study_uid, series.series_uid])
    assert url in page
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    middle = series.instances.get(instance_number=3)
    event = AuditEvent.objects.get(action="instance.thumbnail")
    assert (event.object_id, event.basis) == (middle.sop_uid, "own-institution")


def test_instance_thumbnail_for_one_slice(alliance_world, ingested_ct):  # type: ignore[no-untyped-def]
    series = ingested_ct.series.get()
    first = series.instances.get(instance_number=1)
    url = reverse("imaging:thumbnail", args=[ingested_ct.study_uid, series.series_uid, first.sop_uid])
    response = en_client(alliance_world.colleague).get(url)
    assert response.status_code == 200
    assert response.content[:2] == b"\xff\xd8"


def test_thumbnails_of_a_forbidden_study_are_404(alliance_world, ingested_ct):  # type: ignore[no-untyped-def]
    series = ingested_ct.series.get()
    first = series.instances.first()
    for persona in BLIND:
        client = en_client(getattr(alliance_world, persona))
        for args in (
            [ingested_ct.study_uid, series.series_uid],
            [ingested_ct.study_uid, series.series_uid, first.sop_uid],
        ):
            assert client.get(reverse("imaging:thumbnail", args=args)).status_code == 404, persona
    assert not AuditEvent.objects.filter(action="instance.thumbnail").exists()


def test_thumbnail_of_a_series_under_another_study_uid_is_404(alliance_world, ingested_ct):  # type: ignore[no-untyped-def]
    other = factories.StudyFactory(institution=alliance_world.clin_a)
    series = ingested_ct.series.get()
    url = reverse("imaging:thumbnail", args=[other.study_uid, series.series_uid])
    assert en_client(alliance_world.owner).get(url).status_code == 404


def test_consult_badge_links_to_the_case(alliance_world, study_a):  # type: ignore[no-untyped-def]
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.pool(alliance_world.pool), basis="consult:7", by=audit.SYSTEM
    )
    response = en_client(alliance_world.specialist).get(reverse("imaging:study_list"))
    assert response.context["rows"][0].badge_url == reverse("consults:detail", args=[7])
    assert f'href="{reverse("consults:detail", args=[7])}"' in response.content.decode()


def test_own_study_page_offers_a_consult_request_and_a_shared_one_does_not(  # type: ignore[no-untyped-def]
    alliance_world, study_a
):
    request_url = f"{reverse('consults:new')}?study={study_a.study_uid}"
    own = en_client(alliance_world.owner).get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    assert request_url in own.content.decode()
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.pool(alliance_world.pool), basis="consult:8", by=audit.SYSTEM
    )
    shared = en_client(alliance_world.specialist).get(reverse("imaging:study_detail", args=[study_a.study_uid]))
    assert shared.status_code == 200
    assert reverse("consults:new") not in shared.content.decode().split("<main", 1)[1]


def test_a_page_thumbnail_is_cached_privately_per_session(alliance_world, ingested_ct, monkeypatch):  # type: ignore[no-untyped-def]
    series = ingested_ct.series.get()
    client = en_client(alliance_world.owner)
    shown = client.get(reverse("imaging:thumbnail", args=[ingested_ct.study_uid, series.series_uid]))

    def undecodable(instance: object) -> bytes:
        raise render.RenderError("no pixels")

    monkeypatch.setattr(render, "thumbnail", undecodable)
    stand_in = client.get(reverse("imaging:thumbnail", args=[ingested_ct.study_uid, series.series_uid]))
    for response in (shown, stand_in):
        assert response.status_code == 200 and response["Cache-Control"].startswith("private, max-age=")
        assert "Cookie" in response["Vary"]
    assert stand_in["Content-Type"] == "image/svg+xml"


def test_a_page_audits_what_it_shows_as_reads_committed_without_waiting_for_the_disk(  # type: ignore[no-untyped-def]
    transactional_db, alliance_world
):
    """The study list (audit.read_many) and the study page (audit.read): each event is written
    before the page answers, in one statement committed asynchronously, as QIDO-RS's and
    C-FIND's are; the page's own writes (none here) would stay durable."""
    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    study = factories.StudyFactory(institution=alliance_world.clin_a, patient__patient_id="CLA-0009")
    client = en_client(alliance_world.owner)
    for url, action in (
        (reverse("imaging:study_list"), "study.list"),
        (reverse("imaging:study_detail", args=[study.study_uid]), "study.view"),
    ):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        [sent] = [q["sql"] for q in captured.captured_queries if "INSERT INTO" in q["sql"] and "auditevent" in q["sql"]]
        assert sent.startswith("SET LOCAL synchronous_commit TO OFF; "), sent[:200]  # then the INSERT (or its PREPARE)
        assert AuditEvent.objects.filter(action=action, object_id=study.study_uid).count() == 1

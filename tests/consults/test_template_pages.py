"""The alliance admin's report template pages (/consults/templates/)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from alliance import audit
from alliance.models import Alliance, AuditEvent
from consults import services
from consults.models import ReportTemplate, Status
from tests import factories
from tests.conftest import client_for
from tests.consults.conftest import walk

BODY = {
    "name": "胸部CT平扫",
    "modality": "ct",
    "body_part": "chest",
    "findings": "双肺纹理清晰。",
    "impression": "未见异常。",
}


def test_alliance_admin_adds_a_template_that_the_next_report_offers_without_filling_it_in(world: Any) -> None:
    response = client_for(world.alliance_admin).post("/consults/templates/add/", BODY)
    assert response.status_code == 302 and response["Location"] == "/consults/templates/"
    template = ReportTemplate.objects.get()
    assert (template.modality, template.body_part, template.alliance_id) == ("CT", "CHEST", world.hosp.alliance_id)
    assert AuditEvent.objects.filter(action="consult.template_create", object_id=str(template.pk)).exists()
    consult = walk(world, Status.IN_PROGRESS)
    assert consult.report.versions.get().findings == ""  # applied only when the reader picks it (issue 15)
    editor = client_for(world.specialist).get(f"/consults/{consult.pk}/report/").content.decode()
    assert f"?template={template.pk}" in editor


def test_template_errors_name_the_field(world: Any) -> None:
    response = client_for(world.alliance_admin).post("/consults/templates/add/", {**BODY, "name": " ", "modality": ""})
    assert response.status_code == 200
    assert {"name", "modality"} <= set(response.context["form"].errors)
    assert not ReportTemplate.objects.exists()


def test_alliance_admin_lists_and_edits_their_templates(world: Any) -> None:
    template = services.report_template_create(alliance=world.hosp.alliance, actor=audit.SYSTEM, **BODY)
    client = client_for(world.alliance_admin)
    assert template.name in client.get("/consults/templates/").content.decode()
    response = client.post(f"/consults/templates/{template.pk}/", {**BODY, "impression": "胸部CT未见明显异常。"})
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.impression == "胸部CT未见明显异常。"
    assert AuditEvent.objects.filter(action="consult.template_update").count() == 1


def test_another_alliances_template_is_not_found(world: Any) -> None:
    other = Alliance.objects.create(name="Other alliance")
    template = services.report_template_create(alliance=other, actor=audit.SYSTEM, **BODY)
    client = client_for(world.alliance_admin)
    assert client.get(f"/consults/templates/{template.pk}/").status_code == 404
    assert client.post(f"/consults/templates/{template.pk}/", BODY).status_code == 404
    assert client.get("/consults/templates/").context["templates"].count() == 0


@pytest.mark.parametrize("persona", ["owner", "specialist", "inst_admin_a", "hosp_admin", "stranger"])
def test_only_the_alliance_admin_keeps_templates(world: Any, persona: str) -> None:
    client = client_for(getattr(world, persona))
    assert client.get("/consults/templates/").status_code == 403
    assert client.post("/consults/templates/add/", BODY).status_code == 403
    assert not ReportTemplate.objects.exists()


def test_alliance_admin_home_links_to_the_templates(world: Any) -> None:
    assert "/consults/templates/" in client_for(world.alliance_admin).get("/").content.decode()


def test_other_alliance_admin_writes_to_their_own_alliance(world: Any) -> None:
    other = factories.make_institution(alliance=Alliance.objects.create(name="Other alliance"), ae_title="OTHER")
    admin = factories.make_doctor(institution=other, roles=["alliance_admin"], username="other_admin")
    client_for(admin).post("/consults/templates/add/", BODY)
    assert list(ReportTemplate.objects.values_list("alliance_id", flat=True)) == [other.alliance_id]


@pytest.mark.parametrize(
    ("url", "heading", "back", "submit"),
    [
        ("consults:template_add", "添加模板", "报告模板", "保存模板"),
        ("consults:critical_finding_add", "添加危急值项目", "危急值清单", "保存"),
    ],
)
def test_the_alliance_admins_two_lists_add_entries_on_one_form_page(
    world: Any, url: str, heading: str, back: str, submit: str
) -> None:
    response = client_for(world.alliance_admin).get(reverse(url), HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert [t.name for t in response.templates][0] == "consults/list_entry_form.html"
    page = response.content.decode()
    assert f"<h1>{heading}</h1>" in page and f">{back}</a>" in page and f">{submit}</button>" in page

"""Critical results on the pages: the flag form, the red banner, the read back, the home list,
the notifications, and the alliance admin's list of findings."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from alliance.access import resolve_principal
from alliance.models import AuditEvent
from consults import critical
from consults.models import CriticalFinding, CriticalResult, Status
from tests.conftest import client_for
from tests.consults.conftest import walk


def _get(doctor: Any, url: str) -> str:
    response = client_for(doctor).get(url, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return response.content.decode()


def test_reader_flags_from_the_case_page_and_the_requester_sees_the_banner_and_home_list(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    detail = reverse("consults:detail", args=[consult.pk])
    assert 'id="critical-flag"' in _get(world.specialist, detail)
    assert 'id="critical-flag"' not in _get(world.owner, detail)
    flag = reverse("consults:critical_flag", args=[consult.pk])
    unconfirmed = client_for(world.specialist).post(flag, {"text": "大量气胸"})
    assert unconfirmed.status_code == 302 and not CriticalResult.objects.exists()
    client_for(world.specialist).post(flag, {"text": "大量气胸", "confirm": "1"})
    result = CriticalResult.objects.get()
    page = _get(world.owner, detail)
    assert 'id="critical-banner"' in page and "大量气胸" in page and 'name="read_back"' in page
    assert 'name="read_back"' not in _get(world.specialist, detail)
    home = _get(world.colleague, reverse("home"))
    assert 'id="home-work-critical"' in home and "大量气胸" in home
    assert AuditEvent.objects.filter(action="consult.list", object_id=str(consult.pk), detail__via="home").exists()
    notices = _get(world.owner, reverse("consults:notifications"))
    assert "cs-critical-notice" in notices and "Critical result" in notices
    ack = reverse("consults:critical_acknowledge", args=[consult.pk, result.pk])
    client_for(world.owner).post(ack, {"read_back": "大量气胸"})
    page = _get(world.owner, detail)
    assert 'id="critical-banner"' not in page and 'id="critical-history"' in page
    assert "Read back by" in page
    assert 'id="home-work-critical"' not in _get(world.colleague, reverse("home"))


def test_report_editor_offers_the_modalitys_list(world: Any) -> None:
    actor = resolve_principal(world.alliance_admin.user).actor
    critical.critical_finding_create(alliance=world.alliance, modality="CT", name="主动脉夹层", actor=actor)
    critical.critical_finding_create(alliance=world.alliance, modality="DX", name="膈下游离气体", actor=actor)
    consult = walk(world, Status.IN_PROGRESS)
    editor = _get(world.specialist, reverse("consults:report", args=[consult.pk]))
    assert "主动脉夹层" in editor and "膈下游离气体" not in editor and 'name="back" value="report"' in editor


def test_alliance_admin_keeps_the_list_on_its_page(world: Any) -> None:
    admin = client_for(world.alliance_admin)
    added = admin.post(
        reverse("consults:critical_finding_add"), {"modality": "ct", "name": "主动脉夹层", "active": "on"}
    )
    assert added.status_code == 302
    finding = CriticalFinding.objects.get()
    assert (finding.modality, finding.active) == ("CT", True)
    assert "主动脉夹层" in _get(world.alliance_admin, reverse("consults:critical_findings"))
    admin.post(reverse("consults:critical_finding_edit", args=[finding.pk]), {"modality": "CT", "name": "主动脉夹层"})
    finding.refresh_from_db()
    assert finding.active is False
    empty = admin.post(reverse("consults:critical_finding_add"), {"modality": "CT", "name": ""})
    assert empty.status_code == 200 and CriticalFinding.objects.count() == 1


@pytest.mark.parametrize("who", ["owner", "specialist", "inst_admin_a"])
def test_only_the_alliance_admin_opens_the_list(world: Any, who: str) -> None:
    response = client_for(getattr(world, who)).get(reverse("consults:critical_findings"))
    assert response.status_code == 403


def test_a_critical_result_on_the_home_page_is_open_work_listed_first_and_audited_once(world: Any) -> None:
    """The home page's one list of what waits (alliance.open_work): no "nothing waits" under a
    critical result, and a case both critical and with a question is audited once."""
    consult = walk(world, Status.ON_HOLD)  # a question for the clinic too
    critical.critical_flag(consult=consult, by=resolve_principal(world.specialist.user), text="大量气胸")
    home = _get(world.colleague, reverse("home"))
    assert 'id="home-work-none"' not in home
    assert home.index('id="home-work-critical"') < home.index('id="home-work-questions"')
    assert f"/consults/{consult.pk}/#critical-banner" in home
    assert AuditEvent.objects.filter(object_type="consult", object_id=str(consult.pk), detail__via="home").count() == 1
    assert not AuditEvent.objects.filter(action="consult.critical_list").exists()

"""Issue 16, item 6: a module switched off for an institution is off on every surface: every
route of the URL conf that belongs to the module (pages, REST API, DICOMweb) answers its
doctors 404 "switched off", and the image store's DIMSE services refuse its devices."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from alliance import audit, services
from alliance.access import MODULE_OF_PACKAGE, module_of_view
from alliance.models import AuditEvent
from consults import services as consult_services
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest, ReceivedInstance
from imaging.dicom.status import DimseFailure, Status
from imaging.dimse_services import DjangoServices
from tests.conftest import client_for
from tests.dicomweb.conftest import store, token_client
from tests.imaging.dicomgen import make_ct_series, part10_bytes

pytestmark = pytest.mark.django_db
CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def _walk(patterns: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found += _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            found.append((route, pattern.callback))
    return found


def switched_routes() -> list[tuple[str, str, bool]]:
    """(route, module, is a REST/DICOMweb view) of every route a module switch governs."""
    routes = []
    for route, callback in _walk(get_resolver().url_patterns):
        module = module_of_view(callback)
        if module is not None:
            routes.append((route, module, hasattr(callback, "cls")))
    return routes


ROUTES = switched_routes()


def test_the_url_conf_has_routes_of_every_app_with_a_module() -> None:
    modules = {module for _, module, _ in ROUTES}
    assert {"image_store", "consults"} <= modules
    names = {route for route, _, _ in ROUTES}
    for expected in ("imaging/studies/", "viewer/study/<str:study_uid>/", "dicomweb/studies", "consults/"):
        assert expected in names
    assert "api/v1/studies/" in names and "api/v1/consults/" in names
    assert not any(route.startswith(("manage/", "audit/", "login/")) for route in names)


@pytest.fixture
def world(alliance_world: Any) -> SimpleNamespace:
    """Clinic A's owner with a stored study and a consult, so that every route has real arguments."""
    w = alliance_world
    datasets = make_ct_series(1, 16, 16, patient_id="P-MOD", patient_name="Li^Si")
    store(datasets, w.clin_a)
    ds = datasets[0]
    from alliance.access import resolve_principal
    from imaging.models import Study

    study = Study.objects.get(study_uid=ds.StudyInstanceUID)
    consult = consult_services.consult_create(
        by=resolve_principal(w.owner.user), studies=[study], question="Fracture?", pool=w.pool
    )
    w.values = {
        "study_uid": ds.StudyInstanceUID,
        "study": ds.StudyInstanceUID,
        "series_uid": ds.SeriesInstanceUID,
        "series": ds.SeriesInstanceUID,
        "sop_uid": ds.SOPInstanceUID,
        "instance": ds.SOPInstanceUID,
        "frames": "1",
        "tag": "7FE00010",
        "pk": str(consult.pk),
        "action": "claim",
    }
    return w


def url_of(route: str, values: dict[str, str]) -> str:
    return "/" + CONVERTER.sub(lambda m: values.get(m.group(2), "1"), route).lstrip("^").rstrip("$")


def switch_off(institution: Any, module: str) -> None:
    services.institution_update(
        institution=institution, modules=[m for m in services.ALL_MODULES if m != module], by=audit.SYSTEM
    )


def is_switched_off_answer(response: Any) -> bool:
    """404, and said so: the page of a switched-off module, or the API's module_off error."""
    if response.status_code != 404:
        return False
    if "json" in response.headers["Content-Type"]:
        return response.json()["error"]["code"] == "module_off"
    return "module_off.html" in [t.name for t in response.templates]


@pytest.mark.parametrize(("route", "module", "api"), ROUTES, ids=[r for r, _, _ in ROUTES])
def test_a_switched_off_module_answers_404_on_every_route(world: Any, route: str, module: str, api: bool) -> None:
    url = url_of(route, world.values)
    session = client_for(world.owner)
    token = token_client(world.owner) if api else None
    assert not is_switched_off_answer(session.get(url)), "on: the view answers for itself"
    switch_off(world.clin_a, module)
    assert is_switched_off_answer(session.get(url)), url
    assert is_switched_off_answer(session.post(url)), url
    if token is not None:
        assert is_switched_off_answer(token.get(url)), url


def test_other_institutions_keep_the_module(world: Any) -> None:
    switch_off(world.clin_b, "image_store")
    assert client_for(world.owner).get("/imaging/studies/").status_code == 200
    assert is_switched_off_answer(client_for(world.stranger).get("/imaging/studies/"))


def test_the_navigation_and_home_drop_a_switched_off_module(world: Any) -> None:
    services.institution_update(institution=world.clin_a, modules=["referrals"], by=audit.SYSTEM)
    home = client_for(world.owner).get("/").content.decode()
    assert 'href="/imaging/studies/"' not in home and 'href="/consults/"' not in home
    assert 'href="/imaging/upload/"' not in home


def test_the_switched_off_page_names_the_module_and_the_institution_in_chinese(world: Any) -> None:
    switch_off(world.clin_a, "consults")
    page = client_for(world.owner).get("/consults/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "远程会诊" in page and "Clinic A" in page and "已关闭" in page


def test_anonymous_is_sent_to_sign_in_not_told_about_modules(world: Any) -> None:
    from django.test import Client

    assert Client().get("/imaging/studies/").status_code == 302


# --- DIMSE ------------------------------------------------------------------------------


def _peer(world: Any) -> Peer:
    device = services.device_create(institution=world.clin_a, ae_title="CT_A", host="*", port=104, by=audit.SYSTEM)
    return Peer("CT_A", "CLINA", "127.0.0.1", 4100, principal=device)


def _store(peer: Peer) -> None:
    ds = make_ct_series(1, 16, 16, patient_id="P-DIMSE")[0]
    data = part10_bytes(ds)
    instance = ReceivedInstance(str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1", lambda: data)
    DjangoServices(check_host=False).store(peer, instance)


def _find(peer: Peer) -> None:
    query = QueryRequest(root="study", level="STUDY", criteria={"PatientID": "P-MOD"}, keywords=["PatientID"])
    list(DjangoServices(check_host=False).find(peer, query))


def _get(peer: Peer, world: Any) -> None:
    query = QueryRequest(root="study", level="STUDY", criteria={"StudyInstanceUID": world.values["study"]}, keywords=[])
    DjangoServices(check_host=False).retrieve(peer, query, None)


def _move(peer: Peer, world: Any) -> None:
    query = QueryRequest(root="study", level="STUDY", criteria={"StudyInstanceUID": world.values["study"]}, keywords=[])
    DjangoServices(check_host=False).retrieve(peer, query, "CT_A")


DIMSE = {
    "C-STORE": (lambda peer, world: _store(peer), "instance.store"),
    "C-FIND": (lambda peer, world: _find(peer), "dicom.find"),
    "C-GET": (_get, "dicom.get"),
    "C-MOVE": (_move, "dicom.move"),
}


@pytest.mark.parametrize("service", list(DIMSE))
def test_the_image_store_switched_off_refuses_every_dimse_service_not_authorized(world: Any, service: str) -> None:
    call, action = DIMSE[service]
    peer = _peer(world)
    call(peer, world)  # on: served
    switch_off(world.clin_a, "image_store")
    peer.principal.institution.refresh_from_db()
    with pytest.raises(DimseFailure) as refused:
        call(peer, world)
    assert refused.value.status == Status.NOT_AUTHORIZED == 0x0124
    assert refused.value.reason == "the image store is switched off for CLINA"
    event = AuditEvent.objects.filter(action=action, outcome=AuditEvent.Outcome.DENIED).get()
    assert event.detail["module"] == "image_store" and event.object_id == "CLINA"


def test_every_package_is_switched_by_a_module_of_the_alliance() -> None:
    # "": the patient's film pages, which no signed-in doctor's switch decides
    assert set(MODULE_OF_PACKAGE.values()) - {""} <= set(services.ALL_MODULES)


# --- switching off with open cases --------------------------------------------------------


def _edit(client: Any, institution: Any, modules: list[str], **extra: str) -> Any:
    data = {
        "name": institution.name,
        "level": institution.level,
        "parent": institution.parent_id or "",
        "ae_title": institution.ae_title,
        "modules": modules,
        **extra,
    }
    return client.post(f"/manage/institutions/{institution.pk}/edit/", data, HTTP_ACCEPT_LANGUAGE="en")


def test_switching_off_consults_with_open_cases_asks_first_and_says_what_happens(world: Any) -> None:
    from alliance.access import resolve_principal
    from consults.models import Consult

    draft = Consult.objects.get()  # the world's consult, a draft: not open yet
    consult_services.consult_request(consult=draft, by=resolve_principal(world.owner.user))
    admin = client_for(world.alliance_admin)
    asked = _edit(admin, world.clin_a, ["image_store"])
    assert asked.status_code == 200
    page = asked.content.decode()
    assert "Switch off modules with open cases?" in page
    assert "Open consults: 1 requested by Clinic A, 0 sent to it." in page
    world.clin_a.refresh_from_db()
    assert "consults" in world.clin_a.modules  # nothing changed yet
    done = _edit(admin, world.clin_a, ["image_store"], confirm="1")
    assert done.status_code == 302
    world.clin_a.refresh_from_db()
    assert world.clin_a.modules == ["image_store"]


def test_switching_off_a_module_without_open_cases_needs_no_confirmation(world: Any) -> None:
    admin = client_for(world.alliance_admin)
    assert _edit(admin, world.clin_b, ["image_store"]).status_code == 302
    world.clin_b.refresh_from_db()
    assert world.clin_b.modules == ["image_store"]

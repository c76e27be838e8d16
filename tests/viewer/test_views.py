"""The viewer page itself: who may open it, what it audits, and what it hands the script."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string
from django.urls import reverse

from alliance.models import AuditEvent
from imaging.viewer.views import bundle_preload, viewer_config
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
MISSING = "1.2.826.0.1.3680043.99.1"


def viewer_url(study_uid: str) -> str:
    return reverse("viewer:study", kwargs={"study_uid": study_uid})


def normalised(html: str, study_uid: str) -> str:
    """The page minus what differs by request alone: the CSRF token (masked afresh on every
    response) and the requested path (the language form's "next")."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html).replace(study_uid, "UID")


def config_of(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="viewer-config" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page carries its config as a json_script block"
    return json.loads(found[1])


def test_url_takes_the_study_uid_as_its_one_argument() -> None:
    assert reverse("viewer:study", args=["1.2.3"]) == "/viewer/study/1.2.3/"


def test_owner_opens_the_viewer_with_the_study_in_its_config(alliance_world: Any, ct_study: Any) -> None:
    response = client_for(alliance_world.owner).get(viewer_url(ct_study.study_uid))
    assert response.status_code == 200
    config = json.loads(
        re.search(rb'<script id="viewer-config" type="application/json">(.*?)</script>', response.content, re.S)[1]
    )
    assert config["study_uid"] == ct_study.study_uid
    assert config["dicomweb"] == "/dicomweb"
    assert config["patient"]["id"] == "PID-7001"
    assert config["patient"]["name"] == ct_study.patient.display_name == "WANG FANG"
    assert "%(index)s" in config["strings"]["image_line"]


def test_overlay_writes_an_ideographic_name_as_the_pages_do(alliance_world: Any, ct_study: Any) -> None:
    ct_study.patient.name = "Yang^Zhiqiang=杨^志强"
    ct_study.patient.save()
    response = client_for(alliance_world.owner).get(viewer_url(ct_study.study_uid))
    config = json.loads(
        re.search(rb'<script id="viewer-config" type="application/json">(.*?)</script>', response.content, re.S)[1]
    )
    assert config["patient"]["name"] == "杨志强 (Yang Zhiqiang)"


def test_overlay_writes_the_sex_in_the_readers_language(alliance_world: Any, ct_study: Any) -> None:
    ct_study.patient.sex = "F"
    ct_study.patient.birth_date = None
    ct_study.patient.save()
    client = client_for(alliance_world.owner)
    client.cookies["django_language"] = "zh-hans"
    response = client.get(viewer_url(ct_study.study_uid))
    config = json.loads(
        re.search(rb'<script id="viewer-config" type="application/json">(.*?)</script>', response.content, re.S)[1]
    )
    assert config["patient"]["sex_birth"] == "女"


def test_stranger_gets_the_same_404_as_for_a_missing_study(alliance_world: Any, ct_study: Any) -> None:
    stranger = client_for(alliance_world.stranger)
    forbidden = stranger.get(viewer_url(ct_study.study_uid))
    missing = stranger.get(viewer_url(MISSING))
    assert forbidden.status_code == missing.status_code == 404
    assert normalised(forbidden.content.decode(), ct_study.study_uid) == normalised(missing.content.decode(), MISSING)


def test_alliance_admin_sees_no_images_by_default(alliance_world: Any, ct_study: Any) -> None:
    assert client_for(alliance_world.alliance_admin).get(viewer_url(ct_study.study_uid)).status_code == 404


def test_anonymous_is_sent_to_sign_in(client: Any, ct_study: Any) -> None:
    response = client.get(viewer_url(ct_study.study_uid))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_each_opening_is_audited_once_with_its_basis(alliance_world: Any, ct_study: Any) -> None:
    client = client_for(alliance_world.colleague)
    client.get(viewer_url(ct_study.study_uid))
    client.get(viewer_url(ct_study.study_uid))
    events = AuditEvent.objects.filter(action="study.view", object_id=ct_study.study_uid)
    assert events.count() == 2
    event = events.first()
    assert event.actor_name == alliance_world.colleague.user.username
    assert event.basis == "own-institution"
    assert event.detail == {"via": "viewer"}


def test_forbidden_opening_writes_no_view_event(alliance_world: Any, ct_study: Any) -> None:
    client_for(alliance_world.stranger).get(viewer_url(ct_study.study_uid))
    assert not AuditEvent.objects.filter(action="study.view").exists()


def test_page_has_no_inline_script_and_loads_only_local_assets(alliance_world: Any, ct_study: Any) -> None:
    html = client_for(alliance_world.owner).get(viewer_url(ct_study.study_uid)).content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'type="application/json"' in tag or "src=" in tag, tag
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert "/static/viewer/viewer.js" in html


def test_viewer_strings_are_translated_to_chinese(alliance_world: Any, ct_study: Any) -> None:
    client = client_for(alliance_world.owner)
    client.cookies["django_language"] = "zh-hans"
    html = client.get(viewer_url(ct_study.study_uid), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "肺窗" in html
    config = config_of(html)
    assert "图像" in config["strings"]["image_line"]


def test_embedded_viewer_leaves_out_the_site_header(alliance_world: Any, ct_study: Any) -> None:
    client = client_for(alliance_world.owner)
    html = client.get(viewer_url(ct_study.study_uid) + "?embed=1").content.decode()
    assert 'class="viewer-page viewer-embed"' in html
    assert 'class="viewer-page"' in client.get(viewer_url(ct_study.study_uid)).content.decode()


def test_config_names_the_first_series_and_its_first_slice(
    alliance_world: Any, ct_study: Any, django_assert_max_num_queries: Any
) -> None:
    client = client_for(alliance_world.owner)
    with django_assert_max_num_queries(25):
        config = config_of(client.get(viewer_url(ct_study.study_uid)).content.decode())
    series = ct_study.series.get()
    by_number = list(series.instances.order_by("instance_number").values_list("sop_uid", flat=True))
    assert config["first"]["uid"] == series.series_uid
    assert config["first"]["count"] == len(by_number) == 24
    assert config["first"]["first_sop_uid"] == by_number[0]
    assert "start_sop_uid" not in config, "no key image: the viewer opens on the first slice"
    assert "start_index" not in config, "the key image is named by its SOP Instance UID only"


def test_config_carries_the_first_slice_metadata_without_its_pixels(alliance_world: Any, ct_study: Any) -> None:
    config = config_of(client_for(alliance_world.owner).get(viewer_url(ct_study.study_uid)).content.decode())
    metadata = config["first"]["first_metadata"]
    assert metadata["00080018"]["Value"] == [config["first"]["first_sop_uid"]]
    assert metadata["00280010"]["Value"] == [ct_study.series.get().instances.first().rows]
    assert set(metadata["7FE00010"]) == {"vr", "BulkDataURI"}, "pixels come through WADO-RS, not in the page"


def test_page_asks_for_the_cornerstone_chunks_and_worker_with_itself(alliance_world: Any, ct_study: Any) -> None:
    client = client_for(alliance_world.owner)
    html = client.get(viewer_url(ct_study.study_uid)).content.decode()
    modules = re.findall(r'<link rel="modulepreload" href="([^"]+)">', html)
    assert any(re.search(r"/static/viewer/chunks/stack-[\w-]+\.js$", m) for m in modules), modules
    assert re.search(r'<link rel="prefetch" href="/static/viewer/workers/decodeImageFrameWorker-[\w-]+\.js">', html)
    for url in modules:
        assert finders.find(url.removeprefix("/static/")), f"{url} is in the committed bundle"
    fallback = client.get(viewer_url(ct_study.study_uid) + "?mode=rendered").content.decode()
    assert "modulepreload" not in fallback and 'rel="prefetch"' not in fallback


def test_config_reads_from_another_dicomweb_base_when_embedded(ct_study: Any) -> None:
    config = viewer_config(ct_study, dicomweb_base="/film/abc/dicomweb/", layout="touch")
    assert config["dicomweb"] == "/film/abc/dicomweb"
    assert config["layout"] == "touch"
    assert config["study_uid"] == ct_study.study_uid
    assert viewer_config(ct_study)["layout"] == "auto"
    assert viewer_config(ct_study)["dicomweb"] == "/dicomweb"


@pytest.mark.parametrize("base", ["https://elsewhere.example/dicomweb", "//elsewhere.example/dicomweb", "dicomweb"])
def test_config_refuses_a_dicomweb_base_off_this_site(ct_study: Any, base: str) -> None:
    with pytest.raises(ValueError, match="path on this site"):
        viewer_config(ct_study, dicomweb_base=base)


def test_config_refuses_an_unknown_layout(ct_study: Any) -> None:
    with pytest.raises(ValueError, match="layout"):
        viewer_config(ct_study, layout="tablet")


def test_include_renders_the_viewer_for_another_page(ct_study: Any) -> None:
    config = viewer_config(ct_study, dicomweb_base="/film/abc/dicomweb", layout="touch")
    html = render_to_string("viewer/_viewer.html", {"viewer_config": config, "preload": bundle_preload()})
    assert 'id="viewer"' in html and 'data-ui="touch"' in html
    assert config_of(html)["dicomweb"] == "/film/abc/dicomweb"
    assert '<script type="module" src="/static/viewer/viewer.js"></script>' in html
    assert '<link rel="stylesheet" href="/static/viewer/viewer.css">' in html
    assert "modulepreload" in html
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'type="application/json"' in tag or "src=" in tag, tag


def test_viewer_page_uses_the_include_with_the_automatic_layout(alliance_world: Any, ct_study: Any) -> None:
    html = client_for(alliance_world.owner).get(viewer_url(ct_study.study_uid)).content.decode()
    assert html.count('id="viewer"') == 1 and 'data-ui="auto"' in html
    assert config_of(html)["layout"] == "auto"


def test_viewer_page_takes_the_touch_layout_when_asked(alliance_world: Any, ct_study: Any) -> None:
    html = client_for(alliance_world.owner).get(viewer_url(ct_study.study_uid) + "?layout=touch").content.decode()
    assert 'data-ui="touch"' in html and config_of(html)["layout"] == "touch"
    assert "data-touch-preset" in html and 'data-touch-action="fullscreen"' in html

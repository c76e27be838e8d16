"""/healthz and /metrics: what a load balancer and Prometheus ask of a node."""

from __future__ import annotations

from typing import Any

import pytest
from celery.signals import task_failure
from django.test import Client

from alliance.models import TaskFailure
from imaging import health


@pytest.mark.django_db
def test_healthz_answers_ok_when_database_broker_and_store_answer() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "storage"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


@pytest.mark.django_db
def test_healthz_names_the_failing_part_with_503_and_no_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("s3.internal.example:9000 refused: secret-bucket")

    monkeypatch.setitem(health.CHECKS, "storage", broken)
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failing"
    assert body["checks"]["storage"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert b"secret-bucket" not in response.content


@pytest.mark.django_db
def test_storage_probe_leaves_nothing_behind() -> None:
    health.check_storage()
    storage = health.dicom_storage()
    files = storage.listdir("health")[1] if storage.exists("health") else []
    assert files == []


@pytest.mark.django_db
def test_metrics_refused_to_a_remote_address_without_the_token(settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-secret"
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 404
    wrong = Client(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.get("/metrics").status_code == 404
    # A loopback request that came through a proxy is a remote one.
    proxied = Client(HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_metrics_with_the_token_count_instances_failures_queues_and_requests(settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-secret"
    task_failure.send(sender=_FakeTask(), task_id="t-1", exception=ValueError("boom\nsecond line"))
    scraper = Client(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-secret")
    scraper.get("/healthz")
    response = scraper.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'alliance_task_failures_total{task="imaging.tasks.fake"} 1.0' in text
    assert 'alliance_queue_depth{queue="render"}' in text
    assert "alliance_spool_pending 0.0" in text
    assert "alliance_instances_indexed_total 0.0" in text
    assert 'alliance_request_duration_seconds_count{route="healthz",status="2xx"}' in text
    assert TaskFailure.objects.get().exception == "ValueError: boom"


def test_metrics_from_loopback_need_no_token(db: Any) -> None:
    assert Client().get("/metrics").status_code == 200


class _FakeTask:
    name = "imaging.tasks.fake"

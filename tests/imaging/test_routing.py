"""Routing's services and access rules, with the transport faked (tests/imaging/test_routing_peers.py
sends to real peers): the queue's state machine, retries with backoff, the study and case rules,
the devices-only grant of a consult, prefetch, and who may do what."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from alliance.access import AccessDenied, Principal, resolve_principal
from alliance.models import AuditEvent
from consults import services as consult_services
from imaging import access as imaging_access
from imaging.dicom import scu
from imaging.models import StudyGroupGrant
from imaging.routing import access, secrets, services, tasks
from imaging.routing.models import Destination, RouteItem, RouteRule, RouteScan, RouteSent, RouteTransition, State
from referrals import services as referral_services
from tests.factories import store_ct_study


def principal(doctor: Any) -> Principal:
    return resolve_principal(doctor.user)


class FakePeer:
    """Stands in for scu.send / stow.send: acknowledges everything, or fails as told."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: scu.Outcome | None = None

    def __call__(self, objects: Any, *, on_sent: Any) -> scu.Outcome:
        uids = [o.sop_instance_uid for o in objects]
        self.calls.append(uids)
        if self.fail is not None:
            return self.fail
        on_sent(uids)
        return scu.Outcome(sent=uids)


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> FakePeer:
    fake = FakePeer()
    monkeypatch.setattr(services, "_transport", lambda destination: fake)
    return fake


@pytest.fixture
def world(alliance_world: SimpleNamespace) -> SimpleNamespace:
    w = alliance_world
    by_a = principal(w.inst_admin_a)
    w.pacs_a = services.destination_save(
        by=by_a,
        institution=w.clin_a,
        values={"name": "PACS A", "kind": "dimse", "ae_title": "PACSA", "host": "127.0.0.1", "port": 11112},
    )
    w.pacs_hosp = services.destination_save(
        by=principal(w.hosp_admin),
        institution=w.hosp,
        values={"name": "Hospital PACS", "kind": "dimse", "ae_title": "HPACS", "host": "127.0.0.1", "port": 11113},
    )
    w.study = store_ct_study(w.clin_a, slices=3, patient_id="PA-1")
    return w


def test_a_manual_send_goes_through_pending_sending_sent_and_is_audited(
    world, peer, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        item = services.route_study(by=principal(world.owner), study=world.study, destination=world.pacs_a)
    assert item is not None
    item.refresh_from_db()
    assert (item.state, item.instances_sent, item.instances_total, item.attempts) == (State.SENT, 3, 3, 1)
    assert [t.to_state for t in RouteTransition.objects.filter(item=item)] == ["pending", "sending", "sent"]
    assert len(peer.calls) == 1 and len(peer.calls[0]) == 3
    assert AuditEvent.objects.filter(action="route.request", object_id=world.study.study_uid).exists()
    assert AuditEvent.objects.filter(action="route.send", outcome="success", object_id=world.study.study_uid).exists()


def test_a_second_delivery_of_the_task_sends_nothing_again(world, peer) -> None:  # type: ignore[no-untyped-def]
    item = services.route_study(by=principal(world.owner), study=world.study, destination=world.pacs_a)
    assert item is not None
    assert services.send_item(item_id=item.pk).ran
    assert not services.send_item(item_id=item.pk).ran  # sent: the redelivered message finds nothing owed
    assert len(peer.calls) == 1


def test_an_item_whose_task_never_reached_the_broker_is_sent_by_the_sweep(world, peer) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 3: the send task is queued after the commit; with the broker down then (here:
    the test's transaction never commits, so no task was queued) the beat sweep sends the item
    once it has waited REQUEUE_AFTER, and an item a killed worker held once its lease ran out."""
    item = services.route_study(by=principal(world.owner), study=world.study, destination=world.pacs_a)
    assert item is not None and item.state == State.PENDING and peer.calls == []
    assert tasks.sweep()["queued_again"] == 0  # its message may still be on its way
    long_ago = timezone.now() - services.REQUEUE_AFTER - timedelta(seconds=1)
    RouteItem.objects.filter(pk=item.pk).update(updated_at=long_ago)
    # Queued again once, then not on every sweep while the workers are busy.
    assert services.owed_again() == [item.pk]
    assert services.owed_again() == []
    assert services.owed_again(now=timezone.now() + services.REQUEUE_AFTER + timedelta(seconds=1)) == [item.pk]
    RouteItem.objects.filter(pk=item.pk).update(updated_at=long_ago)

    assert tasks.sweep()["queued_again"] == 1

    item.refresh_from_db()
    assert (item.state, item.attempts, item.instances_sent) == (State.SENT, 1, 3)
    RouteItem.objects.filter(pk=item.pk).update(updated_at=long_ago)
    assert tasks.sweep()["queued_again"] == 0 and len(peer.calls) == 1  # sent: never again
    workstation = services.destination_save(
        by=principal(world.inst_admin_a),
        institution=world.clin_a,
        values={"name": "Workstation A", "kind": "dimse", "ae_title": "WSA", "host": "127.0.0.1", "port": 11114},
    )
    held = services.route_study(by=principal(world.owner), study=world.study, destination=workstation)
    assert held is not None
    RouteItem.objects.filter(pk=held.pk).update(state=State.SENDING, lease_until=timezone.now() + timedelta(minutes=5))
    assert tasks.sweep()["queued_again"] == 0  # a live worker holds it
    RouteItem.objects.filter(pk=held.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert tasks.sweep()["queued_again"] == 1
    held.refresh_from_db()
    assert held.state == State.SENT and len(peer.calls) == 2


def test_a_transient_failure_is_failed_with_the_reason_then_retried_after_the_backoff(world, peer, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROUTE_RETRY_BASE_SECONDS, settings.ROUTE_RETRY_MAX_SECONDS, settings.ROUTE_MAX_ATTEMPTS = 10, 40, 3
    item = services.route_study(by=principal(world.owner), study=world.study, destination=world.pacs_a)
    assert item is not None
    peer.fail = scu.Outcome().stop("PACSA@127.0.0.1:11112: could not connect", transient=True)
    attempt = services.send_item(item_id=item.pk)
    item.refresh_from_db()
    assert (item.state, item.transient, attempt.retry_in) == (State.FAILED, True, 10.0)
    assert "could not connect" in item.reason
    assert not services.send_item(item_id=item.pk).ran  # not due yet: a duplicate message waits
    RouteItem.objects.filter(pk=item.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert services.send_item(item_id=item.pk).retry_in == 20.0  # doubled
    RouteItem.objects.filter(pk=item.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert services.send_item(item_id=item.pk).retry_in is None  # the third attempt was the last
    item.refresh_from_db()
    assert (item.state, item.transient, item.attempts) == (State.FAILED, False, 3)
    peer.fail = None
    services.retry_now(by=principal(world.inst_admin_a), item=item)
    assert services.send_item(item_id=item.pk).ran
    item.refresh_from_db()
    assert (item.state, item.attempts, item.reason) == (State.SENT, 1, "")


def test_a_refused_instance_fails_the_item_with_the_peer_status_and_only_it_is_sent_again(world, peer) -> None:  # type: ignore[no-untyped-def]
    item = services.route_study(by=principal(world.owner), study=world.study, destination=world.pacs_a)
    assert item is not None
    uids = list(world.study.series.get().instances.values_list("sop_uid", flat=True))

    def partly(objects: Any, *, on_sent: Any) -> scu.Outcome:
        on_sent([o.sop_instance_uid for o in objects[1:]])
        return scu.Outcome(
            sent=[o.sop_instance_uid for o in objects[1:]], refused={objects[0].sop_instance_uid: (0xA900, "mismatch")}
        )

    services._transport = lambda destination: partly  # type: ignore[assignment]
    services.send_item(item_id=item.pk)
    item.refresh_from_db()
    assert (item.state, item.peer_status, item.transient, item.instances_sent) == (State.FAILED, 0xA900, False, 2)
    assert "0xA900 mismatch" in item.reason
    services._transport = lambda destination: peer  # type: ignore[assignment]
    services.retry_now(by=principal(world.inst_admin_a), item=item)
    services.send_item(item_id=item.pk)
    assert len(peer.calls[-1]) == 1 and peer.calls[-1][0] in uids
    assert RouteSent.objects.filter(item=item).count() == 3


def test_marks_reported_twice_are_kept_once_with_their_instance_and_renew_the_lease(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    item = services.route_study(by=principal(world.owner), study=world.study, destination=world.pacs_a)
    assert item is not None
    instances = list(world.study.series.get().instances.order_by("pk"))
    by_uid = {i.sop_uid: i.pk for i in instances}

    def twice(objects: Any, *, on_sent: Any) -> scu.Outcome:
        uids = [o.sop_instance_uid for o in objects]
        on_sent(uids[:2])
        RouteItem.objects.filter(pk=item.pk).update(lease_until=None)
        on_sent(uids[1:])  # the second acknowledged again: one mark still
        assert RouteItem.objects.get(pk=item.pk).lease_until is not None
        return scu.Outcome(sent=uids)

    monkeypatch.setattr(services, "_transport", lambda destination: twice)
    services.send_item(item_id=item.pk)
    marks = sorted(RouteSent.objects.filter(item=item).values_list("instance_id", flat=True))
    assert marks == sorted(by_uid.values())
    item.refresh_from_db()
    assert (item.state, item.instances_sent) == (State.SENT, len(instances))


def test_the_study_rules_fire_once_the_study_is_quiet_and_again_only_for_new_instances(world, peer, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROUTE_QUIET_SECONDS = 30
    services.route_quiet_studies()  # the first sweep sets where it starts
    RouteScan.objects.update(through=timezone.now() - timedelta(hours=1))
    RouteRule.objects.create(institution=world.clin_a, destination=world.pacs_a, name="CT", modality="CT")
    RouteRule.objects.filter(name="CT").update(created_at=timezone.now() - timedelta(hours=2))
    late = store_ct_study(world.clin_a, slices=2, patient_id="PA-2", study_description="MR knee")
    assert services.route_quiet_studies() == 0  # the studies are not quiet yet
    later = timezone.now() + timedelta(seconds=31)
    assert services.route_quiet_studies(now=later) == 2  # both CT studies
    items = RouteItem.objects.filter(destination=world.pacs_a)
    assert {i.study_id for i in items} == {world.study.pk, late.pk}
    assert services.route_quiet_studies(now=later) == 0  # idempotent within the overlap
    for item in items:
        services.send_item(item_id=item.pk)
    assert set(items.values_list("state", flat=True)) == {State.SENT}


def test_description_regex_and_source_conditions(world) -> None:  # type: ignore[no-untyped-def]
    rule = RouteRule(modality="CT", description=r"^CT\s+che", description_match="regex")
    assert services.study_matches(rule, world.study, set)
    rule.source_ae = "CT_A"
    assert not services.study_matches(rule, world.study, set)
    assert services.study_matches(rule, world.study, lambda: {"CT_A"})
    with pytest.raises(ValidationError) as bad:
        services.rule_save(
            by=principal(world.inst_admin_a),
            institution=world.clin_a,
            values={"name": "bad", "destination": world.pacs_a, "description": "(a+)+$", "description_match": "regex"},
        )
    assert "description" in bad.value.message_dict


def test_a_consult_case_rule_opens_the_studies_to_the_hospital_devices_only_and_prefetches_priors(
    world, peer, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    services.rule_save(
        by=principal(world.hosp_admin),
        institution=world.hosp,
        values={
            "name": "cases",
            "destination": world.pacs_hosp,
            "trigger": "case",
            "case_kind": "consult",
            "prefetch": True,
        },
    )
    prior = store_ct_study(world.clin_a, slices=1, patient_id="PA-1", study_description="CT old")
    by = principal(world.owner)
    consult = consult_services.consult_create(by=by, studies=[world.study], question="Nodule?", pool=world.pool)
    # the hospital's devices may see the prior only through an earlier referral of that study
    referral = referral_services.referral_create(
        by=by, studies=[prior], direction="up", to_institution=world.hosp, reason="r", urgency="routine"
    )
    referral_services.referral_request(referral=referral, by=by)
    with django_capture_on_commit_callbacks(execute=True):
        consult_services.consult_request(consult=consult, by=by)
    items = RouteItem.objects.filter(destination=world.pacs_hosp)
    assert {(i.study_id, i.prefetch, i.state) for i in items} == {
        (world.study.pk, False, "sent"),
        (prior.pk, True, "sent"),
    }
    grant = StudyGroupGrant.objects.get(basis=consult.basis, group=world.hosp.group)
    assert grant.devices_only
    # the hospital's devices see the study; its doctors outside the case do not
    assert imaging_access.studies_visible_to_devices_of(world.hosp).filter(pk=world.study.pk).exists()
    assert (
        not imaging_access.studies_visible_to(principal(world.outsider_specialist)).filter(pk=world.study.pk).exists()
    )
    # claiming narrows the readers' grants but keeps the devices'; cancelling ends it
    consult_services.consult_claim(consult=consult, by=principal(world.specialist))
    assert imaging_access.studies_visible_to_devices_of(world.hosp).filter(pk=world.study.pk).exists()
    consult_services.consult_cancel(consult=consult, by=by, reason="no longer needed")
    assert not imaging_access.studies_visible_to_devices_of(world.hosp).filter(pk=world.study.pk).exists()


def test_an_item_whose_study_is_no_longer_shared_fails_without_sending(world, peer) -> None:  # type: ignore[no-untyped-def]
    by = principal(world.owner)
    consult = consult_services.consult_create(by=by, studies=[world.study], question="?", pool=world.pool)
    consult = consult_services.consult_request(consult=consult, by=by)
    specialist = principal(world.specialist)
    assert consult_services.consult_route(consult=consult, by=specialist, destination=world.pacs_hosp) == 1
    consult_services.consult_cancel(consult=consult, by=by, reason="withdrawn")
    item = RouteItem.objects.get(destination=world.pacs_hosp)
    services.send_item(item_id=item.pk)
    item.refresh_from_db()
    assert item.state == State.FAILED and "no longer shared" in item.reason and peer.calls == []


def test_who_may_route(world) -> None:  # type: ignore[no-untyped-def]
    study, pacs_a, pacs_hosp = world.study, world.pacs_a, world.pacs_hosp
    assert access.may_route_study(principal(world.owner), study, pacs_a)
    assert access.may_route_study(principal(world.colleague), study, pacs_a)
    assert not access.may_route_study(principal(world.owner), study, pacs_hosp)  # not their institution's
    assert not access.may_route_study(principal(world.stranger), study, pacs_a)
    assert not access.may_route_study(principal(world.specialist), study, pacs_hosp)  # no case
    assert not access.may_route_study(principal(world.alliance_admin), study, pacs_a)
    assert access.may_manage_routing(principal(world.inst_admin_a), world.clin_a)
    assert not access.may_manage_routing(principal(world.owner), world.clin_a)
    assert not access.may_manage_routing(principal(world.hosp_admin), world.clin_a)
    assert not access.may_manage_routing(principal(world.alliance_admin), world.clin_a)
    with pytest.raises(AccessDenied):
        services.route_study(by=principal(world.stranger), study=study, destination=pacs_a)


def test_a_token_is_kept_encrypted_and_never_shown(world, settings) -> None:  # type: ignore[no-untyped-def]
    stow = services.destination_save(
        by=principal(world.inst_admin_a),
        institution=world.clin_a,
        values={"name": "Web PACS", "kind": "stow", "url": "https://pacs.example.org/dicomweb"},
        token="s3cret-token",
    )
    row = Destination.objects.get(pk=stow.pk)
    assert "s3cret" not in row.token_encrypted and secrets.unseal(row.token_encrypted) == "s3cret-token"
    settings.ROUTE_TOKEN_KEY = "another key"
    with pytest.raises(secrets.TokenUnreadable):
        secrets.unseal(row.token_encrypted)
    assert not AuditEvent.objects.filter(detail__icontains="s3cret").exists()


def test_a_dicom_destination_needs_its_address(world) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as bad:
        services.destination_save(
            by=principal(world.inst_admin_a), institution=world.clin_a, values={"name": "x", "kind": "dimse"}
        )
    assert {"ae_title", "host", "port"} <= set(bad.value.message_dict)


def test_the_sent_marks_commit_without_waiting_for_the_disk_and_the_result_waits(world, peer) -> None:  # type: ignore[no-untyped-def]
    """The marks written between two C-STOREs: synchronous_commit off for their transaction only
    (SET LOCAL), before their INSERT; the attempt's result is written after, as usual."""
    item = services.route_study(by=principal(world.owner), study=world.study, destination=world.pacs_a)
    assert item is not None
    statements: list[str] = []

    def seen(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    services._transport = lambda destination: peer  # type: ignore[assignment]
    with connection.execute_wrapper(seen):
        services.send_item(item_id=item.pk)
    item.refresh_from_db()
    assert item.state == State.SENT and RouteSent.objects.filter(item=item).count() == item.instances_total
    marks = next(i for i, sql in enumerate(statements) if "INSERT INTO" in sql and "routesent" in sql)
    assert statements[marks - 1] == "SET LOCAL synchronous_commit TO OFF"
    assert statements.count("SET LOCAL synchronous_commit TO OFF") == 1  # one run of marks for this small study

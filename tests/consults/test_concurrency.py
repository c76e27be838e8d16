"""One reader per case: two specialists claim at the same moment on PostgreSQL; one wins."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from alliance.access import resolve_principal
from consults import services
from consults.models import ConsultTransition, Status
from tests.consults.conftest import walk
from tests.factories import make_doctor


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_claims_have_exactly_one_winner(alliance_world: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the row lock is tested on PostgreSQL")
    world = alliance_world
    rival = make_doctor(institution=world.hosp, roles=["specialist"], username="rival")
    world.pool.members.add(rival)
    consult = walk(world, Status.REQUESTED)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def claim(user: Any) -> None:
        from django.db import connections
        from django.utils import translation

        try:
            barrier.wait(timeout=10)
            with translation.override("en"):
                services.consult_claim(consult=consult, by=resolve_principal(user))
            outcomes[user.username] = "won"
        except services.IllegalTransition as exc:
            outcomes[user.username] = str(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(d.user,)) for d in (world.specialist, rival)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes.values()).count("won") == 1
    loser_message = next(v for v in outcomes.values() if v != "won")
    assert "was already claimed by Doctor" in loser_message and str(consult.pk) in loser_message
    consult.refresh_from_db()
    assert consult.status == Status.ACCEPTED
    winner = next(k for k, v in outcomes.items() if v == "won")
    assert consult.owner.user.username == winner
    assert consult.owner.display_name in loser_message
    assert ConsultTransition.objects.filter(consult=consult, action="claim").count() == 1

"""The alliance the fault tests store into: clinic A (called AE title CLINA) and its CT,
CT_A on 127.0.0.1, committed for the real processes to see."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from alliance import audit, services
from tests import factories


@pytest.fixture
def dimse_world(transactional_db: Any) -> SimpleNamespace:
    alliance = factories.AllianceFactory(name="Fault Alliance")
    clin_a = factories.make_institution(alliance=alliance, ae_title="CLINA", name="Clinic A")
    ct_a = services.device_create(institution=clin_a, ae_title="CT_A", host="127.0.0.1", port=104, by=audit.SYSTEM)
    return SimpleNamespace(alliance=alliance, clin_a=clin_a, ct_a=ct_a)

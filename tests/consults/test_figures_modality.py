"""A consult keeps the modality of its first study, for the figures' count by modality."""

from __future__ import annotations

from typing import Any

import pytest

from imaging.models import Study
from tests.consults.conftest import walk
from tests.factories import StudyFactory


@pytest.mark.parametrize(
    ("modalities", "principal"), [("CT", "CT"), ("SR\\MR", "MR"), ("PR\\KO", "PR"), ("", ""), ("DX\\CR", "DX")]
)
def test_principal_modality_skips_documents_and_presentation_objects(modalities: str, principal: str) -> None:
    assert Study(modalities=modalities).principal_modality == principal


@pytest.mark.django_db
def test_a_new_consult_keeps_its_first_studys_modality(world: Any) -> None:
    consult = walk(world, "draft", study=StudyFactory(institution=world.clin_a, modalities="SR\\MR"))
    assert consult.modality == "MR"

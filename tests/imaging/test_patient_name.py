"""Patient names on pages are written as people write them, from DICOM PN (PS3.5 6.2.1.1)."""

import pytest
from django.utils import translation

from imaging.models import Patient


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("Huang^Yongqiang=黄^永强", "黄永强 (Huang Yongqiang)"),
        ("=王^芳", "王芳"),
        ("DOE^JOHN", "DOE JOHN"),
        ("DOE^JOHN^^^", "DOE JOHN"),
        ("", ""),
    ],
)
def test_display_name_reads_alphabetic_and_ideographic_groups(stored: str, shown: str) -> None:
    assert Patient(name=stored).display_name == shown


def test_referring_physician_is_written_the_same_way() -> None:
    from imaging.models import Study

    assert Study(referring_physician="Li^Wei=李^伟").referring_physician_name == "李伟 (Li Wei)"
    assert Study(referring_physician="Ref^Doctor").referring_physician_name == "Ref Doctor"


@pytest.mark.parametrize(
    ("sent", "english", "chinese"),
    [("M", "male", "男"), ("F", "female", "女"), ("O", "other", "其他"), ("", "", ""), ("X", "X", "X")],
)
def test_patient_sex_is_shown_in_the_readers_language(sent: str, english: str, chinese: str) -> None:
    patient = Patient(sex=sent)
    with translation.override("en"):
        assert patient.sex_display == english
    with translation.override("zh-hans"):
        assert patient.sex_display == chinese

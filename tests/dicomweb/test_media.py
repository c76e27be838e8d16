"""Accept-header negotiation in the forms PS3.18 uses."""

from __future__ import annotations

import pytest

from imaging.dicomweb import media


def test_multipart_accept_with_quoted_type_and_transfer_syntax_is_understood() -> None:
    accepted = media.parse_accept('multipart/related; type="application/dicom"; transfer-syntax=*')
    assert accepted[0].type == "multipart/related"
    assert accepted[0].part_type == "application/dicom"
    assert accepted[0].transfer_syntax == "*"
    assert media.multipart_ranges(accepted, {"application/dicom"})[0][0] == "application/dicom"


def test_ranges_are_ordered_by_quality_and_zero_quality_is_dropped() -> None:
    accepted = media.parse_accept("image/png;q=0.5, image/jpeg, image/gif;q=0")
    assert [r.type for r in accepted] == ["image/jpeg", "image/png"]


def test_choose_honours_wildcards_and_refuses_what_it_cannot_produce() -> None:
    assert media.choose(media.parse_accept("*/*"), ["application/dicom+json"])[0] == "application/dicom+json"
    assert media.choose(media.parse_accept("image/*"), ["image/jpeg", "image/png"])[0] == "image/jpeg"
    assert media.choose(media.parse_accept(""), ["image/png"])[0] == "image/png"
    with pytest.raises(media.NotAcceptable):
        media.choose(media.parse_accept("application/dicom+xml"), ["application/dicom+json"])


def test_multipart_of_another_part_type_is_not_offered() -> None:
    accepted = media.parse_accept('multipart/related; type="application/dicom+xml"')
    assert media.multipart_ranges(accepted, {"application/dicom"}) == []
    legacy = media.parse_accept('multipart/related; type="image/x-dicom-rle"')
    assert media.multipart_ranges(legacy, {"image/dicom-rle"})[0][0] == "image/dicom-rle"


def test_accept_query_parameter_replaces_the_header() -> None:
    accepted = media.accept_of({"HTTP_ACCEPT": "image/png"}, ["image/jpeg"])
    assert [r.type for r in accepted] == ["image/jpeg"]


def test_content_type_of_a_multipart_response_names_type_and_boundary() -> None:
    value = media.multipart_content_type("application/dicom", "b0", "1.2.840.10008.1.2.1")
    assert value == 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; boundary=b0'

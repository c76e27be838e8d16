"""The figures' SVG charts: well-formed, labelled for screen readers, and nothing drawn off the picture."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from alliance import charts
from alliance.figures import Chart, Series

SVG = "{http://www.w3.org/2000/svg}"


def _svg(chart: Chart) -> ET.Element:
    return ET.fromstring(str(charts.render(chart, "A chart")))  # noqa: S314  (our own SVG, not untrusted input)


def test_every_tick_label_of_a_column_chart_has_room_left_of_the_axis() -> None:
    chart = Chart(kind="columns", categories=["2026-11", "2026-12"], series=[Series("Up", [0, 4])])
    svg = _svg(chart)
    lines = [float(line.get("x1", 0)) for line in svg.iter(f"{SVG}line")]
    axis = min(lines)
    for text in svg.iter(f"{SVG}text"):
        if text.get("text-anchor") == "end" and re.fullmatch(r"[\d.,]+", text.text or ""):
            assert float(text.get("x", 0)) - charts.text_width(text.text or "") >= 0, text.text
            assert float(text.get("x", 0)) < axis


def test_a_long_category_is_cut_with_the_whole_name_in_its_tooltip() -> None:
    name = "市第一人民医院 (First People's Hospital of the City)"
    chart = Chart(kind="bars", categories=[name, "Clinic"], series=[Series("Accepted", [100.0, None])], unit="%")
    svg = _svg(chart)
    labels = [t for t in svg.iter(f"{SVG}text") if t.find(f"{SVG}title") is not None]
    assert labels[0].find(f"{SVG}title").text == name  # type: ignore[union-attr]
    shown = "".join(labels[0].itertext()).replace(name, "")
    assert shown.endswith("…") and charts.text_width(shown) <= charts.WIDTH * 0.4
    value = next(t for t in svg.iter(f"{SVG}text") if t.text == "100")
    assert float(value.get("x", 0)) + charts.text_width("100") <= charts.WIDTH


def test_fit_keeps_a_short_text_whole() -> None:
    assert charts.fit("Clinic A", 100) == "Clinic A"

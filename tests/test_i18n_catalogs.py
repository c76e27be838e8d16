"""Every translatable string of the project has a zh-hans translation in some app's catalog.

The extractor is deliberately small: {% translate/trans "..." %} and {% blocktranslate %}
blocks in templates/**, and gettext calls with a literal first argument in the apps' .py
files (read with ast, so implicit string concatenation is handled). A string missing
from every catalog (*/locale, imaging/*/locale, consults/*/locale) fails here with its file and text.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
APPS = ["alliance", "imaging", "consults", "referrals"]
GETTEXT_NAMES = {
    "_",
    "gettext",
    "gettext_lazy",
    "gettext_noop",
    "pgettext",
    "pgettext_lazy",
    "ngettext",
    "ngettext_lazy",
}
CONTEXT_FIRST = {"pgettext", "pgettext_lazy"}

TRANS_TAG = re.compile(r"""{%\s*(?:translate|trans)\s+(?P<q>["'])(?P<msg>.*?)(?P=q)(?P<rest>[^%]*)%}""", re.S)
BLOCK_TAG = re.compile(
    r"{%\s*(?:blocktranslate|blocktrans)(?P<args>[^%]*)%}(?P<body>.*?){%\s*(?:endblocktranslate|endblocktrans)\s*%}",
    re.S,
)
TEMPLATE_UNDERSCORE = re.compile(r"""\b_\((?P<q>["'])(?P<msg>.*?)(?P=q)\)""")
VARIABLE = re.compile(r"{{\s*(\w+)\s*}}")
PLURAL = re.compile(r"{%\s*plural\s*%}")


def _block_msgid(body: str, trimmed: bool) -> str:
    text = body.replace("%", "%%")
    text = VARIABLE.sub(lambda m: f"%({m.group(1)})s", text)
    if trimmed:
        text = " ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text


def template_messages(path: Path) -> Iterator[tuple[str, str]]:
    source = path.read_text(encoding="utf-8")
    for match in TRANS_TAG.finditer(source):
        if " noop" not in match.group("rest"):
            yield match.group("msg"), ""
    for match in TEMPLATE_UNDERSCORE.finditer(source):
        yield match.group("msg"), ""
    for match in BLOCK_TAG.finditer(source):
        trimmed = "trimmed" in match.group("args")
        context = re.search(r"""context\s+(["'])(.*?)\1""", match.group("args"))
        singular = PLURAL.split(match.group("body"))[0]
        yield _block_msgid(singular, trimmed), context.group(2) if context else ""


def python_messages(path: Path) -> Iterator[tuple[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name not in GETTEXT_NAMES:
            continue
        args = node.args[1:] if name in CONTEXT_FIRST else node.args
        context = node.args[0].value if name in CONTEXT_FIRST and isinstance(node.args[0], ast.Constant) else ""
        if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            yield args[0].value, str(context)


def source_files() -> Iterator[Path]:
    yield from sorted((ROOT / "templates").rglob("*.html"))
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if "migrations" in parts or "locale" in parts or "static" in parts:
                continue
            if path.suffix == ".py" or (path.suffix in {".html", ".txt"} and "templates" in parts):
                yield path


def owner_of(where: str) -> str:
    """The app whose catalog should hold a string: templates/<app>/ belong to that app,
    the shared layout and the remaining templates to alliance."""
    parts = where.split("/")
    if parts[0] == "templates":
        return parts[1] if len(parts) > 2 and parts[1] in APPS else "alliance"
    return parts[0]


def all_messages() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for path in source_files():
        extract = python_messages if path.suffix == ".py" else template_messages
        for msgid, context in extract(path):
            if msgid.strip():
                found.setdefault((msgid, context), str(path.relative_to(ROOT)))
    return found


def translated() -> set[tuple[str, str]]:
    done: set[tuple[str, str]] = set()
    for po in (
        sorted(ROOT.glob("*/locale/zh_Hans/LC_MESSAGES/django.po"))
        + sorted(ROOT.glob("imaging/*/locale/zh_Hans/LC_MESSAGES/django.po"))
        + sorted(ROOT.glob("consults/*/locale/zh_Hans/LC_MESSAGES/django.po"))
    ):
        with po.open("rb") as handle:
            catalog = read_po(handle)
        for message in catalog:
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            if message.id and all(strings) and not message.fuzzy:
                msgid = message.id[0] if isinstance(message.id, tuple) else message.id
                done.add((msgid, message.context or ""))
    return done


def test_extractor_sees_the_ways_strings_are_marked(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "{% translate \"Sign in\" %}{% trans 'Home' as home %}"
        "{% blocktranslate with name=x %}Hello {{ name }}, 100%{% endblocktranslate %}"
        "{% blocktranslate count n=k %}{{ n }} item{% plural %}{{ n }} items{% endblocktranslate %}",
        encoding="utf-8",
    )
    module = tmp_path / "m.py"
    module.write_text('_("Saved.")\ngettext_lazy("a" "b")\npgettext("menu", "Open")\nprint("not this")\n')
    assert list(template_messages(page)) == [
        ("Sign in", ""),
        ("Home", ""),
        ("Hello %(name)s, 100%%", ""),
        ("%(n)s item", ""),
    ]
    assert list(python_messages(module)) == [("Saved.", ""), ("ab", ""), ("Open", "menu")]


def test_catalogs_are_found() -> None:
    assert (ROOT / "alliance/locale/zh_Hans/LC_MESSAGES/django.po").exists()


@pytest.mark.parametrize("app", APPS)
def test_every_marked_string_has_a_chinese_translation(app: str) -> None:
    done = translated()
    missing = [
        f"{where}: {msgid!r}" + (f" (context {context!r})" if context else "")
        for (msgid, context), where in sorted(all_messages().items(), key=lambda item: item[1])
        if (msgid, context) not in done and owner_of(where) == app
    ]
    assert not missing, "untranslated strings (add them to the app's zh_Hans django.po):\n" + "\n".join(missing)

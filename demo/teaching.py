"""The demo's teaching case for `manage.py seed_demo`: the signed brain MR consult of the demo
(demo/consults.py), made into a published case with a quiz by its reader, so that the library
is not empty. Made through consults.teaching.services like any specialist's; known by its
title, so that a second run makes nothing."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from alliance import audit
from alliance.access import resolve_principal
from alliance.models import Doctor
from consults.models import Consult, Status
from consults.teaching import diseases, services
from consults.teaching.models import Disease, TeachingCase
from demo.consults import READER
from demo.loaders import Writer

TITLE = "反复头痛两个月 (Headaches for two months)"
TEXT = {
    "question": "中年患者反复头痛两个月，神经系统查体阴性。T2 像上的点状高信号最可能是什么？\n"
    "(Two months of headaches, normal neurological examination: what are the dotted T2 hyperintensities?)",
    "findings": "双侧侧脑室旁白质见数个点状T2高信号，直径小于3毫米，无占位效应。\n"
    "(A few dotted T2 hyperintensities under 3 mm in the periventricular white matter, no mass effect.)",
    "diagnosis": "脑小血管病，Fazekas 1级；颅内未见占位。\n(Cerebral small vessel disease, Fazekas grade 1; no mass.)",
    "discussion": "点状、对称、无强化、无占位效应的白质高信号多为缺血性改变；与转移瘤、胶质瘤鉴别的要点是"
    "形态、分布及占位效应。\n(Dotted, symmetric white-matter hyperintensities without mass effect are "
    "mostly ischaemic; shape, distribution and mass effect tell them from metastases or glioma.)",
}
ANSWER = "small-vessel-disease"
WRONG = ("brain-metastases", "glioma", "acute-ischaemic-stroke")


def load(*, stdout: Writer, actor: audit.Actor) -> None:
    """seed_demo's loader."""
    load_demo_teaching(stdout)


def load_demo_teaching(stdout: Writer | None = None) -> int:
    """The demo's published teaching case; returns 1 when it was made now."""

    def say(text: str) -> None:
        if stdout is not None:
            stdout.write(text)

    reader = Doctor.objects.filter(user__username=READER).select_related("user").first()
    consult = Consult.objects.filter(owner=reader, status=Status.COMPLETED, modality="MR").first()
    if reader is None or consult is None:
        say("Demo teaching case skipped: no signed brain MR consult of the demo.\n")
        return 0
    if TeachingCase.objects.filter(author=reader, title=TITLE).exists():
        say("Demo teaching case: 0 new.\n")
        return 0
    try:
        _make(consult, reader)
    except ValidationError as exc:
        say(f"Demo teaching case skipped: {' '.join(exc.messages)}\n")
        return 0
    say("Demo teaching case: 1 new (published).\n")
    return 1


@transaction.atomic  # published whole, or not at all
def _make(consult: Consult, reader: Doctor) -> None:
    by = resolve_principal(reader.user)
    study = consult.studies.get()
    series = [s.series_uid for s in study.series.filter(modality="MR")]
    case = services.case_create(by=by, study=study, series_uids=series, key_sop_uids=[], title=TITLE)
    diseases.ensure_kept_list()  # migration 0002 seeds it; an operator may have removed some since
    answer = Disease.objects.get(code=ANSWER)
    case = services.case_update(
        case=case,
        by=by,
        title=TITLE,
        modality="MR",
        body_part="head",
        difficulty="intermediate",
        diseases=[answer],
        answer=answer,
        distractors=list(Disease.objects.filter(code__in=WRONG)),
        **TEXT,
    )
    services.case_publish(case=case, by=by)

"""Demo consults for `manage.py seed_demo`: report templates, the list of critical findings, and three cases from the
Qingshan health centre to the city hospital's radiology desk, so that a newcomer finds a
living worklist: one waiting to be claimed, one being read, one with a signed report.

Everything goes through consults.services like any user's clicks. A case is known by its
requester and question, a template by its alliance, modality, body part and name: a
second run finds them and creates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction

from alliance import audit
from alliance.access import resolve_principal
from alliance.models import Alliance, Doctor, Institution, Pool
from consults import critical, services
from consults.models import Consult, CriticalFinding, Priority, ReportTemplate, Status
from demo.loaders import Writer
from imaging.models import Study

REQUESTER = "qingshan_doctor"
READER = "radiologist"
CLINIC = "QINGSHAN"
DESK = ("CITYHOSP", "radiology")


@dataclass(frozen=True)
class DemoTemplate:
    name: str
    modality: str
    body_part: str
    findings: str
    impression: str
    recommendation: str = ""


CHEST_FILM = DemoTemplate(
    "胸部X线正位片 (Chest radiograph, PA)",
    "CR",
    "CHEST",
    "胸廓对称，气管居中。\n双肺纹理清晰，未见明确实变影及结节影。\n双肺门不大。\n心影大小、形态未见异常。\n"
    "双侧膈面光整，肋膈角锐利。\n所见骨骼未见明显异常。",
    "心、肺、膈未见明显异常。",
    "如临床症状持续，建议胸部CT进一步检查。",
)
# The alliance's starting list of critical findings (危急值) per modality, after the lists
# Chinese hospitals keep for their radiology departments; the alliance admin edits it.
CRITICAL_FINDINGS: dict[str, tuple[str, ...]] = {
    "CT": (
        "张力性气胸 (Tension pneumothorax)",
        "主动脉夹层 (Aortic dissection)",
        "急性颅内出血 (Acute intracranial haemorrhage)",
        "大面积脑梗死 (Large cerebral infarction)",
        "肺动脉栓塞 (Pulmonary embolism)",
        "消化道穿孔、游离气体 (Free intraperitoneal gas)",
        "急性肠梗阻 (Acute bowel obstruction)",
    ),
    "MR": ("急性脑梗死 (Acute cerebral infarction)", "急性颅内出血 (Acute intracranial haemorrhage)"),
    "DX": (
        "气胸 (Pneumothorax)",
        "膈下游离气体 (Free gas under the diaphragm)",
        "急性肠梗阻 (Acute bowel obstruction)",
    ),
    "CR": (
        "气胸 (Pneumothorax)",
        "膈下游离气体 (Free gas under the diaphragm)",
        "急性肠梗阻 (Acute bowel obstruction)",
    ),
    "US": ("异位妊娠破裂 (Ruptured ectopic pregnancy)", "心包填塞 (Cardiac tamponade)"),
}
TEMPLATES = (
    DemoTemplate(
        "胸部CT平扫 (Chest CT, non-contrast)",
        "CT",
        "CHEST",
        "胸廓对称，气管及各级支气管通畅。\n双肺纹理清晰，未见明确实变、结节或肿块影。\n"
        "纵隔居中，纵隔及双肺门未见肿大淋巴结。\n心脏大小正常，心包未见积液。\n双侧胸腔未见积液。\n"
        "扫描范围内骨质未见明显异常。",
        "胸部CT平扫未见明显异常。",
        "请结合临床；如有需要，随访复查。",
    ),
    CHEST_FILM,
    replace(CHEST_FILM, name="胸部DR正位片 (Chest DR, PA)", modality="DX"),
    DemoTemplate(
        "头颅MR平扫 (Brain MR, non-contrast)",
        "MR",
        "HEAD",
        "脑实质内未见异常信号，灰白质分界清楚。\n脑室系统大小、形态正常，脑沟、脑裂、脑池未见增宽。\n"
        "中线结构居中。\n小脑、脑干未见异常。\n所见鼻窦及乳突未见异常信号。",
        "头颅MR平扫未见明显异常。",
        "",
    ),
)


@dataclass(frozen=True)
class DemoCase:
    modality: str
    body_part: str
    priority: str
    question: str
    history: str
    status: str
    report: tuple[str, str] | None = None  # findings, impression of the signed report


CASES = (
    DemoCase(
        "CT",
        "CHEST",
        Priority.URGENT,
        "发热、咳嗽一周，右下肺闻及湿啰音。肺炎？有无胸腔积液？ "
        "(Fever and cough for a week, crackles at the right base: pneumonia? effusion?)",
        "68岁，高血压病史十年，无吸烟史。",
        Status.REQUESTED,
    ),
    DemoCase(
        "DX",
        "CHEST",
        Priority.ROUTINE,
        "体检胸片，左上肺可疑小结节影，请会诊。 (Routine chest film: a possible small nodule in the left upper lobe?)",
        "无症状，年度体检。",
        Status.IN_PROGRESS,
    ),
    DemoCase(
        "MR",
        "HEAD",
        Priority.ASAP,
        "反复头痛两个月，排除颅内占位。 (Headaches for two months: any intracranial mass?)",
        "头痛以晨起为著，无呕吐，神经系统查体阴性。",
        Status.COMPLETED,
        (
            "脑实质内未见异常信号，灰白质分界清楚。\n双侧侧脑室旁白质见数个点状T2高信号，直径小于3毫米。\n"
            "脑室系统大小、形态正常。\n中线结构居中。",
            "1. 颅内未见占位性病变。\n2. 双侧侧脑室旁少许缺血性白质高信号（Fazekas 1级）。",
        ),
    ),
)


def load(*, stdout: Writer, actor: audit.Actor) -> None:
    """seed_demo's loader."""
    load_demo_consults(stdout=stdout, actor=actor)


def load_demo_consults(stdout: Writer | None = None, actor: audit.Actor = audit.SYSTEM) -> int:
    """The demo templates and cases; returns how many cases were new."""

    def say(text: str) -> None:
        if stdout is not None:
            stdout.write(text)

    clinic = Institution.objects.filter(ae_title=CLINIC).select_related("alliance").first()
    if clinic is None:
        say(f"Demo consults skipped: no institution {CLINIC}.\n")
        return 0
    templates = _load_templates(clinic.alliance, actor)
    findings = _load_critical_findings(clinic.alliance, actor)
    requester = Doctor.objects.filter(user__username=REQUESTER).select_related("user").first()
    reader = Doctor.objects.filter(user__username=READER).select_related("user").first()
    pool = Pool.objects.filter(institution__ae_title=DESK[0], specialty__code=DESK[1], active=True).first()
    if requester is None or reader is None or pool is None:
        say("Demo consults skipped: the demo doctors or the radiology desk are missing.\n")
        return 0
    new = 0
    for case in CASES:
        study = _study(clinic, case)
        if study is None:
            say(f"Demo consult {case.modality} {case.body_part} skipped: {CLINIC} has no such study.\n")
            continue
        if Consult.objects.filter(requester=requester, question=case.question).exists():
            continue
        with transaction.atomic():  # a case is made whole or not at all
            _walk(case, study, resolve_principal(requester.user), resolve_principal(reader.user), pool)
        new += 1
    say(f"Demo critical findings: {findings} new.\n")
    say(f"Demo report templates: {templates} new. Demo consults from {CLINIC} to {pool.name}: {new} new.\n")
    return new


def _load_templates(alliance: Alliance, actor: audit.Actor) -> int:
    new = 0
    for t in TEMPLATES:
        known = ReportTemplate.objects.filter(
            alliance=alliance, modality=t.modality, body_part=t.body_part, name=t.name
        ).exists()
        if not known:
            services.report_template_create(alliance=alliance, actor=actor, **vars(t))
            new += 1
    return new


def _load_critical_findings(alliance: Alliance, actor: audit.Actor) -> int:
    new = 0
    for modality, names in CRITICAL_FINDINGS.items():
        for name in names:
            if not CriticalFinding.objects.filter(alliance=alliance, modality=modality, name=name).exists():
                critical.critical_finding_create(alliance=alliance, modality=modality, name=name, actor=actor)
                new += 1
    return new


def _study(clinic: Institution, case: DemoCase) -> Study | None:
    return (
        Study.objects.filter(institution=clinic, modalities__contains=case.modality, series__body_part=case.body_part)
        .order_by("-study_date", "-pk")
        .first()
    )


def _walk(case: DemoCase, study: Study, requester: Any, reader: Any, pool: Pool) -> None:
    consult = services.consult_create(
        by=requester, studies=[study], question=case.question, history=case.history, priority=case.priority, pool=pool
    )
    services.consult_request(consult=consult, by=requester)
    if case.status == Status.REQUESTED:
        return
    services.consult_claim(consult=consult, by=reader)
    services.consult_start_report(consult=consult, by=reader)
    if case.report is not None:
        findings, impression = case.report
        services.consult_sign(
            consult=consult, by=reader, findings=findings, impression=impression, recommendation="建议6-12个月后复查。"
        )

"""Demo referrals for `manage.py seed_demo`: the Qingshan health centre refers three patients up
to the city hospital, so that a newcomer finds living lists on both sides: one waiting at the
hospital's referral desk, one accepted with an appointment tomorrow morning, and one completed
with a discharge summary and referred back down to the clinic for follow-up.

Everything goes through referrals.services like any user's clicks. A referral is known by its
referrer and reason: a second run finds them and creates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from alliance import audit
from alliance.access import Principal, resolve_principal
from alliance.models import Doctor, Institution
from demo.loaders import Writer
from imaging.models import Study
from referrals import services
from referrals.models import Direction, Referral, Status, Urgency

REFERRER = "qingshan_doctor"
DESK = "city_admin"  # the city hospital's institution admin: on its referral desk by role
CLINIC = "QINGSHAN"
HOSPITAL = "CITYHOSP"


@dataclass(frozen=True)
class DemoReferral:
    modality: str
    body_part: str
    urgency: str
    reason: str
    summary: str
    status: str
    department: str = ""
    feedback: str = ""
    back_down: str = ""  # the reason of the down referral that follows a completed one


CASES = (
    DemoReferral(
        "CT",
        "CHEST",
        Urgency.URGENT,
        "右下肺炎伴胸腔积液，基层抗感染治疗三天无好转，请上级医院进一步诊治。"
        " (Right lower lobe pneumonia with effusion, no better after 3 days of antibiotics.)",
        "68岁男性，发热、咳嗽一周，体温38.6℃，右下肺湿啰音。胸部CT示右下肺实变伴少量积液。高血压病史十年。",
        Status.REQUESTED,
    ),
    DemoReferral(
        "DX",
        "CHEST",
        Urgency.ROUTINE,
        "体检胸片示左上肺小结节影，请胸外科门诊评估。"
        " (A small nodule on a routine chest film: thoracic clinic, please.)",
        "52岁女性，无症状，年度体检发现左上肺结节影，无吸烟史。",
        Status.ACCEPTED,
        department="胸外科门诊 (Thoracic surgery clinic)",
    ),
    DemoReferral(
        "MR",
        "HEAD",
        Urgency.EMERGENCY,
        "突发右侧肢体无力2小时，疑急性脑梗死，请求溶栓评估。 (Sudden right-sided weakness for 2 h: thrombolysis?)",
        "71岁男性，晨起右侧肢体无力、言语含糊，NIHSS 6分，血压168/96 mmHg。房颤病史。",
        Status.COMPLETED,
        department="神经内科 (Neurology)",
        feedback="诊断：左侧大脑中动脉供血区急性脑梗死。入院后静脉溶栓，症状明显改善，住院10天出院。"
        "出院带药：阿哌沙班5 mg 每日两次，阿托伐他汀20 mg 每晚一次。请社区监测血压（目标<140/90 mmHg），"
        "一个月后神经内科门诊复诊。",
        back_down="脑梗死恢复期，转回社区康复训练及慢病随访。"
        " (Stroke recovery: back to the clinic for rehabilitation.)",
    ),
)


def load(*, stdout: Writer, actor: audit.Actor) -> None:
    """seed_demo's loader."""
    load_demo_referrals(stdout=stdout)


def load_demo_referrals(stdout: Writer | None = None) -> int:
    """The demo referrals; returns how many cases were new."""

    def say(text: str) -> None:
        if stdout is not None:
            stdout.write(text)

    clinic = Institution.objects.filter(ae_title=CLINIC).first()
    hospital = Institution.objects.filter(ae_title=HOSPITAL).first()
    referrer = Doctor.objects.filter(user__username=REFERRER).select_related("user").first()
    desk = Doctor.objects.filter(user__username=DESK).select_related("user").first()
    if clinic is None or hospital is None or referrer is None or desk is None:
        say("Demo referrals skipped: the demo institutions or doctors are missing.\n")
        return 0
    new = 0
    for case in CASES:
        if Referral.objects.filter(referrer=referrer, reason=case.reason).exists():
            continue
        study = _study(clinic, case)
        if study is None:
            say(f"Demo referral {case.modality} {case.body_part} skipped: {CLINIC} has no such study.\n")
            continue
        with transaction.atomic():  # a case is made whole or not at all
            _walk(case, study, hospital, clinic, resolve_principal(referrer.user), resolve_principal(desk.user))
        new += 1
    say(f"Demo referrals from {CLINIC} to {HOSPITAL}: {new} new.\n")
    return new


def _study(clinic: Institution, case: DemoReferral) -> Study | None:
    return (
        Study.objects.filter(institution=clinic, modalities__contains=case.modality, series__body_part=case.body_part)
        .order_by("-study_date", "-pk")
        .first()
    )


def _tomorrow_morning() -> datetime:
    day = timezone.localdate() + timedelta(days=1)
    return timezone.make_aware(datetime.combine(day, datetime.min.time()).replace(hour=9, minute=30))


def _walk(
    case: DemoReferral,
    study: Study,
    hospital: Institution,
    clinic: Institution,
    referrer: Principal,
    desk: Principal,
) -> None:
    referral = services.referral_create(
        by=referrer,
        studies=[study],
        direction=Direction.UP,
        to_institution=hospital,
        reason=case.reason,
        summary=case.summary,
        urgency=case.urgency,
        send=True,
    )
    if case.status == Status.REQUESTED:
        return
    services.referral_accept(referral=referral, by=desk, appointment_at=_tomorrow_morning(), department=case.department)
    if case.status == Status.ACCEPTED:
        return
    services.referral_arrive(referral=referral, by=desk)
    services.referral_complete(referral=referral, by=desk, summary=case.feedback)
    _refer_back(referral, case, clinic, desk)


def _refer_back(referral: Referral, case: DemoReferral, clinic: Institution, desk: Principal) -> Any:
    initial = services.refer_back_initial(referral)
    return services.referral_create(
        by=desk,
        patient=initial["patient"],
        studies=initial["studies"],
        direction=Direction.DOWN,
        to_institution=clinic,
        reason=case.back_down,
        summary=initial["summary"],
        urgency=Urgency.ROUTINE,
        based_on=referral,
        send=True,
    )

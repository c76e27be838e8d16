"""The demo screening programme for `manage.py seed_demo`: the alliance's low-dose CT lung
screening for its three township clinics, read by the city hospital's radiology desk. The
Qingshan clinic has enrolled two patients: the one of its demo chest CT, whose CT is tagged and
waits for the radiologists' reading, and another whose baseline CT is due in ten days.

Everything goes through consults.screening.services like any user's clicks. The programme is
known by its name and a participant by their patient: a second run creates nothing.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from alliance import audit
from alliance.access import Principal, resolve_principal
from alliance.models import Doctor, Institution, Pool
from consults.screening import services
from consults.screening.models import Participant, Programme
from demo.alliance import POOL
from demo.loaders import Writer
from imaging.models import Study

NAME = "低剂量螺旋CT肺癌筛查 (Low-dose CT lung cancer screening)"
DESCRIPTION = (
    "面向50-74岁、吸烟20包年以上居民的年度低剂量螺旋CT筛查，结果按 Lung-RADS v2022 分类。"
    " (Annual low-dose CT for residents aged 50-74 with 20 pack-years or more, categorised by Lung-RADS v2022.)"
)
CLINICS = ("QINGSHAN", "BAIHE", "DONGHU")
ADMIN = "alliance_admin"
ENROLLER = "qingshan_doctor"


def load(*, stdout: Writer, actor: audit.Actor) -> None:
    """seed_demo's loader."""
    admin = Doctor.objects.filter(user__username=ADMIN).select_related("user").first()
    enroller = Doctor.objects.filter(user__username=ENROLLER).select_related("user").first()
    pool = Pool.objects.filter(institution__ae_title=POOL[0], name=POOL[2]).first()
    clinics = list(Institution.objects.filter(ae_title__in=CLINICS))
    if admin is None or enroller is None or pool is None or len(clinics) != len(CLINICS):
        stdout.write("Demo screening skipped: the demo institutions or doctors are missing.\n")
        return
    admin_principal, clinic_principal = resolve_principal(admin.user), resolve_principal(enroller.user)
    if not admin_principal.has_module("screening") or not clinic_principal.has_module("screening"):
        stdout.write("Demo screening skipped: the screening module is switched off for the demo institutions.\n")
        return
    with transaction.atomic():  # the programme and its participants are made whole or not at all
        programme = _programme(admin_principal, pool, clinics)
        new = _participants(programme, clinic_principal)
    stdout.write(f"Demo screening programme: {programme.name}, {new} new participant(s) at {ENROLLER}'s clinic.\n")


def _programme(by: Principal, pool: Pool, clinics: list[Institution]) -> Programme:
    found = Programme.objects.filter(alliance_id=pool.institution.alliance_id, name=NAME).first()
    if found is not None:
        return found
    return services.programme_create(
        by=by, name=NAME, description=DESCRIPTION, reading_pool=pool, institutions=clinics, window_days=30
    )


def _participants(programme: Programme, by: Principal) -> int:
    clinic = by.institution
    assert clinic is not None  # the enroller is a doctor of the clinic (load checked)
    studies = Study.objects.filter(institution=clinic).select_related("patient").order_by("study_date")
    chest_ct = studies.filter(series__modality="CT", description__icontains="Chest").first()
    other = studies.exclude(patient_id=chest_ct.patient_id).first() if chest_ct is not None else None
    new = 0
    for study, scanned in ((chest_ct, True), (other, False)):
        if study is None or Participant.objects.filter(programme=programme, patient=study.patient).exists():
            continue
        participant = services.participant_enrol(
            by=by,
            programme=programme,
            patient=study.patient,
            consent_by="本人 (the participant)",
            consent_at=timezone.now() - timedelta(days=1),
            consent_method="written",
            consent_note=f"知情同意书 LDCT-2026-{new + 1:03d}",
            baseline_due=None if scanned else timezone.localdate() + timedelta(days=10),
        )
        if scanned:
            services.round_tag(round_=participant.rounds.get(), study=study, by=by)
        new += 1
    return new

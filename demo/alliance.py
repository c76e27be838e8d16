"""The demo alliance: five member institutions, a reading desk, one DICOM device each and a
doctor for every role, with the sign-ins and AE titles printed. Running it again changes
nothing; an AE title or username already used elsewhere stops it with nothing saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.core.management.base import CommandError
from django.db import transaction

from alliance import audit, services
from alliance.env import env_int, env_str
from alliance.models import Alliance, Department, Device, Doctor, Institution, Pool, Role, Specialty
from demo.loaders import Writer

ALLIANCE = "城南医联体 (Chengnan Medical Alliance)"
DEMO_PASSWORD = "Demo-pass-2026!"  # noqa: S105 - published demo sign-in, printed on purpose


@dataclass(frozen=True)
class Member:
    ae_title: str
    name: str
    level: str
    parent: str | None
    departments: tuple[str, ...]
    device: tuple[str, int, str]  # AE title, port, description


@dataclass(frozen=True)
class Person:
    username: str
    full_name: str
    institution: str
    roles: tuple[str, ...]
    department: str | None = None
    title: str = ""
    specialties: tuple[str, ...] = field(default=())


RADIOLOGY = "放射科 (Radiology)"
GENERAL = "全科 (General Practice)"
SPECIALTIES = {
    "radiology": "放射学 (Radiology)",
    "cardiology": "心血管病学 (Cardiology)",
    "emergency": "急诊医学 (Emergency medicine)",
    "general-practice": "全科医学 (General practice)",
}
MEMBERS = (
    Member(
        "CITYHOSP",
        "市第一人民医院 (First People's Hospital)",
        Institution.Level.TERTIARY,
        None,
        (RADIOLOGY, "心血管内科 (Cardiology)", "急诊科 (Emergency)", "医务处 (Medical Affairs)"),
        ("CITYHOSP_CT", 11201, "CT 扫描仪 (CT scanner)"),
    ),
    Member(
        "COUNTYHOSP",
        "县人民医院 (County People's Hospital)",
        Institution.Level.SECONDARY,
        "CITYHOSP",
        (RADIOLOGY, "内科 (Internal Medicine)"),
        ("COUNTY_CT", 11202, "CT 扫描仪 (CT scanner)"),
    ),
    Member(
        "QINGSHAN",
        "青山镇卫生院 (Qingshan Township Health Centre)",
        Institution.Level.TOWNSHIP,
        "COUNTYHOSP",
        (GENERAL,),
        ("QINGSHAN_DR", 11203, "DR 数字X线机 (digital radiography)"),
    ),
    Member(
        "BAIHE",
        "白河镇卫生院 (Baihe Township Health Centre)",
        Institution.Level.TOWNSHIP,
        "COUNTYHOSP",
        (GENERAL,),
        ("BAIHE_DR", 11204, "DR 数字X线机 (digital radiography)"),
    ),
    Member(
        "DONGHU",
        "东湖社区卫生服务中心 (Donghu Community Health Centre)",
        Institution.Level.COMMUNITY,
        "CITYHOSP",
        (GENERAL,),
        ("DONGHU_US", 11205, "超声诊断仪 (ultrasound)"),
    ),
)
PEOPLE = (
    Person("alliance_admin", "李明 (Li Ming)", "CITYHOSP", (Role.ALLIANCE_ADMIN,), "医务处 (Medical Affairs)"),
    Person("city_admin", "赵丽 (Zhao Li)", "CITYHOSP", (Role.INSTITUTION_ADMIN,), "医务处 (Medical Affairs)"),
    Person(
        "radiologist", "王建国 (Wang Jianguo)", "CITYHOSP", (Role.SPECIALIST,), RADIOLOGY, "主任医师", ("radiology",)
    ),
    Person("radiologist2", "陈静 (Chen Jing)", "CITYHOSP", (Role.SPECIALIST,), RADIOLOGY, "副主任医师", ("radiology",)),
    Person(
        "cardiologist",
        "刘洋 (Liu Yang)",
        "CITYHOSP",
        (Role.SPECIALIST,),
        "心血管内科 (Cardiology)",
        "主治医师",
        ("cardiology",),
    ),
    Person("county_admin", "孙强 (Sun Qiang)", "COUNTYHOSP", (Role.INSTITUTION_ADMIN,)),
    Person(
        "county_doctor", "张伟 (Zhang Wei)", "COUNTYHOSP", (Role.CLINICIAN,), "内科 (Internal Medicine)", "主治医师"
    ),
    Person("qingshan_admin", "吴磊 (Wu Lei)", "QINGSHAN", (Role.INSTITUTION_ADMIN, Role.CLINICIAN), GENERAL),
    Person("qingshan_doctor", "周芳 (Zhou Fang)", "QINGSHAN", (Role.CLINICIAN,), GENERAL, "全科医师"),
    Person("baihe_doctor", "郑敏 (Zheng Min)", "BAIHE", (Role.CLINICIAN,), GENERAL, "全科医师"),
    Person("donghu_doctor", "黄婷 (Huang Ting)", "DONGHU", (Role.CLINICIAN,), GENERAL, "全科医师"),
)
POOL = ("CITYHOSP", "radiology", "放射科远程阅片台 (Radiology reading desk)", ("radiologist", "radiologist2"))


@transaction.atomic  # the membership is made whole or not at all
def load(*, stdout: Writer, actor: audit.Actor) -> None:
    alliance = services.alliance_get_or_create(name=ALLIANCE, by=actor)
    specialties = {
        code: services.specialty_get_or_create(code=code, name=name, by=actor) for code, name in SPECIALTIES.items()
    }
    institutions: dict[str, Institution] = {}
    for member in MEMBERS:
        institutions[member.ae_title] = _institution(alliance, member, institutions, actor)
    doctors = {person.username: _doctor(person, institutions, specialties, actor) for person in PEOPLE}
    _pool(institutions, specialties, doctors, actor)
    _report(alliance, stdout)


def _institution(alliance: Alliance, member: Member, known: dict[str, Institution], actor: audit.Actor) -> Institution:
    institution = Institution.objects.filter(ae_title=member.ae_title).first()
    if institution is None:
        institution = services.institution_create(
            alliance=alliance,
            name=member.name,
            level=member.level,
            ae_title=member.ae_title,
            parent=known.get(member.parent or ""),
            by=actor,
        )
    elif institution.alliance_id != alliance.pk:
        raise CommandError(f"ae_title: {member.ae_title} already belongs to another alliance's institution.")
    for name in member.departments:
        if not Department.objects.filter(institution=institution, name=name).exists():
            services.department_create(institution=institution, name=name, by=actor)
    _device(institution, *member.device, actor=actor)
    return institution


def _device(institution: Institution, ae_title: str, port: int, description: str, *, actor: audit.Actor) -> None:
    device = Device.objects.filter(ae_title=ae_title).first()
    if device is None:
        services.device_create(
            institution=institution,
            ae_title=ae_title,
            host="127.0.0.1",
            port=port,
            description=description,
            by=actor,
        )
    elif device.institution_id != institution.pk:
        raise CommandError(f"ae_title: the device {ae_title} already belongs to another institution.")


def _doctor(
    person: Person, institutions: dict[str, Institution], specialties: dict[str, Specialty], actor: audit.Actor
) -> Doctor:
    institution = institutions[person.institution]
    doctor = Doctor.objects.filter(user__username=person.username).first()
    if doctor is not None:
        if doctor.institution_id != institution.pk:
            raise CommandError(f"username: {person.username} already exists at another institution.")
        return doctor
    department = Department.objects.get(institution=institution, name=person.department) if person.department else None
    return services.doctor_create(
        institution=institution,
        username=person.username,
        roles=list(person.roles),
        password=DEMO_PASSWORD,
        full_name=person.full_name,
        title=person.title,
        department=department,
        specialties=[specialties[code] for code in person.specialties],
        by=actor,
    )


def _pool(
    institutions: dict[str, Institution],
    specialties: dict[str, Specialty],
    doctors: dict[str, Doctor],
    actor: audit.Actor,
) -> None:
    ae_title, specialty, name, members = POOL
    institution = institutions[ae_title]
    if not Pool.objects.filter(institution=institution, name=name).exists():
        services.pool_create(
            institution=institution,
            specialty=specialties[specialty],
            name=name,
            members=[doctors[username] for username in members],
            by=actor,
        )


def _report(alliance: Alliance, stdout: Writer) -> None:
    write = stdout.write
    write(f"Demo alliance: {alliance.name}")
    host, port = env_str("WEB_HOST", "127.0.0.1"), env_int("WEB_PORT", 8000, minimum=1, maximum=65535)
    write(f"Sign in at http://{host}:{port}/ with password {DEMO_PASSWORD} (every demo login):")
    write(f"  {'username':<16} {'role':<28} institution")
    for person in PEOPLE:
        roles = ", ".join(str(Role(role).label) for role in person.roles)
        write(f"  {person.username:<16} {roles:<28} {person.institution}  password {DEMO_PASSWORD}")
    write(f"DICOM server port {settings.DICOM_PORT}: send as the device's AE title to its institution's AE title.")
    write(f"  {'institution AE':<16} {'device AE':<16} {'device address':<18} name")
    for member in MEMBERS:
        device_ae, port, _description = member.device
        write(f"  {member.ae_title:<16} {device_ae:<16} {'127.0.0.1:' + str(port):<18} {member.name}")
    write(f"Specialist pool: {POOL[2]} at {POOL[0]} (members: {', '.join(POOL[3])})")

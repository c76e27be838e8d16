"""Test data built through the same service functions the product uses.

factory_boy factories for plain rows; membership goes through alliance.services so that
groups, roles and audit events are what production would create. The image index has
factories for its rows (PatientFactory, StudyFactory, SeriesFactory, InstanceFactory),
counted as ingest counts them, for tests that need studies but not their files; a test
that needs the files stores generated ones through ingest (store_ct_study).
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import factory
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from alliance import audit, services
from alliance.models import Alliance, Doctor, Institution, Pool, Specialty
from imaging.ingest import ingest_bytes
from imaging.models import Instance, Patient, Series, Study
from tests.imaging.dicomgen import make_ct_series, part10_bytes

PASSWORD = "Correct-horse-42!"
_seq = itertools.count(1)
SYSTEM = audit.SYSTEM


class AllianceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alliance
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Alliance {n}")


class SpecialtyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Specialty
        django_get_or_create = ("code",)

    code = "radiology"
    name = "Radiology"


def make_institution(
    *,
    alliance: Alliance | None = None,
    level: str = "township",
    name: str = "",
    ae_title: str = "",
    parent: Institution | None = None,
) -> Institution:
    n = next(_seq)
    return services.institution_create(
        alliance=alliance or AllianceFactory(),
        name=name or f"Institution {n}",
        level=level,
        ae_title=ae_title or f"INST{n}",
        parent=parent,
        by=SYSTEM,
    )


def make_doctor(
    *,
    institution: Institution,
    roles: list[str] | None = None,
    username: str = "",
    specialties: list[Specialty] | None = None,
    **kwargs: Any,
) -> Doctor:
    n = next(_seq)
    return services.doctor_create(
        institution=institution,
        username=username or f"doctor{n}",
        roles=roles or ["clinician"],
        password=PASSWORD,
        full_name=kwargs.pop("full_name", f"Doctor {n}"),
        specialties=specialties,
        by=SYSTEM,
        **kwargs,
    )


def make_pool(*, institution: Institution, members: list[Doctor] | None = None, name: str = "") -> Pool:
    return services.pool_create(
        institution=institution,
        specialty=SpecialtyFactory(),
        name=name or f"Pool {next(_seq)}",
        members=members or [],
        by=SYSTEM,
    )


# Study n is ROOT.n, its series ROOT.n.s, their instances ROOT.n.s.i (PS3.5 9.1: at most 64
# characters, no leading zeros).
UID_ROOT = "1.2.826.0.1.3680043.10"


class PatientFactory(factory.django.DjangoModelFactory):
    """A patient of an institution; the same (issuer, patient ID) twice is the same patient."""

    class Meta:
        model = Patient
        django_get_or_create = ("issuer", "patient_id")

    issuer = factory.LazyFunction(make_institution)
    patient_id = factory.Sequence(lambda n: f"P{n + 1:05d}")
    name = factory.Sequence(lambda n: f"Patient^{n + 1}")


class StudyFactory(factory.django.DjangoModelFactory):
    """StudyFactory(institution=i, series=2, series__instances=3): a chest CT of i's patient
    with two series of three instances (one of one by default; series=0 for none)."""

    class Meta:
        model = Study
        skip_postgeneration_save = True

    institution = factory.LazyFunction(make_institution)
    patient = factory.SubFactory(PatientFactory, issuer=factory.SelfAttribute("..institution"))
    study_uid = factory.Sequence(lambda n: f"{UID_ROOT}.{n + 1}")
    study_date = dt.date(2026, 3, 1)
    accession_number = factory.Sequence(lambda n: f"A{n + 1}")
    description = "Chest CT"
    modalities = "CT"

    @factory.post_generation
    def series(study: Study, create: bool, extracted: int | None, **kwargs: Any) -> None:
        for number in range(1, (1 if extracted is None else extracted) + 1):
            SeriesFactory(study=study, series_number=number, **kwargs)


class SeriesFactory(factory.django.DjangoModelFactory):
    """SeriesFactory(study=s, instances=3): the study's next series, of its first modality."""

    class Meta:
        model = Series
        skip_postgeneration_save = True

    study = factory.SubFactory(StudyFactory, series=0)
    series_number = factory.LazyAttribute(lambda o: o.study.series.count() + 1)
    series_uid = factory.LazyAttribute(lambda o: f"{o.study.study_uid}.{o.series_number}")
    modality = factory.LazyAttribute(lambda o: o.study.modalities.split("\\")[0])
    description = factory.LazyAttribute(lambda o: f"Series {o.series_number}")
    body_part = "CHEST"

    @classmethod
    def _create(cls, model_class: type[Series], *args: Any, **kwargs: Any) -> Series:
        series = super()._create(model_class, *args, **kwargs)
        _count(series.study, series=1)
        return series

    @factory.post_generation
    def instances(series: Series, create: bool, extracted: int | None, **kwargs: Any) -> None:
        for number in range(1, (1 if extracted is None else extracted) + 1):
            InstanceFactory(series=series, instance_number=number, **kwargs)


class InstanceFactory(factory.django.DjangoModelFactory):
    """The series' next instance: an index row whose file is not in storage."""

    class Meta:
        model = Instance

    series = factory.SubFactory(SeriesFactory, instances=0)
    instance_number = factory.LazyAttribute(lambda o: o.series.instances.count() + 1)
    sop_uid = factory.LazyAttribute(lambda o: f"{o.series.series_uid}.{o.instance_number}")
    sop_class_uid = CTImageStorage
    transfer_syntax_uid = ExplicitVRLittleEndian
    rows = 64
    columns = 64
    storage_key = factory.LazyAttribute(lambda o: f"test/{o.sop_uid}.dcm")
    size_bytes = 1000
    sha256 = "0" * 64

    @classmethod
    def _create(cls, model_class: type[Instance], *args: Any, **kwargs: Any) -> Instance:
        instance = super()._create(model_class, *args, **kwargs)
        instance.series.num_instances += 1
        instance.series.save(update_fields=["num_instances"])
        _count(instance.series.study, instances=1)
        return instance


def _count(study: Study, *, series: int = 0, instances: int = 0) -> None:
    """Keep the study's counts as ingest keeps them (C-FIND and the pages answer from them)."""
    study.num_series += series
    study.num_instances += instances
    study.save(update_fields=["num_series", "num_instances"])


def store_ct_study(
    institution: Institution, *, slices: int = 1, actor: audit.Actor = SYSTEM, **attributes: Any
) -> Study:
    """A CT study with its files: generated 64x64 slices stored through ingest, as a modality's would be."""
    results = [
        ingest_bytes(part10_bytes(ds), institution=institution, actor=actor, via="test")
        for ds in make_ct_series(slices, 64, 64, **attributes)
    ]
    return results[0].study

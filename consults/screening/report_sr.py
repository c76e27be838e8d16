"""A signed screening reading, written into its scan's study as a DICOM Comprehensive SR with
the TID 1500 Measurement Report template (imaging.dicom.objects.findings_report), so that a
hospital PACS retrieving the study gets the structured findings with it:

- each nodule a TID 1501 measurement group: the finding (Nodule, or Cyst), its finding site
  (the lobe, SNOMED CT), its long and short axis, mean diameter (Diameter, derivation Mean),
  solid component and volume in UCUM units (mm, mm3), each tied to the image it was measured on
  when known; its composition, change and Lung-RADS category as qualitative evaluations;
- the exam's Lung-RADS category, S modifier, other findings and recommendation as the report's
  qualitative evaluations.

Lung-RADS and nodule composition have no codes in DICOM's or SNOMED's lists that we could
cite, so they use our private coding scheme "99CPACS" (PS3.3 8.2: private designators begin
with "99"), declared in the Coding Scheme Identification Sequence.

The UIDs are derived from the reading and the study: a second run (a retried task) finds the
instance stored and writes nothing. Called by consults.screening.tasks.write_reading_sr.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from pydicom.dataset import Dataset

from alliance import audit
from consults.screening import lungrads, services
from consults.screening.models import Nodule, Reading
from imaging import ingest, key_objects
from imaging.dicom import objects
from imaging.models import Instance, Study

log = logging.getLogger(__name__)

SR_SERIES_NUMBER = 9905
P = "99CPACS"
SCHEME = objects.CodingScheme(P, "Alliance Cloud PACS screening codes", "Alliance Cloud PACS")

# Finding sites (SNOMED CT body structures).
LOBES = {
    "RUL": ("42400003", objects.SCT, "Upper lobe of right lung"),
    "RML": ("72481006", objects.SCT, "Middle lobe of right lung"),
    "RLL": ("266005", objects.SCT, "Lower lobe of right lung"),
    "LUL": ("44714003", objects.SCT, "Upper lobe of left lung"),
    "LLL": ("41224006", objects.SCT, "Lower lobe of left lung"),
}
NODULE = ("27925004", objects.SCT, "Nodule")
CYST = ("367643001", objects.SCT, "Cyst")
LONG_AXIS = ("103339001", objects.SCT, "Long Axis")
SHORT_AXIS = ("103340004", objects.SCT, "Short Axis")
DIAMETER = ("81827009", objects.SCT, "Diameter")
VOLUME = ("118565006", objects.SCT, "Volume")
YES = ("373066001", objects.SCT, "Yes")
NO = ("373067005", objects.SCT, "No")
RECOMMENDATION = ("121075", objects.DCM, "Recommendation")
# Our private codes.
SOLID_COMPONENT = ("SOLIDDIAM", P, "Solid component mean diameter")
COMPOSITION = ("COMPOSITION", P, "Nodule composition")
COMPOSITIONS = {
    lungrads.Kind.SOLID: ("SOLID", P, "Solid"),
    lungrads.Kind.PART_SOLID: ("PARTSOLID", P, "Part-solid"),
    lungrads.Kind.GROUND_GLASS: ("GGN", P, "Ground-glass (non-solid)"),
    lungrads.Kind.AIRWAY: ("AIRWAY", P, "Airway nodule"),
    lungrads.Kind.CYST: ("CYST", P, "Atypical pulmonary cyst"),
}
CHANGE = ("CHANGE", P, "Change since the previous screening CT")
CHANGES = {key: (key.upper().replace("_", ""), P, key.replace("_", " ")) for key in lungrads.CHANGE_LABELS}
CATEGORY = ("LUNGRADS", P, "Lung-RADS v2022 assessment category")
S_MODIFIER = ("LUNGRADSS", P, "Lung-RADS S modifier")
SIGNIFICANT = ("SFINDING", P, "Clinically significant finding other than lung cancer")
INCOMPLETE = ("INCOMPLETE", P, "Reason the exam is incomplete")


def category_code(category: str) -> tuple[str, str, str]:
    return (f"LR{category}", P, f"Lung-RADS {category}")


def sr_uids(reading: Reading, study: Study) -> tuple[str, str]:
    """The reading's SR series and instance in the study, the same on every run."""
    root = settings.DICOM_UID_ROOT
    participant_pk = reading.round.participant_id
    return (
        objects.derived_uid(root, "screening-sr-series", participant_pk, study.study_uid),
        objects.derived_uid(root, "screening-sr", reading.pk, study.study_uid),
    )


def write_reading_sr(*, reading: Reading) -> str:
    """Write the signed reading into its scan's study; the SOP Instance UID ("" when the study has
    no image to copy its patient from). Outside any transaction: ingest commits on its own."""
    if not reading.is_signed:
        raise ValueError(f"screening reading {reading.pk} is not signed")
    study = reading.round.study
    if study is None:
        raise ValueError(f"screening reading {reading.pk} has no scan")
    series_uid, sop_uid = sr_uids(reading, study)
    if Instance.objects.filter(sop_uid=sop_uid).exists():
        services.reading_sr_written(reading=reading, sop_uid=sop_uid)
        return sop_uid
    image = key_objects.any_image(study)
    if image is None:
        log.warning("study %s has no image: the screening reading %s is not written into it", study.pk, reading.pk)
        return ""
    with translation.override(settings.LANGUAGE_CODE):
        ds = _dataset(reading, study, key_objects.source_dataset(image), series_uid, sop_uid)
    result = ingest.ingest_bytes(
        objects.part10(ds),
        institution=study.institution,
        actor=audit.SYSTEM,
        via="screening",
        expected_study_uid=study.study_uid,
    )
    services.reading_sr_written(reading=reading, sop_uid=result.instance.sop_uid)
    audit.record(
        actor=audit.SYSTEM,
        action="screening.sr_into_study",
        object_type="study",
        object_id=study.study_uid,
        patient=str(study.patient_id),
        basis=reading.round.basis,
        detail={"reading": reading.pk, "instance": result.instance.sop_uid, "created": result.created},
    )
    return str(result.instance.sop_uid)


def _dataset(reading: Reading, study: Study, source: Dataset, series_uid: str, sop_uid: str) -> Dataset:
    reader = reading.reader
    observer = objects.Observer(name=reader.display_name[:64], organization=reader.institution.name[:64])
    doc = objects.Document(
        series_uid=series_uid,
        sop_uid=sop_uid,
        series_number=SR_SERIES_NUMBER,
        instance_number=reading.round.number,
        made_at=timezone.localtime(reading.signed_at),
        series_description=_("Lung screening findings")[:64],
    )
    nodules = list(reading.nodules.select_related("prior"))
    images = _images_of(study, nodules)
    return objects.findings_report(
        source,
        creator=key_objects.creator(observer.organization),
        doc=doc,
        observer=observer,
        groups=[_group(reading, n, images.get(n.pk)) for n in nodules],
        evaluations=_evaluations(reading),
        schemes=[SCHEME],
        language=settings.LANGUAGE_CODE,
    )


def _images_of(study: Study, nodules: list[Nodule]) -> dict[int, objects.ImageRef]:
    """Each nodule's image: the one its measurement was taken on, else its series and image number."""
    instances = Instance.objects.filter(series__study=study).select_related("series")
    by_uid = {i.sop_uid: i for i in instances.filter(sop_uid__in=[n.sop_uid for n in nodules if n.sop_uid])}
    found = {}
    for n in nodules:
        instance = by_uid.get(n.sop_uid)
        if instance is None and n.image_number is not None:
            numbered = instances.filter(instance_number=n.image_number)
            if n.series_number is not None:
                numbered = numbered.filter(series__series_number=n.series_number)
            instance = numbered.exclude(sop_class_uid__in=key_objects.NON_IMAGE_CLASSES).first()
        if instance is not None:
            found[n.pk] = objects.ImageRef(instance.sop_class_uid, instance.sop_uid, instance.series.series_uid)
    return found


def _group(reading: Reading, n: Nodule, image: objects.ImageRef | None) -> objects.FindingGroup:
    values = []
    for concept, number, unit, derivation in (
        (LONG_AXIS, n.long_axis_mm, objects.MM, None),
        (SHORT_AXIS, n.short_axis_mm, objects.MM, None),
        (DIAMETER, n.mean_mm, objects.MM, objects.MEAN),
        (SOLID_COMPONENT, n.solid_mm, objects.MM, objects.MEAN),
        (VOLUME, n.volume_mm3, objects.MM3, None),
    ):
        if number is not None:
            values.append(objects.FindingValue(concept, float(number), unit, derivation, image))
    evaluations = [
        objects.Evaluation(COMPOSITION, code=COMPOSITIONS[n.kind]),
        objects.Evaluation(CHANGE, code=CHANGES[n.change]),
        objects.Evaluation(CATEGORY, code=category_code(n.category)),
    ]
    return objects.FindingGroup(
        label=f"Nodule {n.number}",
        tracking_uid=objects.derived_uid(
            settings.DICOM_UID_ROOT, "screening-nodule", reading.round.participant_id, n.number
        ),
        finding=CYST if n.kind == lungrads.Kind.CYST else NODULE,
        site=LOBES[n.lobe],
        values=values,
        evaluations=evaluations,
    )


def _evaluations(reading: Reading) -> list[objects.Evaluation]:
    found = [
        objects.Evaluation(CATEGORY, code=category_code(reading.category)),
        objects.Evaluation(S_MODIFIER, code=YES if reading.significant else NO),
    ]
    if reading.incomplete:
        found.append(objects.Evaluation(INCOMPLETE, text=str(lungrads.INCOMPLETE_LABELS[reading.incomplete])))
    if reading.significant and reading.significant_text:
        found.append(objects.Evaluation(SIGNIFICANT, text=reading.significant_text))
    if reading.other_findings:
        found.append(objects.Evaluation(objects.FINDING, text=reading.other_findings))
    management = reading.management
    if management is not None:
        found.append(objects.Evaluation(RECOMMENDATION, text=str(management.text)))
    return found

"""The signed report, written into each of the case's studies as DICOM, so a hospital PACS
that retrieves the study (C-MOVE, C-GET, WADO) gets the report with it:

- an Encapsulated PDF (PS3.3 A.45.1), the report as printed (consults.pdf);
- a Basic Text SR (PS3.3 A.35.1) with the findings and impression as text.

Both go through imaging.ingest into a report series of the study. Their UIDs are derived
from the report version and the study, so running this twice for the same version (a task
retried, or run again after a lost acknowledgement) finds them stored and writes nothing.
Called by consults.tasks.report_into_studies after a signing or an addendum has committed,
and again by the sweep consults.tasks.write_missing_report_objects for a version whose
objects are missing (the broker was away at the commit, or the task failed for good).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from pydicom.dataset import Dataset

from alliance import audit
from alliance.models import Doctor
from consults import pdf, selectors
from consults.models import Consult, ReportReview, ReportVersion
from imaging import ingest, key_objects
from imaging.dicom import objects
from imaging.models import Instance, Study

log = logging.getLogger(__name__)

PDF_SERIES_NUMBER = 9903
SR_SERIES_NUMBER = 9904


def report_uids(version: ReportVersion, study: Study) -> dict[str, str]:
    """The series and instances of this version's report in this study, the same on every run."""
    return _uids(version.report.consult_id, version.pk, study.study_uid)


def _uids(consult_pk: int, version_pk: int, study_uid: str) -> dict[str, str]:
    root = settings.DICOM_UID_ROOT
    return {
        "pdf_series": objects.derived_uid(root, "report-pdf-series", consult_pk, study_uid),
        "sr_series": objects.derived_uid(root, "report-sr-series", consult_pk, study_uid),
        "pdf": objects.derived_uid(root, "report-pdf", version_pk, study_uid),
        "sr": objects.derived_uid(root, "report-sr", version_pk, study_uid),
    }


def final_versions() -> QuerySet[ReportVersion]:
    """The versions that go into the studies: every signed one that is final (signed at once,
    verified under two-level sign-off, or an addendum); not a preliminary one still waiting or
    returned to its reader."""
    approved = ReportReview.objects.filter(version=OuterRef("pk"), outcome=ReportReview.Outcome.APPROVED)
    return ReportVersion.objects.filter(signed_at__isnull=False).filter(Q(preliminary=False) | Exists(approved))


def versions_missing_objects(*, signed_after: datetime, signed_before: datetime) -> list[int]:
    """The final versions signed in that window whose PDF or text SR is missing from a study of
    their consult that has an image to copy the patient from (a study without one never gets
    them), the oldest first: a few queries, whatever the number of versions."""
    versions = list(
        final_versions()
        .filter(signed_at__gte=signed_after, signed_at__lt=signed_before)
        .order_by("signed_at", "pk")
        .values_list("pk", "report__consult_id")
    )
    has_image = Instance.objects.filter(series__study=OuterRef("study_id")).exclude(
        sop_class_uid__in=key_objects.NON_IMAGE_CLASSES
    )
    studies: dict[int, list[str]] = {}
    for consult_pk, study_uid in (
        Consult.studies.through.objects.filter(consult_id__in={c for _v, c in versions})
        .filter(Exists(has_image))
        .values_list("consult_id", "study__study_uid")
    ):
        studies.setdefault(consult_pk, []).append(study_uid)
    wanted = {
        pk: [uid for study_uid in studies.get(consult_pk, []) for uid in _instance_uids(consult_pk, pk, study_uid)]
        for pk, consult_pk in versions
    }
    stored = set(
        Instance.objects.filter(sop_uid__in=[u for uids in wanted.values() for u in uids]).values_list(
            "sop_uid", flat=True
        )
    )
    return [pk for pk, uids in wanted.items() if not stored.issuperset(uids)]


def _instance_uids(consult_pk: int, version_pk: int, study_uid: str) -> tuple[str, str]:
    uids = _uids(consult_pk, version_pk, study_uid)
    return uids["pdf"], uids["sr"]


def report_into_studies(*, version: ReportVersion) -> list[str]:
    """Write the signed version into each study of its consult; the SOP Instance UIDs written
    (empty when they are all there already). Not one transaction: ingest commits each
    instance itself and must run outside any transaction."""
    if not version.is_signed:
        raise ValueError(f"report version {version.pk} is not signed")
    consult = version.report.consult
    case = selectors.case_detail(consult, up_to=version.number)  # not a later addendum
    written: list[str] = []
    with translation.override(settings.LANGUAGE_CODE):
        printed: bytes | None = None
        for study in case["studies"]:
            uids = report_uids(version, study)
            image = key_objects.any_image(study)
            if image is None:
                log.warning("study %s has no image to copy its patient from: no report written into it", study.pk)
                continue
            if Instance.objects.filter(sop_uid__in=[uids["pdf"], uids["sr"]]).count() == 2:
                continue
            if printed is None:
                printed = pdf.render_report(consult, case)
            written += _write(version, study, key_objects.source_dataset(image), uids, printed)
    if written:
        audit.record(
            actor=audit.SYSTEM,
            action="consult.report_into_study",
            object_type="consult",
            object_id=str(consult.pk),
            patient=consult.audit_patient,
            detail={"version": version.number, "instances": written},
        )
    return written


def _observer(doctor: Doctor | None) -> objects.Observer:
    if doctor is None:
        return objects.Observer(name="")
    return objects.Observer(name=doctor.display_name[:64], organization=doctor.institution.name[:64])


def _verification(version: ReportVersion) -> objects.Verification | None:
    """Under two-level sign-off the report is verified by the reviewer who approved it, when
    they did; otherwise by its signer at signing (None: the SR's default)."""
    approved = [r for r in version.reviews.all() if r.outcome == ReportReview.Outcome.APPROVED]
    if not version.preliminary or not approved:
        return None
    return objects.Verification(_observer(approved[-1].reviewer), timezone.localtime(approved[-1].at))


def _write(version: ReportVersion, study: Study, source: Dataset, uids: dict[str, str], printed: bytes) -> list[str]:
    observer = _observer(version.signed_by)
    made = key_objects.creator(observer.organization)
    at = timezone.localtime(version.signed_at)
    title = _("Remote consultation report")
    pdf_doc = objects.Document(uids["pdf_series"], uids["pdf"], PDF_SERIES_NUMBER, version.number, at, title[:64])
    sr_doc = objects.Document(uids["sr_series"], uids["sr"], SR_SERIES_NUMBER, version.number, at, title[:64])
    datasets = [
        objects.encapsulated_pdf(source, creator=made, doc=pdf_doc, pdf=printed, title=title),
        objects.basic_text_report(
            source,
            creator=made,
            doc=sr_doc,
            observer=observer,
            findings=_with_addendum(version),
            impression=version.impression,
            language=settings.LANGUAGE_CODE,
            verification=_verification(version),
        ),
    ]
    written = []
    for ds in datasets:
        result = ingest.ingest_bytes(
            objects.part10(ds),
            institution=study.institution,
            actor=audit.SYSTEM,
            via="report",
            expected_study_uid=study.study_uid,
        )
        if result.created:
            written.append(result.instance.sop_uid)
    return written


def _with_addendum(version: ReportVersion) -> str:
    return f"{version.addendum}\n\n{version.findings}" if version.addendum else version.findings

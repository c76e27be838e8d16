"""The signed report, written into each of the case's studies as DICOM, so a hospital PACS
that retrieves the study (C-MOVE, C-GET, WADO) gets the report with it:

- an Encapsulated PDF (PS3.3 A.45.1), the report as printed (consults.pdf);
- a Basic Text SR (PS3.3 A.35.1) with the findings and impression as text.

Both go through imaging.ingest into a report series of the study. Their UIDs are derived
from the report version and the study, so running this twice for the same version (a task
retried, or run again after a lost acknowledgement) finds them stored and writes nothing.
Called by consults.tasks.report_into_studies after the signing has committed.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from pydicom.dataset import Dataset

from alliance import audit
from consults import pdf, selectors, services
from consults.models import ReportVersion
from imaging import ingest, key_objects
from imaging.dicom import objects
from imaging.models import Instance, Study

log = logging.getLogger(__name__)

PDF_SERIES_NUMBER = 9903
SR_SERIES_NUMBER = 9904


def report_uids(version: ReportVersion, study: Study) -> dict[str, str]:
    """The series and instances of this version's report in this study, the same on every run."""
    root = settings.DICOM_UID_ROOT
    consult_pk = version.report.consult_id
    return {
        "pdf_series": objects.derived_uid(root, "report-pdf-series", consult_pk, study.study_uid),
        "sr_series": objects.derived_uid(root, "report-sr-series", consult_pk, study.study_uid),
        "pdf": objects.derived_uid(root, "report-pdf", version.pk, study.study_uid),
        "sr": objects.derived_uid(root, "report-sr", version.pk, study.study_uid),
    }


def report_into_studies(*, version: ReportVersion) -> list[str]:
    """Write the signed version into each study of its consult; the SOP Instance UIDs written
    (empty when they are all there already). Not one transaction: ingest commits each
    instance itself and must run outside any transaction."""
    if not version.is_signed:
        raise ValueError(f"report version {version.pk} is not signed")
    consult = version.report.consult
    case = selectors.case_detail(consult)
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
            patient=services.patients_of(consult),
            detail={"version": version.number, "instances": written},
        )
    return written


def _write(version: ReportVersion, study: Study, source: Dataset, uids: dict[str, str], printed: bytes) -> list[str]:
    signer = version.signed_by
    observer = objects.Observer(
        name=signer.display_name[:64] if signer else "", organization=signer.institution.name[:64] if signer else ""
    )
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

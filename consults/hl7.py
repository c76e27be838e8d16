"""The signed report back to the requesting institution's HIS as HL7 v2.5 ORU^R01.

`queue_result` runs inside the signing transaction (consults.services): when the requesting
institution registered a HIS that takes results (imaging.hl7.outbound.result_endpoint_for), an
outbox row is written with the signature and sent by Celery once it commits
(consults.tasks.send_result). The text is built before the first attempt (`build_oru`):

    MSH ... ORU^R01^ORU_R01 ... 2.5 ... UNICODE UTF-8
    PID  the patient (PID-3 with the issuer's AE title as assigning authority)
    ORC  RE, placer order number = the study's accession number, filler = consult-<id>
    OBR  the same numbers, OBR-4 LOINC 18748-4, OBR-7 the study date, OBR-22 the signature,
         OBR-25 F (final) or C (an addendum corrects it), OBR-32 the reader
    OBX  TX lines of the findings, the impression and the recommendation (LOINC 18782-3,
         19005-8, 18783-1), and the PDF as ED (Base64) when it is at most HL7_ORU_PDF_MAX_BYTES
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import hl7
from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation

from consults import pdf, selectors
from consults.models import Consult, ReportVersion
from imaging.hl7 import messages, outbound
from imaging.hl7.models import OutboundMessage

FINDINGS = "18782-3^Radiology Study observation (narrative)^LN"
IMPRESSION = "19005-8^Radiology Imaging study [Impression] (narrative)^LN"
RECOMMENDATION = "18783-1^Radiology Study recommendation (narrative)^LN"
ADDENDUM = "55107-7^Addendum Document^LN"
PDF = "18748-4^Diagnostic imaging study^LN"
ORU = "ORU^R01"


def queue_result(consult: Consult, version: ReportVersion) -> None:
    """Owe the requesting institution's HIS this signed version (inside the signing transaction)."""
    endpoint = outbound.result_endpoint_for(consult.requesting_institution_id)
    if endpoint is None:
        return
    patients = ",".join(sorted({str(pk) for pk in consult.studies.values_list("patient_id", flat=True)}))
    row = outbound.queue(
        endpoint=endpoint,
        key=f"oru:consult:{consult.pk}:v{version.number}",
        kind=ORU,
        consult_id=consult.pk,
        version_id=version.pk,
        patient=patients,
    )

    def queue_result_send() -> None:  # named: a robust on_commit logs its callback's __qualname__
        from consults import tasks

        tasks.send_result.delay(row.pk)

    # robust: with the broker away the signature stands; the beat sweep sends the row later.
    transaction.on_commit(queue_result_send, robust=True)


def build_oru(row: OutboundMessage) -> tuple[str, str]:
    """The ORU^R01 text of an outbox row and its MSH-10."""
    version = ReportVersion.objects.select_related("report__consult", "signed_by").get(pk=int(row.version_id or 0))
    consult = version.report.consult
    case = selectors.case_detail(consult, up_to=version.number)  # never a later addendum
    study = case["studies"][0]
    control_id = hl7.generate_message_control_id()[:20]
    escape = messages.escape
    segments = [
        _msh(row, control_id),
        _pid(study.patient, escape),
        f"ORC|RE|{escape(study.accession_number)}|consult-{consult.pk}||CM",
        _obr(consult, version, study, escape),
        *_observations(version, escape),
    ]
    printed = _pdf(consult, case)
    if printed is not None:
        number = len(segments) - 3
        encoded = base64.b64encode(printed).decode("ascii")
        segments.append(f"OBX|{number}|ED|{PDF}||^application^pdf^Base64^{encoded}||||||F")
    text = "\r".join(segments) + "\r"
    hl7.parse(text)  # what we send, the library reads
    return text, control_id


def _stamp(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y%m%d%H%M%S%z") if moment else ""


def _msh(row: OutboundMessage, control_id: str) -> str:
    endpoint = row.endpoint
    fields = [
        "MSH",
        "^~\\&",
        settings.HL7_APPLICATION,
        "",
        endpoint.sending_application,
        endpoint.sending_facility,
        _stamp(timezone.now()),
        "",
        "ORU^R01^ORU_R01",
        control_id,
        "P",
        "2.5",
        "",
        "",
        "AL",
        "NE",
        "",
        "UNICODE UTF-8" if settings.HL7_ENCODING == "utf-8" else "",
    ]
    return "|".join(fields)


def _pid(patient: Any, escape: Any) -> str:
    name = "^".join(escape(part) for part in patient.name.split("=")[0].split("^")[:3])
    born = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    return (
        f"PID|1||{escape(patient.patient_id)}^^^{escape(patient.issuer.ae_title)}||{name}||{born}|{escape(patient.sex)}"
    )


def _obr(consult: Consult, version: ReportVersion, study: Any, escape: Any) -> str:
    fields = [""] * 33
    fields[0], fields[1] = "OBR", "1"
    fields[2], fields[3], fields[4] = escape(study.accession_number), f"consult-{consult.pk}", PDF
    fields[7] = study.study_date.strftime("%Y%m%d") if study.study_date else ""
    fields[18] = escape(study.accession_number)
    fields[22] = _stamp(version.signed_at)
    fields[24] = escape(study.principal_modality)
    fields[25] = "C" if version.addendum else "F"
    signer = version.signed_by
    fields[32] = escape(signer.display_name) if signer is not None else ""
    return "|".join(fields).rstrip("|")


def _observations(version: ReportVersion, escape: Any) -> list[str]:
    status = "C" if version.addendum else "F"
    rows: list[str] = []
    parts = [(ADDENDUM, version.addendum), (FINDINGS, version.findings), (IMPRESSION, version.impression)]
    parts.append((RECOMMENDATION, version.recommendation))
    for code, text in parts:
        for line in [line.rstrip() for line in text.strip().splitlines()] if text.strip() else []:
            rows.append(f"OBX|{len(rows) + 1}|TX|{code}||{escape(line)}||||||{status}")
    return rows


def _pdf(consult: Consult, case: dict[str, Any]) -> bytes | None:
    with translation.override(settings.LANGUAGE_CODE):
        printed = pdf.render_report(consult, case)
    return printed if len(printed) <= settings.HL7_ORU_PDF_MAX_BYTES else None

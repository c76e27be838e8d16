"""Messages we send on an association of our own: the storage commitment report (PS3.4 J.3.3)
to a device whose request association has closed. pynetdicom's public API only."""

from __future__ import annotations

import ssl

from pynetdicom import AE, build_role

from imaging.dicom.procedures import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE, CommitmentReport
from imaging.dicom.status import Status


class NotDelivered(Exception):
    """The peer could not be reached, refused the association, or did not answer Success."""


def send_commitment_report(
    *,
    calling_ae: str,
    called_ae: str,
    host: str,
    port: int,
    report: CommitmentReport,
    timeout: float = 30,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Associate with the device and send the N-EVENT-REPORT; raise NotDelivered on any failure.

    PS3.4 J.3.3: we propose the Storage Commitment Push Model SOP class in the SCP role (the
    device, acceptor here, is still its SCU), by SCP/SCU role selection (PS3.7 D.3.3.4)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(STORAGE_COMMITMENT)
    role = build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
    tls_args = (tls, host) if tls is not None else None
    assoc = ae.associate(host, port, ae_title=called_ae, ext_neg=[role], tls_args=tls_args)
    if not assoc.is_established:
        raise NotDelivered(f"association with {called_ae}@{host}:{port} not established")
    try:
        answer, _reply = assoc.send_n_event_report(
            report.event_information(), report.event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
    finally:
        if assoc.is_established:
            assoc.release()
    status = int(answer.get("Status", -1))
    if status != Status.SUCCESS:
        raise NotDelivered(f"{called_ae} answered the report with status 0x{status & 0xFFFF:04X}")

"""Issue 16, item 6 on the wire: with the image store switched off for Clinic A the real
`manage.py dicom_server` refuses its devices' C-STORE, C-FIND and C-GET with 0x0124
"Refused: Not Authorized" (PS3.7 Annex C) and its C-MOVE with pynetdicom's 0xC511 (the
0xC000 family "Failed: Unable to process", PS3.4 C.4.2.1.5: pynetdicom's C-MOVE takes no
status before the destination); C-ECHO still answers."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from alliance import audit, services
from tests.imaging import dicomgen
from tests.imaging.test_dicom_server import (  # noqa: F401 (fixtures)
    accelerate,
    data_dir,
    pytestmark,
    server,
    server_env,
    world,
)


def _association(port: int, *, get: bool = False) -> Any:
    """An association of Clinic A's CT: to store, find and move, or (get) to C-GET."""
    ae = AE(ae_title="CT_A")
    contexts = (
        [StudyRootQueryRetrieveInformationModelGet, CTImageStorage]
        if get
        else [
            Verification,
            CTImageStorage,
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelMove,
        ]
    )
    for context in contexts:
        ae.add_requested_context(context)
    roles = [build_role(CTImageStorage, scp_role=True)] if get else []
    assoc = ae.associate("127.0.0.1", port, ae_title="CLINA", ext_neg=roles)
    assert assoc.is_established
    return assoc


def _query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3.4.5"
    return query


def _last_status(responses: Any) -> int:
    statuses = [status.Status for status, _identifier in responses if status]
    return int(statuses[-1])


def test_a_switched_off_image_store_refuses_every_dimse_service_of_the_institution(server, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    services.institution_update(institution=world.clin_a, modules=["consults"], by=audit.SYSTEM)
    ds = dicomgen.make_ct_series(1, 16, 16, patient_id="P-OFF")[0]
    assoc = _association(server)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        stored = assoc.send_c_store(ds)
        assert stored.Status == 0x0124
        assert "switched off" in str(stored.ErrorComment)
        assert _last_status(assoc.send_c_find(_query(), StudyRootQueryRetrieveInformationModelFind)) == 0x0124
        moved = _last_status(assoc.send_c_move(_query(), "WS_A", StudyRootQueryRetrieveInformationModelMove))
        assert 0xC000 <= moved <= 0xCFFF
    finally:
        assoc.release()
    assoc = _association(server, get=True)
    try:
        assert _last_status(assoc.send_c_get(_query(), StudyRootQueryRetrieveInformationModelGet)) == 0x0124
    finally:
        assoc.release()


def test_with_the_image_store_on_the_same_store_succeeds(server, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    ds = dicomgen.make_ct_series(1, 16, 16, patient_id="P-ON")[0]
    assoc = _association(server)
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()

"""Typed views of the workflow messages a modality sends: the worklist query (PS3.4 K.6), the
performed procedure step (PS3.4 F.7) and the storage commitment request (PS3.4 J.3), and the
data sets we answer with. pydicom only: the services decide what they mean."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imaging.dicom.datasets import is_valid_uid
from imaging.dicom.identifiers import element_text
from imaging.dicom.status import DimseFailure, Status

# PS3.4 Table B.5-1 / K.6 / F.7 / J.3: the SOP classes, and the well-known instance of J.3.2
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"

_STEP_SEQUENCE = "ScheduledProcedureStepSequence"  # (0040,0100)
_CONTROL = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel"})


@dataclass(frozen=True)
class WorklistQuery:
    """An MWL C-FIND identifier (PS3.4 K.6.1.2): the keys at the top level (patient, visit,
    requested procedure, imaging service request) and those of the one item of the Scheduled
    Procedure Step Sequence. Each maps a keyword to the DICOM string of its matching value
    ("" for a return key only); a sequence inside is asked for, never matched."""

    criteria: dict[str, str]
    step_criteria: dict[str, str]
    step_asked: bool  # the Scheduled Procedure Step Sequence was among the keys

    @property
    def keywords(self) -> list[str]:
        return list(self.criteria)

    @property
    def step_keywords(self) -> list[str]:
        return list(self.step_criteria)

    @classmethod
    def from_identifier(cls, identifier: Dataset | None) -> WorklistQuery:
        if identifier is None:
            raise DimseFailure(Status.CANNOT_UNDERSTAND, "the request carries no identifier")
        step_criteria: dict[str, str] = {}
        step_asked = _STEP_SEQUENCE in identifier
        if step_asked:
            items = identifier[_STEP_SEQUENCE].value or []
            if len(items) > 1:
                # PS3.4 K.6.1.2.1: the sequence holds a single item as a matching key
                raise DimseFailure(
                    Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                    "Scheduled Procedure Step Sequence must have one item",
                )
            if items:
                step_criteria = _keys(items[0])
        return cls(criteria=_keys(identifier, skip=_STEP_SEQUENCE), step_criteria=step_criteria, step_asked=step_asked)


def _keys(ds: Dataset, skip: str = "") -> dict[str, str]:
    return {elem.keyword: element_text(elem) for elem in ds if elem.keyword and elem.keyword not in _CONTROL | {skip}}


# --- modality performed procedure step (PS3.4 F.7) ----------------------------------------

MPPS_STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")  # (0040,0252), PS3.3 C.4.14


@dataclass(frozen=True)
class ScheduledRef:
    """One item of the Scheduled Step Attributes Sequence (0040,0270): which order was done."""

    accession_number: str = ""
    study_uid: str = ""
    requested_procedure_id: str = ""
    step_id: str = ""


@dataclass(frozen=True)
class PerformedStep:
    """What an MPPS N-CREATE or N-SET says: the status ("" when an N-SET leaves it), the orders
    it performs (N-CREATE only), and what the worklist shows of it."""

    status: str
    scheduled: tuple[ScheduledRef, ...] = ()
    modality: str = ""
    station_ae: str = ""
    patient_id: str = ""
    reason: str = ""  # a discontinuation's reason, as text

    @classmethod
    def from_create(cls, attributes: Dataset | None) -> PerformedStep:
        """PS3.4 F.7.2.1.1: the status must be IN PROGRESS, and the sequence present."""
        if attributes is None:
            raise DimseFailure(Status.MISSING_ATTRIBUTE, "the N-CREATE carries no attribute list")
        status = _status(attributes)
        if not status:
            raise DimseFailure(Status.MISSING_ATTRIBUTE, "Performed Procedure Step Status (0040,0252) is missing")
        if status != "IN PROGRESS":
            raise DimseFailure(Status.INVALID_ATTRIBUTE_VALUE, "an MPPS is created IN PROGRESS")
        if "ScheduledStepAttributesSequence" not in attributes:
            raise DimseFailure(Status.MISSING_ATTRIBUTE, "Scheduled Step Attributes Sequence (0040,0270) is missing")
        refs = tuple(_scheduled_ref(item) for item in attributes.ScheduledStepAttributesSequence)
        return cls(
            status=status,
            scheduled=refs,
            modality=_text(attributes, "Modality"),
            station_ae=_text(attributes, "PerformedStationAETitle"),
            patient_id=_text(attributes, "PatientID"),
        )

    @classmethod
    def from_set(cls, modifications: Dataset | None) -> PerformedStep:
        if modifications is None:
            raise DimseFailure(Status.MISSING_ATTRIBUTE, "the N-SET carries no modification list")
        return cls(status=_status(modifications), reason=_discontinuation(modifications))


def _status(ds: Dataset) -> str:
    if "PerformedProcedureStepStatus" not in ds:
        return ""
    status = element_text(ds["PerformedProcedureStepStatus"]).upper()
    if status not in MPPS_STATUSES:
        raise DimseFailure(
            Status.INVALID_ATTRIBUTE_VALUE, "Performed Procedure Step Status is IN PROGRESS, COMPLETED or DISCONTINUED"
        )
    return status


def _text(ds: Dataset, keyword: str) -> str:
    return element_text(ds[keyword]) if keyword in ds else ""


def _scheduled_ref(item: Dataset) -> ScheduledRef:
    return ScheduledRef(
        accession_number=_text(item, "AccessionNumber"),
        study_uid=_text(item, "StudyInstanceUID"),
        requested_procedure_id=_text(item, "RequestedProcedureID"),
        step_id=_text(item, "ScheduledProcedureStepID"),
    )


def _discontinuation(ds: Dataset) -> str:
    """PS3.3 C.4.14: the Code Meaning of the discontinuation reason, when the modality gives one."""
    items = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []
    return ", ".join(_text(item, "CodeMeaning") for item in items if "CodeMeaning" in item)[:200]


# --- storage commitment push model (PS3.4 J.3) ---------------------------------------------

ACTION_REQUEST_COMMITMENT = 1  # PS3.4 J.3.2.1.1 Action Type ID
EVENT_ALL_COMMITTED = 1  # PS3.4 J.3.3.1.1 Event Type IDs
EVENT_FAILURES_EXIST = 2
NO_SUCH_OBJECT = 0x0112  # Failure Reason (0008,1197), PS3.3 C.14.1.1
CLASS_INSTANCE_CONFLICT = 0x0119
_MAX_REFERENCES = 100_000


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CommitmentRequest:
    """An N-ACTION asking us to commit to keep these instances (PS3.4 J.3.2.1.1)."""

    transaction_uid: str
    references: tuple[Reference, ...]

    @classmethod
    def from_action(cls, action_type: int | None, information: Dataset | None) -> CommitmentRequest:
        if action_type != ACTION_REQUEST_COMMITMENT:
            raise DimseFailure(Status.NO_SUCH_ACTION, f"Action Type ID {action_type} is not a commitment request (1)")
        if information is None:
            raise DimseFailure(Status.INVALID_ARGUMENT_VALUE, "the N-ACTION carries no action information")
        transaction_uid = _text(information, "TransactionUID")
        if not is_valid_uid(transaction_uid):
            raise DimseFailure(Status.INVALID_ARGUMENT_VALUE, "Transaction UID (0008,1195) is missing or not a UID")
        items = information.get("ReferencedSOPSequence") or []
        if not items or len(items) > _MAX_REFERENCES:
            raise DimseFailure(
                Status.INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence (0008,1199) must list the instances"
            )
        references = tuple(_reference(item) for item in items)
        return cls(transaction_uid=transaction_uid, references=references)


def _reference(item: Dataset) -> Reference:
    ref = Reference(_text(item, "ReferencedSOPClassUID"), _text(item, "ReferencedSOPInstanceUID"))
    if not (is_valid_uid(ref.sop_class_uid) and is_valid_uid(ref.sop_instance_uid)):
        raise DimseFailure(Status.INVALID_ARGUMENT_VALUE, "a referenced SOP has no valid class or instance UID")
    return ref


@dataclass(frozen=True)
class Failure:
    reference: Reference
    reason: int = NO_SUCH_OBJECT


@dataclass(frozen=True)
class CommitmentReport:
    """The outcome of a commitment request, as the N-EVENT-REPORT says it (PS3.4 J.3.3.1.1)."""

    transaction_uid: str
    committed: tuple[Reference, ...]
    failed: tuple[Failure, ...] = ()
    retrieve_ae: str = ""
    commitment_id: int | None = None  # what the services know it by

    @property
    def event_type(self) -> int:
        return EVENT_FAILURES_EXIST if self.failed else EVENT_ALL_COMMITTED

    def event_information(self) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.retrieve_ae and self.committed:
            ds.RetrieveAETitle = self.retrieve_ae
        if self.committed:
            ds.ReferencedSOPSequence = Sequence(_items(self.committed))
        if self.failed:
            ds.FailedSOPSequence = Sequence(_failed_item(f) for f in self.failed)
        return ds


def _items(refs: Iterable[Reference]) -> list[Dataset]:
    items = []
    for ref in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        items.append(item)
    return items


def _failed_item(failure: Failure) -> Dataset:
    (item,) = _items([failure.reference])
    item.FailureReason = failure.reason
    return item

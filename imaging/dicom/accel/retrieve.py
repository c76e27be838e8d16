"""C-MOVE and C-GET sending each stored instance as its stored bytes.

pynetdicom takes nothing but a Dataset from a retrieve handler and would encode it again.
The handlers yield a StoredFile instead (only its SOP Class and SOP Instance UIDs and the
stored object); Association.send_c_store, replaced by send_c_store below, sends the stored
file's data set bytes, exactly as received (_config.STORE_SEND_CHUNKED_DATASET, set by
accel.install) when the peer accepted the file's own transfer syntax; when it did not, the
file is decoded and pynetdicom converts it to one the peer accepted, as it can.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.association import Association

from imaging.dicom.identifiers import StoredObject

original_send_c_store = Association.send_c_store


class StoredFile(Dataset):
    """What C-MOVE and C-GET hand pynetdicom for each instance when accelerated."""

    def __init__(self, obj: StoredObject) -> None:
        super().__init__()
        self.SOPClassUID = obj.sop_class_uid
        self.SOPInstanceUID = obj.sop_instance_uid
        self.stored = obj


def send_c_store(self: Association, dataset: Any, *args: Any, **kwargs: Any) -> Any:
    """Association.send_c_store, sending a StoredFile as its stored bytes."""
    if not isinstance(dataset, StoredFile):
        return original_send_c_store(self, dataset, *args, **kwargs)
    with stored_path(dataset.stored) as path:
        if _accepts(self, dataset.stored):
            return original_send_c_store(self, path, *args, **kwargs)
        return original_send_c_store(self, dcmread(path), *args, **kwargs)


@contextmanager
def stored_path(obj: StoredObject) -> Iterator[Path]:
    """A real file holding the stored instance: the stored file itself, or a temporary copy
    (object storage)."""
    if obj.path is not None:
        yield obj.path
        return
    with obj.open() as source, tempfile.NamedTemporaryFile(suffix=".dcm") as copy:
        shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.flush()
        yield Path(copy.name)


def _accepts(assoc: Any, obj: StoredObject) -> bool:
    """Whether the peer accepted a context for the object's SOP class in its stored syntax."""
    return any(
        cx.abstract_syntax == obj.sop_class_uid and cx.transfer_syntax[0] == obj.transfer_syntax_uid
        for cx in assoc.accepted_contexts
    )

"""pynetdicom's switch for sending a file's data set as its bytes, on for one thread only.

Association.send_c_store, given a file's path, sends the data set's bytes as they lie in the
file when pynetdicom's documented `_config.STORE_SEND_CHUNKED_DATASET` is True, and decodes
the file and encodes it again otherwise. The switch is process-wide: routing (imaging/dicom/
scu.py) turning it on would change what every other pynetdicom user in the same process
sends (a Celery worker runs other tasks beside routing's). `stored_bytes()` turns it on for
the calling thread, for the length of a block: pynetdicom's association module reads its
configuration through a stand-in (`_ThreadView`) that answers that one setting from the
thread and everything else from pynetdicom's configuration, unchanged, and passes writes on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynetdicom import _config
from pynetdicom import association as _association_module

_SWITCH = "STORE_SEND_CHUNKED_DATASET"


class _Depth(threading.local):
    depth = 0  # how many stored_bytes() blocks this thread is in


_local = _Depth()
_installing = threading.Lock()


class _ThreadView:
    """pynetdicom's configuration as its association module sees it: the switch is on for a
    thread inside stored_bytes(), the rest (and the switch for every other thread) as set."""

    def __getattr__(self, name: str) -> Any:
        if name == _SWITCH and _local.depth:
            return True
        return getattr(_config, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_config, name, value)


def _install() -> None:
    with _installing:
        if not isinstance(_association_module._config, _ThreadView):
            _association_module._config = _ThreadView()  # type: ignore[assignment]


@contextmanager
def stored_bytes() -> Iterator[None]:
    """Within the block, Association.send_c_store called on this thread sends a file path's
    data set as its bytes; other threads see pynetdicom's configuration as it is."""
    _install()
    _local.depth += 1
    try:
        yield
    finally:
        _local.depth -= 1

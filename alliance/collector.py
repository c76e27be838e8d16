"""The cyclic garbage collector in long-running processes (web workers, the DICOM server)."""

from __future__ import annotations

import gc


def freeze_what_is_loaded() -> None:
    """Once a process has loaded what it keeps for its life (Django, the apps, the URL patterns,
    pydicom's dictionaries: several hundred thousand objects), move it out of the collector's
    generations, after one collection so that no start-up garbage is kept with it. A full
    collection then no longer walks all of it in the middle of some request or association (a
    pause of about 70 ms in a web process, bench/RESULTS.md, DICOMweb). Reference counting
    still frees what is dropped; only cycles wait for the collector."""
    gc.collect()
    gc.freeze()

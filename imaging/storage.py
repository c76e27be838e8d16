"""Where DICOM files live: Django's STORAGES["dicom"] (a local folder, or S3 by setting).

Files are stored byte-for-byte as received, under a key derived from their UIDs. On a
local folder a stored file is durable (fsynced, with its directory) before `put_file`
returns, so a success status sent after it cannot be lost to a crash, and a file is never
put over one already there: a hard link is created or fails atomically, so of two stores
racing for one key exactly one owns the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

if TYPE_CHECKING:
    from imaging.models import Instance

_COPY_CHUNK = 1024 * 1024
T = TypeVar("T")
_sync_pools: dict[int, ThreadPoolExecutor] = {}


def _sync_pool() -> ThreadPoolExecutor:
    """One pool per process: dicom_server forks workers, and threads do not survive a fork."""
    pid = os.getpid()
    if pid not in _sync_pools:
        _sync_pools[pid] = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicom-fsync")
    return _sync_pools[pid]


def dicom_storage() -> Storage:
    return storages["dicom"]


def storage_key_for(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """ "ab/cd/<study>/<series>/<sop>.dcm": a two-level hash fan-out keeps folders small
    while a study's files stay together."""
    digest = hashlib.sha256(study_uid.encode("ascii")).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{study_uid}/{series_uid}/{sop_uid}.dcm"


def temp_dir() -> Path:
    """A scratch folder for files on their way in (DATA_DIR/tmp).

    Write incoming files here: on a local store it is usually the same file system, so
    ingest can link the file into place instead of copying it.
    """
    folder = Path(settings.DATA_DIR) / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_instance(instance: Instance) -> IO[bytes]:
    """The stored file, opened for binary reading (the real file on a local store)."""
    path = local_path(instance)
    if path is not None:
        return path.open("rb")
    return dicom_storage().open(instance.storage_key, "rb")


def local_path(instance: Instance) -> Path | None:
    """A real path for a local store (for sendfile and streaming), else None."""
    return local_path_for_key(instance.storage_key)


def local_path_for_key(key: str) -> Path | None:
    storage = dicom_storage()
    if isinstance(storage, FileSystemStorage):
        return Path(storage.path(key))
    return None


def put_file(source: Path, key: str) -> None:
    """Store the file at `source` under `key`, unchanged; durable on return.

    Raises FileExistsError when a local store already holds a file under `key` (object
    storage replaces it), OSError (or the backend's own error) when the bytes could not be
    stored.
    """
    start_put(source, key).result()


def presync(path: Path) -> Future[None] | None:
    """Start making the data of a received file durable now, on the pool, while the caller
    parses and checks it; hand the future to start_put. None when the store is not local
    (there the upload itself is the durable copy)."""
    if not places_exclusively():
        return None
    return _sync_pool().submit(fdatasync, path)


def background(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run fn(*args) on the store's thread pool (work that reads a received file while the
    caller parses it, such as its checksum)."""
    return _sync_pool().submit(fn, *args)


def places_exclusively() -> bool:
    """Whether start_put refuses to replace a file already under the key (a local store: a
    hard link is created or fails atomically). Object storage replaces."""
    return isinstance(dicom_storage(), FileSystemStorage)


def alternative_key(key: str) -> str:
    """Another key beside `key` for the same instance, for when a file no index row names
    (left by a store that stopped before its commit) holds `key`."""
    stem, dot, suffix = key.rpartition(".")
    return f"{stem}.{uuid.uuid4().hex[:12]}{dot}{suffix}" if dot else f"{key}.{uuid.uuid4().hex[:12]}"


def start_put(source: Path, key: str, presynced: Future[None] | None = None) -> Future[None]:
    """Put the file in place now; the future completes once it is durable.

    On a local store the file never replaces one already under `key`: FileExistsError, and
    nothing is changed (see places_exclusively). The fsyncs (a few milliseconds each on
    real disks) run on a small thread pool, so the caller can work meanwhile. `presynced` is
    presync(source): when the file is linked into place its data is then already on its way
    to disk.
    """
    storage = dicom_storage()
    if isinstance(storage, FileSystemStorage):
        dest = Path(storage.path(key))
        linked, new_dirs = _place_local(storage, source, dest)
        return _sync_pool().submit(_sync_local, dest, new_dirs, presynced if linked else None)
    with source.open("rb") as fh:
        saved = storage.save(key, File(fh, name=key))
    if saved != key:
        storage.delete(saved)
        raise OSError(f"the storage renamed {key!r} to {saved!r}; set file_overwrite for the DICOM storage")
    done: Future[None] = Future()
    done.set_result(None)  # an S3 PUT is durable when it returns
    return done


def put_durable_files(pairs: list[tuple[Path, str]]) -> None:
    """Link each already durable file (the spool's) into place under its key on a local store,
    then make the folders durable, each once; nothing over an existing file. On any failure
    the links made are removed again and the error raised (FileExistsError for a key that
    holds a file)."""
    storage = dicom_storage()
    if not isinstance(storage, FileSystemStorage):
        raise TypeError("put_durable_files needs a local store")
    placed: list[Path] = []
    folders: dict[Path, None] = {}
    try:
        for source, key in pairs:
            dest = Path(storage.path(key))
            linked, changed = _place_local(storage, source, dest)
            placed.append(dest)
            if not linked:
                fdatasync(dest)  # a copy (another file system) is not the durable source
            folders.update(dict.fromkeys(changed))
        for folder in folders:
            fsync_dir(folder)
    except BaseException:
        for dest in placed:
            dest.unlink(missing_ok=True)
        raise


def replace_file(source: Path, key: str) -> None:
    """Store the file at `source` under `key` in place of whatever is there (a repair of a lost
    or damaged file); durable on return. On a local store the new file is made durable beside
    the key, then renamed over it atomically."""
    storage = dicom_storage()
    if not isinstance(storage, FileSystemStorage):
        start_put(source, key).result()  # object storage replaces
        return
    dest = Path(storage.path(key))
    new_dirs = _make_dirs(dest.parent, storage.directory_permissions_mode)
    staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        _copy(source, staging)
        if storage.file_permissions_mode is not None:
            os.chmod(staging, storage.file_permissions_mode)
        fdatasync(staging)
        os.replace(staging, dest)
    finally:
        staging.unlink(missing_ok=True)
    for folder in [dest.parent, *new_dirs]:
        fsync_dir(folder)


def delete_key(key: str) -> None:
    storage = dicom_storage()
    if isinstance(storage, FileSystemStorage):
        Path(storage.path(key)).unlink(missing_ok=True)
    else:
        storage.delete(key)


def _place_local(storage: FileSystemStorage, source: Path, dest: Path) -> tuple[bool, list[Path]]:
    """Link (or copy) the file into place atomically, never over an existing file
    (FileExistsError); whether it was linked (the same inode: no copy at all), and the
    folders whose entries changed."""
    new_dirs = _make_dirs(dest.parent, storage.directory_permissions_mode)
    if storage.file_permissions_mode is not None:
        os.chmod(source, storage.file_permissions_mode)
    try:
        os.link(source, dest)  # same file system: no copy at all; fails if dest exists
        return True, [dest.parent, *new_dirs]
    except FileExistsError:
        raise
    except OSError:
        pass  # another file system, or no hard links: copy beside, then link the copy
    staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        _copy(source, staging)
        if storage.file_permissions_mode is not None:
            os.chmod(staging, storage.file_permissions_mode)
        os.link(staging, dest)
    finally:
        staging.unlink(missing_ok=True)
    return False, [dest.parent, *new_dirs]


def _sync_local(dest: Path, folders: list[Path], presynced: Future[None] | None) -> None:
    if presynced is not None:
        presynced.result()  # the same inode: its data is durable once this is done
    else:
        fdatasync(dest)
    for folder in folders:
        fsync_dir(folder)


def fdatasync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path, mode: int | None) -> list[Path]:
    """mkdir -p, returning the parents of the folders it created (they need an fsync too)."""
    created: list[Path] = []
    if folder.is_dir():  # the usual case: a further instance of a series
        return created
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        if mode is not None:
            os.chmod(path, mode)
        created.append(path.parent)
    return created


def _copy(source: Path, dest: Path) -> None:
    with source.open("rb") as src, dest.open("xb") as out:
        shutil.copyfileobj(src, out, _COPY_CHUNK)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

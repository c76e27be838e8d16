"""Where DICOM files live: Django's STORAGES["dicom"] (a local folder, or S3 by setting).

Files are stored byte-for-byte as received, under a key derived from their UIDs. On a
local folder a stored file is durable (fsynced, with its directory) before `put_file`
returns, so a success status sent after it cannot be lost to a crash, and a file is never
put over one already there: a hard link is created or fails atomically, so of two stores
racing for one key exactly one owns the file. On S3 an object is durable once its PUT has
returned; a PUT replaces, so ingest serialises stores of one instance by a lock on its
UID instead (imaging.index.lock_and_find).

Reading an object from S3 streams it (ObjectReader): one GET read as the caller reads, a
ranged GET when the caller seeks elsewhere; never the whole object in memory or on disk.

Thumbnails and previews are cached in STORAGES["renders"]: beside the DICOM objects in the
bucket (under RENDER_CACHE_FOLDER/) when S3 is set, so that every node shares them; else
the local media folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

if TYPE_CHECKING:
    from imaging.models import Instance

_COPY_CHUNK = 1024 * 1024
_log = logging.getLogger(__name__)
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
    """ "ab/cd/<study>_<series>_<sop>.dcm": a two-level fan-out by a hash of the study keeps
    folders small while a study's files stay together in one folder, and a new study or series
    makes no folder of its own. (Until 2026-12 keys were "ab/cd/<study>/<series>/<sop>.dcm":
    three new folders for each new study, each a new inode and an fsync of its parent, the
    largest part of the system time of a clinic's single-instance studies, bench/RESULTS.md.
    An instance's key is kept in its row, so files stored under the old form stay where they are.)
    UIDs are digits and dots (64 characters at most): the name stays under 200 characters."""
    digest = hashlib.sha256(study_uid.encode("ascii")).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{study_uid}_{series_uid}_{sop_uid}.dcm"


def temp_dir() -> Path:
    """A scratch folder for files on their way in (DATA_DIR/tmp).

    Write incoming files here: on a local store it is usually the same file system, so
    ingest can link the file into place instead of copying it.
    """
    folder = Path(settings.DATA_DIR) / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_instance(instance: Instance) -> IO[bytes]:
    """The stored file, opened for binary reading (the real file on a local store, a streaming
    reader of the object on S3). FileNotFoundError when it is not there, OSError when the
    store cannot be read."""
    return open_key(instance.storage_key)


def open_key(key: str) -> IO[bytes]:
    storage = dicom_storage()
    if isinstance(storage, FileSystemStorage):
        return Path(storage.path(key)).open("rb")
    if _is_s3(storage):
        return io.BufferedReader(ObjectReader(storage, key), buffer_size=_READ_BUFFER)
    return storage.open(key, "rb")


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
    missing = [folder]  # up to the first folder there (not every parent to the root: a new
    for parent in folder.parents:  # study's instance asked a dozen stat() calls more)
        if parent.is_dir():
            break
        missing.append(parent)
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


# --- S3 -----------------------------------------------------------------------------------

_READ_BUFFER = 256 * 1024
# A forward seek up to this far reads on through the open GET rather than starting another.
_SKIP_READING = 1024 * 1024
RENDER_CACHE_FOLDER = "renders"  # the render cache's prefix in the bucket (never a DICOM key's: "ab/...")


def _is_s3(storage: Storage) -> bool:
    return hasattr(storage, "bucket_name") and hasattr(storage, "connection")


def _s3_failure(exc: Exception, key: str) -> OSError:
    """botocore's errors as the OSError every caller of the store handles: FileNotFoundError
    for an object that is not there."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in {"NoSuchKey", "NotFound", "404"} or status == 404:
        return FileNotFoundError(f"no object {key!r} in the bucket")
    return OSError(f"the object store failed on {key!r}: {type(exc).__name__}: {exc}")


class ObjectReader(io.RawIOBase):
    """An S3 object as a seekable binary file that never holds more than one read's bytes.

    Reading goes on through one GET's body; a seek elsewhere (further than _SKIP_READING
    ahead, or back) starts a ranged GET from there on the next read. Opening asks for the
    object at once, so that a missing one is FileNotFoundError here, not part-way through
    an answer. Wrap it in io.BufferedReader (open_key does): parsers seek back by a few
    bytes all the time, which the buffer serves."""

    def __init__(self, storage: Any, key: str) -> None:
        super().__init__()
        from storages.utils import clean_name  # only with the S3 storage installed

        self._client = storage.connection.meta.client
        self._bucket = storage.bucket_name
        self._name = storage._normalize_name(clean_name(key))
        self._key = key
        self._pos = 0
        self._body: Any = None
        self._body_pos = 0
        self._size = -1
        self._get_from(0)

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:  # what io.BufferedReader, and pydicom's messages, call it
        return self._key

    def _get_from(self, pos: int) -> None:
        self._drop_body()
        if 0 <= self._size <= pos:
            return  # at or past the end: nothing to ask for
        extra = {"Range": f"bytes={pos}-"} if pos else {}
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._name, **extra)
        except Exception as exc:  # botocore's ClientError, BotoCoreError (no connection...)
            if pos and getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                self._size = pos
                return
            raise _s3_failure(exc, self._key) from exc
        content_range = str(answer.get("ContentRange") or "")
        if content_range.rpartition("/")[2].isdigit():
            self._size = int(content_range.rpartition("/")[2])
        else:
            self._size = pos + int(answer["ContentLength"])
        self._body, self._body_pos = answer["Body"], pos

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        ahead = self._pos - self._body_pos
        if self._body is None or ahead < 0 or ahead > _SKIP_READING:
            self._get_from(self._pos)
            if self._body is None:
                return 0
        try:
            while self._body_pos < self._pos:  # a short seek ahead: read past it
                skipped = self._body.read(min(self._pos - self._body_pos, _COPY_CHUNK))
                if not skipped:
                    raise OSError(f"the object {self._key!r} ended early")
                self._body_pos += len(skipped)
            data = self._body.read(len(buffer))
        except OSError:
            raise
        except Exception as exc:  # urllib3's ProtocolError, botocore's ReadTimeoutError...
            self._drop_body()
            raise _s3_failure(exc, self._key) from exc
        count = len(data)
        buffer[:count] = data
        self._pos += count
        self._body_pos += count
        return count

    def close(self) -> None:
        self._drop_body()
        super().close()


def object_size(key: str) -> int:
    """The stored size of the file under `key` (one stat, or one HEAD on S3)."""
    storage = dicom_storage()
    if isinstance(storage, FileSystemStorage):
        return Path(storage.path(key)).stat().st_size
    try:
        return int(storage.size(key))
    except OSError:
        raise
    except Exception as exc:
        raise _s3_failure(exc, key) from exc


def put_files(pairs: list[tuple[Path, str]]) -> None:
    """Upload each file under its key to object storage, several at once; durable on return.
    On any failure the objects put are deleted again and the first error raised (as an
    OSError). The caller holds the lock of every instance: a PUT replaces."""
    storage = dicom_storage()
    if isinstance(storage, FileSystemStorage):
        raise TypeError("put_files is for object storage; a local store links (put_durable_files)")
    pool = _sync_pool()
    futures = [(key, pool.submit(put_file, source, key)) for source, key in pairs]
    failure: BaseException | None = None
    for _key, future in futures:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - the first is raised once all are done
            failure = failure or exc
    if failure is None:
        return
    for key, _future in futures:
        try:
            storage.delete(key)
        except Exception:  # the original failure matters more; an orphan is found by the check
            _log.warning("could not delete %s after a failed upload", key, exc_info=True)
    if isinstance(failure, OSError) or not isinstance(failure, Exception):
        raise failure
    raise _s3_failure(failure, pairs[0][1]) from failure


# --- the render cache ---------------------------------------------------------------------


def render_cache() -> Storage:
    return storages["renders"]


def cached_render(key: str) -> bytes | None:
    """A cached thumbnail or preview, or None when there is none yet."""
    cache = render_cache()
    if isinstance(cache, FileSystemStorage):
        try:
            return Path(cache.path(key)).read_bytes()
        except FileNotFoundError:
            return None
    try:
        with cache.open(key, "rb") as fh:
            return bytes(fh.read())
    except FileNotFoundError:
        return None


def cache_render(key: str, data: bytes) -> None:
    """Keep a render under `key`: written beside and renamed into place on a local folder (two
    workers rendering it at once both write the same bytes), one PUT on S3."""
    cache = render_cache()
    if isinstance(cache, FileSystemStorage):
        dest = Path(cache.path(key))
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            staging.write_bytes(data)
            os.replace(staging, dest)
        finally:
            staging.unlink(missing_ok=True)
        return
    saved = cache.save(key, ContentFile(data))
    if saved != key:  # a storage that renames instead of replacing: keep the first
        cache.delete(saved)

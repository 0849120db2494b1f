"""Files one task writes and another reads, wherever the tasks run.

In the embedded mode every task runs on one machine and shares the state directory, so a shared file is
simply a file under it. Where tasks share no disk (Celery workers, Kubernetes pods), the same files live
in object storage: ``LOOPLINE_STORAGE_URL=s3://bucket[/prefix]`` (any S3-compatible store; its endpoint
in ``LOOPLINE_STORAGE_ENDPOINT_URL``, credentials from the usual ``AWS_*`` variables).

Tasks hand each other URIs, never local paths: ``writing(*key)`` gives a writer a local path and, when it
is done, makes the file visible at the key's URI (on the local disk: the file *is* there, nothing is
copied); ``reading(uri)`` gives a reader a local path holding that file (a private download when the URI
is remote). A reader given a plain local path on a machine where it does not exist gets an error that
says the writer ran elsewhere and what to set, instead of a bare FileNotFoundError.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

if TYPE_CHECKING:
    import fsspec

    from loopline.config import Settings

_T = TypeVar("_T")

SUPPORTED_SCHEMES = ("file", "s3")


class StorageError(RuntimeError):
    """Shared storage cannot be used as configured; the message names the URI and what to fix."""


def _check_root(url: str) -> str:
    scheme = urlparse(url).scheme or "file"
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"LOOPLINE_STORAGE_URL={url!r}: scheme {scheme!r} is not supported; use s3://bucket[/prefix] "
            "(AWS or any S3-compatible store, with LOOPLINE_STORAGE_ENDPOINT_URL) or leave it empty for the "
            "state directory on the local disk"
        )
    if scheme == "s3" and not urlparse(url).netloc:
        raise StorageError(f"LOOPLINE_STORAGE_URL={url!r} names no bucket: use s3://<bucket>[/prefix]")
    return url.rstrip("/")


@dataclass(frozen=True)
class SharedFiles:
    """The root every shared file lives under: ``file:///<state dir>`` or ``s3://bucket[/prefix]``."""

    root: str
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", _check_root(self.root))

    @classmethod
    def of(cls, settings: Settings) -> SharedFiles:
        if settings.storage_url:
            return cls(settings.storage_url, settings.storage_endpoint_url)
        return cls(settings.state.root.as_uri())

    @property
    def scheme(self) -> str:
        return urlparse(self.root).scheme or "file"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file")
        options: dict[str, Any] = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        # No instance cache: settings (endpoint, credentials) may differ between two SharedFiles.
        return fsspec.filesystem(
            "s3", client_kwargs=options, skip_instance_cache=True, use_listings_cache=False
        )

    def uri(self, *parts: str) -> str:
        """The URI of ``parts`` under the root (each part one or more ``/``-separated names)."""
        for part in parts:
            if not part or part.startswith("/") or ".." in part.split("/"):
                raise StorageError(f"storage key part {part!r} must be a relative name without '..'")
        return "/".join([self.root, *parts])

    def local_path(self, uri: str) -> Path:
        """The local file of a ``file://`` URI or plain path (raises for a remote URI)."""
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return Path(parsed.path if parsed.scheme else uri)
        raise StorageError(f"{uri} is not on the local disk")

    def _fs_path(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return str(self.local_path(uri))
        if parsed.scheme != self.scheme:
            raise StorageError(
                f"{uri} is not in this storage ({self.root}): set LOOPLINE_STORAGE_URL to its root"
            )
        return f"{parsed.netloc}{parsed.path}"

    # --- writing and reading ------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, *parts: str) -> Iterator[Path]:
        """A local path to write the file at ``parts`` to; visible at ``self.uri(*parts)`` on exit.

        Local: the final path itself (its folder created). Remote: a private temporary file uploaded
        when the block ends without an error (nothing is uploaded on an error, so readers never see a
        half-written file; S3 puts are atomic per object).
        """
        target = self.uri(*parts)
        if self.is_local:
            path = self.local_path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="loopline-upload-") as scratch:
            path = Path(scratch) / parts[-1].rsplit("/", 1)[-1]
            yield path
            self._guarded(target, lambda: self.fs.put_file(str(path), self._fs_path(target)))

    def put(self, local: Path, *parts: str) -> str:
        """Copy ``local`` to ``parts``; returns its URI (no copy when it already is that file)."""
        target = self.uri(*parts)
        if self.is_local:
            final = self.local_path(target)
            if final.resolve() != Path(local).resolve():
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, final)
            return target
        self._guarded(target, lambda: self.fs.put_file(str(local), self._fs_path(target)))
        return target

    @contextlib.contextmanager
    def reading(self, uri: str | Path) -> Iterator[Path]:
        """A local path holding the file at ``uri`` (a URI of this storage or a plain local path)."""
        uri = str(uri)
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            path = self.local_path(uri)
            check_local_read(path)
            if not path.exists():
                raise StorageError(
                    f"{path} does not exist on this host: the task that wrote it ran elsewhere, or it was "
                    "removed. Where tasks share no disk, set LOOPLINE_STORAGE_URL (s3://...) so tasks hand "
                    "each other object-storage URIs"
                )
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="loopline-download-") as scratch:
            path = Path(scratch) / parsed.path.rsplit("/", 1)[-1]
            self._guarded(uri, lambda: self.fs.get_file(self._fs_path(uri), str(path)))
            yield path

    def read_bytes(self, uri: str) -> bytes:
        with self.reading(uri) as path:
            return path.read_bytes()

    def write_bytes(self, data: bytes, *parts: str) -> str:
        with self.writing(*parts) as path:
            path.write_bytes(data)
        return self.uri(*parts)

    def exists(self, uri: str) -> bool:
        return bool(self._guarded(uri, lambda: self.fs.exists(self._fs_path(uri))))

    def remove(self, uri: str) -> None:
        """Remove the file at ``uri``; a missing file is not an error (removal is idempotent)."""

        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._fs_path(uri))

        self._guarded(uri, rm)

    def files_under(self, *parts: str) -> list[str]:
        """URIs of the files directly under the folder ``parts`` (sorted; empty when it does not exist)."""
        folder = self.uri(*parts)

        def ls() -> list[str]:
            try:
                entries = self.fs.ls(self._fs_path(folder), detail=True)
            except FileNotFoundError:
                return []
            names = sorted(
                str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "file"
            )
            return [f"{folder}/{name}" for name in names]

        return self._guarded(folder, ls)

    def put_dataset(self, local: Path, *parts: str) -> str:
        """Copy a dataset — the parquet ``local`` and its manifest ``<name>.manifest.json`` beside it — to
        ``parts``; returns the parquet's URI. Data first, manifest last: a reader that finds the manifest
        finds its data."""
        uri = self.put(local, *parts)
        *folder, name = parts
        self.put(local.with_name(local.name + ".manifest.json"), *folder, name + ".manifest.json")
        return uri

    def _guarded(self, uri: str, action: Callable[[], _T]) -> _T:
        """Run ``action``; storage failures become a StorageError that says what to check."""
        if self.is_local:
            return action()
        try:
            return action()
        except FileNotFoundError as exc:
            raise StorageError(f"{uri}: not found in object storage ({exc})") from None
        except PermissionError as exc:
            raise StorageError(
                f"{uri}: access denied ({exc}); check the credentials in AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY and the bucket policy"
            ) from None
        except OSError as exc:
            endpoint = self.endpoint_url or "AWS S3"
            raise StorageError(
                f"{uri}: object storage at {endpoint} failed: {exc}; check "
                "LOOPLINE_STORAGE_ENDPOINT_URL and that the bucket exists"
            ) from None


def fetch_bytes(uri: str) -> bytes:
    """The bytes at ``uri``: a local path, ``file://``, or object storage. An ``s3://`` URI is read with
    the storage settings of this process (``LOOPLINE_STORAGE_ENDPOINT_URL``; credentials from ``AWS_*``)."""
    from loopline.config import get_settings

    scheme = urlparse(uri).scheme
    settings = get_settings()
    if scheme in ("", "file"):
        return SharedFiles.of(settings).read_bytes(uri)
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"cannot read {uri}: scheme {scheme!r} is not supported (use s3:// or a local path)"
        )
    endpoint = settings.storage_endpoint_url
    return SharedFiles(f"{scheme}://{urlparse(uri).netloc}", endpoint).read_bytes(uri)


# --- pathlib-like paths that may be on object storage ------------------------------------------------
# ``settings.state.landing`` / ``curated`` / ``quarantine`` / ``archive`` / ``reports`` are ``pathlib.Path``
# on the local disk and ``upath.UPath`` on object storage (``StatePaths.shared``). Most of pathlib works
# on both; these are the operations that differ.


def is_remote(path: Any) -> bool:
    """Whether ``path`` lives on object storage rather than the local disk."""
    return not isinstance(path, Path)


def as_path(settings: Settings, text: str) -> Any:
    """A path recorded as text (in the ledger, an XCom, a report) back as a path of these settings."""
    if "://" not in text:
        return Path(text)
    if text.startswith("file://"):
        return Path(urlparse(text).path)
    shared = settings.state.shared
    from upath import UPath

    return UPath(text, **(shared.storage_options if shared is not None else {}))


def read_parquet(path: Any, columns: list[str] | None = None) -> Any:
    import pandas as pd

    if not is_remote(path):
        return pd.read_parquet(path, columns=columns)
    with path.open("rb") as handle:
        return pd.read_parquet(handle, columns=columns)


def read_parquet_table(path: Any, columns: list[str] | None = None) -> Any:
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.read_table(path, columns=columns)
    with path.open("rb") as handle:
        return pq.read_table(handle, columns=columns)


def write_parquet(frame: Any, path: Any) -> None:
    """Write ``frame`` without its index; on the local disk also synced (a publish intent may name it)."""
    if not is_remote(path):
        frame.to_parquet(path, index=False)
        sync(path)
        return
    with path.open("wb") as handle:  # one PUT when closed: readers see all of it or nothing
        frame.to_parquet(handle, index=False)


def sync(path: Any) -> None:
    """fsync a local file or folder (its entries); object storage is durable once a write returns."""
    if is_remote(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(source: Any, target: Any) -> None:
    """Move ``source`` onto ``target`` in the same store: an atomic rename on the local disk, a copy then
    delete on object storage (callers hide the batch meanwhile: see ``data.ingest.promote``)."""
    if not is_remote(source) and not is_remote(target):
        os.replace(source, target)
        return
    source.rename(target)


def transfer(source: Any, target: Any, *, move: bool) -> Any:
    """Copy (or move) a file to ``target``, across the local disk and object storage alike."""
    if not is_remote(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    if not is_remote(source) and not is_remote(target):
        (shutil.move if move else shutil.copy2)(source, target)
        return target
    if move and is_remote(source) and is_remote(target) and source.protocol == target.protocol:
        source.rename(target)
        return target
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
    if move:
        source.unlink()
    return target


def parquet_dataset(files: list[Any]) -> Any:
    """A pyarrow dataset over parquet ``files`` (local paths, or object-storage paths of one store)."""
    import pyarrow.dataset as ds

    if files and is_remote(files[0]):
        return ds.dataset([f.path for f in files], format="parquet", filesystem=files[0].fs)
    return ds.dataset([str(f) for f in files], format="parquet")


@contextlib.contextmanager
def report_folder(target: Any) -> Iterator[Path]:
    """A local folder to write a report into (tools such as Evidently and MLflow's ``log_artifact`` need
    local files), whose files are at ``target`` when the block ends without an error: on the local disk
    the folder is ``target`` itself; on object storage a private temporary folder, uploaded then."""
    if not is_remote(target):
        target.mkdir(parents=True, exist_ok=True)
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="loopline-report-") as scratch:
        yield Path(scratch)
        for file in sorted(Path(scratch).rglob("*")):
            if file.is_file():
                transfer(file, target.joinpath(*file.relative_to(scratch).parts), move=False)


def check_local_read(path: Path) -> None:
    """Refuse a local ``path`` handed over by another task, where every task try has a state folder of its
    own (``LOOPLINE_TASK_SCRATCH=per-task``, inside an Airflow task): only files under this task's own
    folder may be opened from the local disk. Elsewhere (one shared state dir, the CLI) anything may."""
    from loopline.config import get_settings

    settings = get_settings()
    if settings.task_scratch != "per-task" or not os.environ.get("AIRFLOW_CTX_TASK_ID"):
        return
    own = settings.state.root.resolve()
    if not Path(path).resolve().is_relative_to(own):
        raise StorageError(
            f"{path} is on a local disk outside this task's own folder {own}: another task wrote it, and where "
            "tasks share no disk this task cannot see it. Hand over a URI in shared storage instead "
            "(LOOPLINE_STORAGE_URL; loopline.storage.files.SharedFiles)"
        )

"""Blob storage behind one small protocol, chosen by URL as mlflow does: `file:///abs/path` (the
default, under the data dir) or `s3://bucket/prefix` (store/s3.py). Blobs are content-addressed
and written atomically; large ones (checkpoints, exports) move as files and streams, never whole
in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from modelmill.store.blob_keys import CHUNK_BYTES, key_of_bytes, key_of_file, relative_name
from modelmill.store.s3 import S3BlobStore, S3Options


class BlobStore(Protocol):
    """Bytes by key. Every put returns the key: the SHA-256 of the content. A missing or malformed
    key raises KeyError."""

    def check(self) -> None:
        """Raise BlobStoreUnavailable, saying what to fix, if the store cannot be used."""
        ...

    def put(self, data: bytes) -> str: ...
    def put_file(self, path: Path) -> str:
        """Store a file's content without reading it whole into memory."""
        ...

    def get(self, key: str) -> bytes: ...
    def get_file(self, key: str, target: Path) -> None:
        """Write a blob to `target` (a whole file or none), streaming it."""
        ...

    def stream(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start` up to `end` (exclusive; None = the end) in chunks."""
        ...

    def size(self, key: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def path(self, key: str) -> Path | None:
        """The local file of a blob, for readers that want a path (None if absent or remote)."""
        ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL of the store's own that fetches the blob without credentials until it expires,
        or None when the store has none (the server then streams the blob itself)."""
        ...


class LocalBlobStore:
    """Blobs as files `root/ab/cdef…`; a write goes to a temp file then is renamed into place,
    so readers see a whole blob or none."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()

    def _file(self, key: str) -> Path:
        return self.root / relative_name(key)

    def _write(self, key: str, write: Callable[[Path], object]) -> str:
        target = self._file(key)
        if target.exists():
            return key
        if target.parent not in self._folders:
            target.parent.mkdir(exist_ok=True)
            self._folders.add(target.parent)
        # A name unique to this process and thread; cheaper than mkstemp on the hot upload path.
        tmp = self._tmp / f"{key}.{os.getpid()}.{threading.get_ident()}"
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return key

    def check(self) -> None:
        pass  # the folder was made in __init__; a disk error speaks for itself

    def put(self, data: bytes) -> str:
        def write(tmp: Path) -> None:
            with open(tmp, "xb") as handle:
                handle.write(data)

        return self._write(key_of_bytes(data), write)

    def put_file(self, path: Path) -> str:
        return self._write(key_of_file(path), lambda tmp: shutil.copyfile(path, tmp))

    def get(self, key: str) -> bytes:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def get_file(self, key: str, target: Path) -> None:
        source = self._file(key)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise KeyError(key) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def stream(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            handle = self._file(key).open("rb")
        except FileNotFoundError:
            raise KeyError(key) from None
        return _read_chunks(handle, start, end)

    def size(self, key: str) -> int:
        try:
            return self._file(key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._file(key).exists()

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def path(self, key: str) -> Path | None:
        file = self._file(key)
        return file if file.exists() else None

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None  # a folder has no URL of its own: the server's signed /blobs link serves it


def _read_chunks(handle: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        left = None if end is None else max(end - start, 0)
        while left is None or left > 0:
            chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


def open_blob_store(url: str, s3: S3Options | None = None) -> BlobStore:
    """The blob store a URL names; `s3` says how to reach an S3 endpoint (defaults: AWS's)."""
    if url.startswith("file://"):
        return LocalBlobStore(Path(url.removeprefix("file://")))
    if url.startswith("s3://"):
        return S3BlobStore(url, s3 or S3Options())
    raise ValueError(
        f"unsupported blob store URL {url!r}: use file:///absolute/path or s3://bucket/prefix"
    )


def put_tree(store: BlobStore, folder: Path) -> str:
    """Store every file under `folder`, file by file; returns the key of a JSON manifest naming
    them."""
    files = {
        str(path.relative_to(folder)): store.put_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    return store.put(json.dumps({"files": files}, sort_keys=True).encode())


def get_tree(store: BlobStore, key: str, folder: Path) -> Path:
    """Write the files of a manifest under `folder` (created), file by file; returns `folder`."""
    manifest = json.loads(store.get(key))
    for name, file_key in manifest["files"].items():
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:
            raise ValueError(f"manifest entry escapes its folder: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(file_key, target)
    return folder

"""Blob storage behind one small protocol; the local folder store is content-addressed and atomic.

Chosen by URL, as mlflow does: `file:///abs/path` (the default, under the data dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    """Bytes by key. `put` returns the key: the SHA-256 of the content."""

    def put(self, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def path(self, key: str) -> Path | None: ...


class LocalBlobStore:
    """Blobs as files `root/ab/cdef…`; a write goes to a temp file then is renamed into place,
    so readers see a whole blob or none."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()

    def _file(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise KeyError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key[2:]

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        target = self._file(key)
        if target.exists():
            return key
        if target.parent not in self._folders:
            target.parent.mkdir(exist_ok=True)
            self._folders.add(target.parent)
        # A name unique to this process and thread; cheaper than mkstemp on the hot upload path.
        tmp = self._tmp / f"{key}.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(tmp, "xb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._file(key).exists()

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def path(self, key: str) -> Path | None:
        """The local file of a blob, for readers that want a path (None if absent)."""
        file = self._file(key)
        return file if file.exists() else None


def open_blob_store(url: str) -> BlobStore:
    """The blob store a URL names."""
    if url.startswith("file://"):
        return LocalBlobStore(Path(url.removeprefix("file://")))
    raise ValueError(f"unsupported blob store URL {url!r}: use file:///absolute/path")


def put_tree(store: BlobStore, folder: Path) -> str:
    """Store every file under `folder`; returns the key of a JSON manifest naming them."""
    files = {
        str(path.relative_to(folder)): store.put(path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    return store.put(json.dumps({"files": files}, sort_keys=True).encode())


def get_tree(store: BlobStore, key: str, folder: Path) -> Path:
    """Write the files of a manifest under `folder` (created); returns `folder`."""
    manifest = json.loads(store.get(key))
    for name, file_key in manifest["files"].items():
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:
            raise ValueError(f"manifest entry escapes its folder: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(file_key))
    return folder

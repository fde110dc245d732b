"""What only the local folder store does: where blobs lie on disk and its temporary files. The
cases every store shares are in tests/contract/test_blob_store.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelmill.store.blobs import LocalBlobStore, open_blob_store


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_blob_lies_in_a_folder_named_by_its_first_byte(store: LocalBlobStore) -> None:
    key = store.put(b"hello blobs")

    assert store.path(key) == store.root / key[:2] / key[2:]
    assert files_under(store.root) == [store.root / key[:2] / key[2:]]


def test_writes_leave_no_temporary_files(store: LocalBlobStore, tmp_path: Path) -> None:
    for i in range(10):
        store.put(f"blob {i}".encode() * 1000)
        (tmp_path / "file").write_bytes(f"file {i}".encode())
        store.put_file(tmp_path / "file")
    store.get_file(store.put(b"copied"), tmp_path / "copy")

    assert list((store.root / "tmp").iterdir()) == []
    assert len(files_under(store.root)) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "copy", "file"]


@pytest.mark.parametrize("put", ["put", "put_file"])
def test_a_failed_write_leaves_neither_blob_nor_temporary_file(
    store: LocalBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, put: str
) -> None:
    def fail(*_: object) -> None:
        raise OSError("disk full")

    (tmp_path / "source").write_bytes(b"never lands")
    monkeypatch.setattr(os, "replace", fail)

    with pytest.raises(OSError, match="disk full"):
        if put == "put":
            store.put(b"never lands")
        else:
            store.put_file(tmp_path / "source")

    assert files_under(store.root) == []
    assert not store.exists(hashlib.sha256(b"never lands").hexdigest())


def test_the_folder_store_is_the_file_url(tmp_path: Path) -> None:
    key = LocalBlobStore(tmp_path / "blobs").put(b"shared")

    assert open_blob_store(f"file://{tmp_path / 'blobs'}").path(key) is not None


def test_unsupported_blob_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported blob store URL.*s3://bucket/prefix"):
        open_blob_store("ftp://example.com/blobs")

"""The local blob store: content-addressed keys, atomic writes, and its errors."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from modelmill.store.blobs import LocalBlobStore, get_tree, open_blob_store, put_tree


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_returns_the_sha256_and_get_returns_the_bytes(store: LocalBlobStore) -> None:
    key = store.put(b"hello blobs")

    assert key == hashlib.sha256(b"hello blobs").hexdigest()
    assert store.get(key) == b"hello blobs"
    assert store.exists(key)
    assert store.path(key) == store.root / key[:2] / key[2:]


def test_same_content_is_stored_once(store: LocalBlobStore) -> None:
    first = store.put(b"same")
    second = store.put(b"same")
    other = store.put(b"different")

    assert first == second != other
    assert len(files_under(store.root)) == 2


def test_empty_content_is_a_blob_too(store: LocalBlobStore) -> None:
    key = store.put(b"")

    assert store.get(key) == b""


def test_get_of_a_missing_key_raises_key_error(store: LocalBlobStore) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()

    with pytest.raises(KeyError):
        store.get(missing)
    assert not store.exists(missing)
    assert store.path(missing) is None


@pytest.mark.parametrize("key", ["../../etc/passwd", "ABCDEF", "a" * 63, "g" * 64, ""])
def test_keys_that_are_no_sha256_are_refused(store: LocalBlobStore, key: str) -> None:
    with pytest.raises(KeyError):
        store.get(key)


def test_delete_removes_the_blob_and_tolerates_missing_ones(store: LocalBlobStore) -> None:
    key = store.put(b"short-lived")

    store.delete(key)
    store.delete(key)

    assert not store.exists(key)


def test_writes_leave_no_temporary_files(store: LocalBlobStore) -> None:
    for i in range(20):
        store.put(f"blob {i}".encode() * 1000)

    assert list((store.root / "tmp").iterdir()) == []
    assert len(files_under(store.root)) == 20


def test_a_failed_write_leaves_neither_blob_nor_temporary_file(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)

    with pytest.raises(OSError, match="disk full"):
        store.put(b"never lands")

    assert files_under(store.root) == []
    assert not store.exists(hashlib.sha256(b"never lands").hexdigest())


def test_concurrent_puts_of_the_same_content_agree(store: LocalBlobStore) -> None:
    content = os.urandom(2_000_000)
    keys: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def put() -> None:
        try:
            start.wait()
            keys.append(store.put(content))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(keys)) == 1 and len(keys) == 8
    assert store.get(keys[0]) == content
    assert list((store.root / "tmp").iterdir()) == []


def test_a_second_store_on_the_same_folder_sees_the_blobs(tmp_path: Path) -> None:
    key = LocalBlobStore(tmp_path / "blobs").put(b"shared")

    assert open_blob_store(f"file://{tmp_path / 'blobs'}").get(key) == b"shared"


def test_unsupported_blob_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported blob store URL"):
        open_blob_store("ftp://example.com/blobs")


def test_a_folder_round_trips_through_a_manifest(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "checkpoint"
    (source / "nested").mkdir(parents=True)
    (source / "weights.bin").write_bytes(b"\x00\x01\x02")
    (source / "nested" / "config.json").write_text('{"a": 1}')

    key = put_tree(store, source)
    copy = get_tree(store, key, tmp_path / "copy")

    assert (copy / "weights.bin").read_bytes() == b"\x00\x01\x02"
    assert (copy / "nested" / "config.json").read_text() == '{"a": 1}'
    assert put_tree(store, source) == key  # same files, same manifest


def test_a_manifest_cannot_write_outside_its_folder(store: LocalBlobStore, tmp_path: Path) -> None:
    payload = store.put(b"evil")
    manifest = store.put(json.dumps({"files": {"../escaped.txt": payload}}).encode())

    with pytest.raises(ValueError, match="escapes"):
        get_tree(store, manifest, tmp_path / "target")

    assert not (tmp_path / "escaped.txt").exists()

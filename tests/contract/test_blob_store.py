"""The BlobStore contract, run on every store: the local folder and S3 (moto's server on loopback,
marked `s3`; it runs in the default tier, being fast). Content addressing, atomic puts, trees for
checkpoints, streaming and ranged reads, presigned links, and large files never read whole."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import S3_CREDENTIALS, S3_REGION, MotoServer
from modelmill.store.blobs import BlobStore, get_tree, open_blob_store, put_tree
from modelmill.store.s3 import PART_BYTES, S3Options

MB = 1024 * 1024


@dataclass
class StoreCase:
    """A store under test, its URL and options, and whether it has links of its own."""

    store: BlobStore
    url: str
    options: S3Options
    has_own_links: bool

    def reopen(self) -> BlobStore:
        return open_blob_store(self.url, self.options)


def local_case(tmp_path: Path) -> StoreCase:
    url = f"file://{tmp_path / 'blobs'}"
    return StoreCase(open_blob_store(url), url, S3Options(), has_own_links=False)


def s3_case(server: MotoServer) -> StoreCase:
    url = f"s3://{server.create_bucket()}/some/prefix"
    options = S3Options(
        endpoint_url=server.endpoint,
        region=S3_REGION,
        path_style=True,
        access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    return StoreCase(open_blob_store(url, options), url, options, has_own_links=True)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> StoreCase:
    if request.param == "local":
        return local_case(tmp_path)
    return s3_case(request.getfixturevalue("s3_server"))


@pytest.fixture
def store(case: StoreCase) -> BlobStore:
    return case.store


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        for _ in range(size // MB):
            handle.write(os.urandom(MB))
        handle.write(os.urandom(size % MB))
    return path


# ---- content addressing ------------------------------------------------------------------------


def test_put_returns_the_sha256_and_get_returns_the_bytes(store: BlobStore) -> None:
    store.check()  # a usable store passes its start-up check
    key = store.put(b"hello blobs")

    assert key == hashlib.sha256(b"hello blobs").hexdigest()
    assert store.get(key) == b"hello blobs"
    assert store.exists(key)
    assert store.size(key) == len(b"hello blobs")


def test_same_content_is_stored_once(store: BlobStore, tmp_path: Path) -> None:
    first = store.put(b"same")
    second = store.put(b"same")
    (tmp_path / "same.txt").write_bytes(b"same")
    from_file = store.put_file(tmp_path / "same.txt")
    other = store.put(b"different")

    assert first == second == from_file != other
    store.delete(first)
    assert not store.exists(second)  # one object, so one delete removes it
    assert store.exists(other)


def test_empty_content_is_a_blob_too(store: BlobStore) -> None:
    key = store.put(b"")

    assert store.get(key) == b""
    assert b"".join(store.stream(key)) == b""


def test_a_missing_key_raises_key_error_everywhere(store: BlobStore, tmp_path: Path) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()

    for read in (
        store.get,
        store.size,
        lambda key: store.stream(key),
        lambda key: store.get_file(key, tmp_path / "out"),
    ):
        with pytest.raises(KeyError):
            read(missing)
    assert not store.exists(missing)
    assert store.path(missing) is None
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["../../etc/passwd", "ABCDEF", "a" * 63, "g" * 64, "", "a/" * 32])
def test_keys_that_are_no_sha256_are_refused(store: BlobStore, key: str) -> None:
    for read in (store.get, store.size, store.path, lambda k: store.stream(k)):
        with pytest.raises(KeyError):
            read(key)


def test_delete_removes_the_blob_and_tolerates_missing_ones(store: BlobStore) -> None:
    key = store.put(b"short-lived")

    store.delete(key)
    store.delete(key)

    assert not store.exists(key)


def test_a_second_store_on_the_same_location_sees_the_blobs(case: StoreCase) -> None:
    key = case.store.put(b"shared")

    assert case.reopen().get(key) == b"shared"


# ---- atomic puts -------------------------------------------------------------------------------


def test_concurrent_puts_of_the_same_content_agree(store: BlobStore) -> None:
    content = os.urandom(2 * MB)
    keys: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def put() -> None:
        try:
            start.wait()
            keys.append(store.put(content))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(keys)) == 1 and len(keys) == 4
    assert store.get(keys[0]) == content


def test_readers_see_a_whole_blob_or_none_while_it_is_written(
    store: BlobStore, tmp_path: Path
) -> None:
    source = random_file(tmp_path / "checkpoint.bin", 2 * PART_BYTES + 123)  # a multipart upload
    content = source.read_bytes()
    key = hashlib.sha256(content).hexdigest()
    seen: list[int] = []
    done = threading.Event()

    def read_meanwhile() -> None:
        while not done.is_set():
            try:
                seen.append(len(store.get(key)))
            except KeyError:
                seen.append(0)

    reader = threading.Thread(target=read_meanwhile)
    reader.start()
    try:
        assert store.put_file(source) == key
    finally:
        done.set()
        reader.join()

    assert set(seen) <= {0, len(content)}
    assert store.get(key) == content


# ---- files, streams and ranges -----------------------------------------------------------------


def test_a_file_larger_than_a_part_round_trips(store: BlobStore, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    source = random_file(work / "weights.bin", PART_BYTES + 5 * MB + 7)

    key = store.put_file(source)
    store.get_file(key, work / "copy.bin")

    assert key == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (work / "copy.bin").read_bytes() == source.read_bytes()
    assert store.size(key) == source.stat().st_size
    assert sorted(p.name for p in work.iterdir()) == ["copy.bin", "weights.bin"]  # no part file


def test_a_stream_comes_in_chunks_that_make_the_blob(store: BlobStore) -> None:
    content = os.urandom(3 * MB + 11)
    key = store.put(content)

    chunks = list(store.stream(key))

    assert len(chunks) > 1
    assert b"".join(chunks) == content


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 10), (5, None), (1000, 2000), (4090, 5000), (4096, None), (5000, None), (7, 7)],
)
def test_ranged_reads_return_the_slice(store: BlobStore, start: int, end: int | None) -> None:
    content = os.urandom(4096)
    key = store.put(content)

    assert b"".join(store.stream(key, start, end)) == content[start:end]


def test_large_files_never_pass_whole_through_memory(case: StoreCase, tmp_path: Path) -> None:
    """A put_file and a get_file of a file ten parts large raise the process's peak memory by
    less than half the file (S3 holds a few parts in flight; the folder store copies in chunks)."""
    size = 10 * PART_BYTES
    source = random_file(tmp_path / "export.zip", size)
    script = """
import json, resource, sys
from pathlib import Path
from modelmill.store.blobs import open_blob_store
from modelmill.store.s3 import S3Options
url, options, source, target = sys.argv[1:5]
store = open_blob_store(url, S3Options(**json.loads(options)))
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
key = store.put_file(Path(source))
after_put = peak()
store.get_file(key, Path(target))
print(json.dumps([after_put - before, peak() - after_put]))
"""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            case.url,
            json.dumps(dataclasses.asdict(case.options)),
            str(source),
            str(tmp_path / "copy.zip"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    put_growth, get_growth = json.loads(result.stdout)

    assert (tmp_path / "copy.zip").stat().st_size == size
    assert put_growth < size / 2 and get_growth < size / 2, (put_growth, get_growth)


# ---- trees (checkpoints) -----------------------------------------------------------------------


def test_a_folder_round_trips_through_a_manifest(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "checkpoint"
    (source / "nested").mkdir(parents=True)
    (source / "weights.bin").write_bytes(b"\x00\x01\x02")
    (source / "nested" / "config.json").write_text('{"a": 1}')
    random_file(source / "large.safetensors", PART_BYTES + 1)

    key = put_tree(store, source)
    copy = get_tree(store, key, tmp_path / "copy")

    assert (copy / "weights.bin").read_bytes() == b"\x00\x01\x02"
    assert (copy / "nested" / "config.json").read_text() == '{"a": 1}'
    assert (copy / "large.safetensors").read_bytes() == (source / "large.safetensors").read_bytes()
    assert put_tree(store, source) == key  # same files, same manifest


def test_a_manifest_cannot_write_outside_its_folder(store: BlobStore, tmp_path: Path) -> None:
    payload = store.put(b"evil")
    manifest = store.put(json.dumps({"files": {"../escaped.txt": payload}}).encode())

    with pytest.raises(ValueError, match="escapes"):
        get_tree(store, manifest, tmp_path / "target")

    assert not (tmp_path / "escaped.txt").exists()


# ---- links -------------------------------------------------------------------------------------


def test_presigned_links_fetch_the_blob_without_credentials(case: StoreCase) -> None:
    content = os.urandom(1000)
    key = case.store.put(content)

    link = case.store.presigned_url(key, 60)

    if not case.has_own_links:  # the server's own signed /blobs link serves a folder store
        assert link is None
        return
    assert link is not None and "X-Amz-Expires=60" in link
    reply = requests.get(link, timeout=10)
    assert reply.status_code == 200 and reply.content == content
    ranged = requests.get(link, headers={"Range": "bytes=10-19"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == content[10:20]

"""Job logs beyond one machine: the publisher keeps one current copy in the blob store, a job
resumed in another data dir continues its log, and a reader picks the freshest of the local file
and the published copy.

Run: `.venv/bin/pytest tests/jobs/test_logs.py -q`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelmill.jobs.logs import LogPublisher
from modelmill.services import Env
from modelmill.services.logs import log_path, read_log
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.tables import Job


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[Env, Env]]:
    """Two data dirs ("machines") sharing one database and one blob store."""
    shared = {
        "database_url": f"sqlite:///{tmp_path / 'shared.db'}",
        "blob_url": f"file://{tmp_path / 'shared-blobs'}",
    }
    envs = [Env.open(Settings(data_dir=tmp_path / name, **shared)) for name in ("a", "b")]
    yield envs[0], envs[1]
    for env in envs:
        env.db.dispose()


def running_job(env: Env) -> tuple[int, str]:
    """A claimed job, and its claim's token (what fences every write to it)."""
    with env.db.session() as session:
        pk = queue.enqueue(session, "train", {}).pk
    claimed = queue.claim(env, "somewhere:1:abc")
    assert claimed is not None
    return pk, claimed.lease_owner


def job(env: Env, pk: int) -> Job:
    return queue.get(env, pk)


def append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(text)


def test_publishing_keeps_one_current_copy(machines: tuple[Env, Env]) -> None:
    a, _ = machines
    pk, token = running_job(a)
    path = log_path(a.settings, pk)
    publisher = LogPublisher(a, pk, path, token)
    append(path, "attempt 1 of 3\n")
    publisher.publish()
    first = job(a, pk).log_key

    append(path, "epoch 1\n")
    publisher.publish()
    second = job(a, pk).log_key

    assert first and second and first != second
    assert a.blobs.get(second) == b"attempt 1 of 3\nepoch 1\n"
    assert not a.blobs.exists(first)  # the copy it replaced is gone, not left to pile up


def test_a_job_resumed_on_another_machine_continues_its_log(machines: tuple[Env, Env]) -> None:
    a, b = machines
    pk, token = running_job(a)
    append(log_path(a.settings, pk), "attempt 1 of 3\n")
    LogPublisher(a, pk, log_path(a.settings, pk), token).publish()

    on_b = LogPublisher(b, pk, log_path(b.settings, pk), token)
    on_b.resume()
    append(log_path(b.settings, pk), "attempt 2 of 3\n")
    on_b.stop()

    assert read_log(a, job(a, pk)) == b"attempt 1 of 3\nattempt 2 of 3\n"


def test_the_reader_prefers_the_live_file_only_while_it_is_the_freshest(
    machines: tuple[Env, Env],
) -> None:
    a, b = machines
    pk, token = running_job(a)
    append(log_path(a.settings, pk), "attempt 1 of 3\nline the publish missed\n")
    # Machine B resumed the job from an older copy and has written more since.
    append(log_path(b.settings, pk), "attempt 1 of 3\nattempt 2 of 3\nepoch 1\nepoch 2\n")
    LogPublisher(b, pk, log_path(b.settings, pk), token).publish()

    assert read_log(a, job(a, pk)).endswith(b"epoch 2\n")  # A's file is stale: the copy wins
    assert read_log(b, job(b, pk)).endswith(b"epoch 2\n")
    append(log_path(b.settings, pk), "epoch 3\n")
    assert read_log(b, job(b, pk)).endswith(b"epoch 3\n")  # B runs it: its live file wins


def test_an_ended_job_is_read_from_its_published_copy(machines: tuple[Env, Env]) -> None:
    a, b = machines
    pk, token = running_job(a)
    append(log_path(b.settings, pk), "the whole log\n")
    LogPublisher(b, pk, log_path(b.settings, pk), token).stop()
    assert queue.finish(a, pk, token, queue.DONE)
    append(log_path(a.settings, pk), "a stale file of an earlier attempt, longer than the log\n")

    assert read_log(a, job(a, pk)) == b"the whole log\n"


def test_a_job_without_any_log_has_none(machines: tuple[Env, Env]) -> None:
    a, _ = machines

    pk, _ = running_job(a)
    assert read_log(a, job(a, pk)) is None


def test_a_claim_that_lost_the_job_cannot_replace_its_log(machines: tuple[Env, Env]) -> None:
    a, _ = machines
    pk, token = running_job(a)
    path = log_path(a.settings, pk)
    append(path, "attempt 1 of 3\n")
    LogPublisher(a, pk, path, token).publish()
    kept = job(a, pk).log_key

    append(path, "written after the lease was lost\n")
    LogPublisher(a, pk, path, "somewhere:1:abc/an-older-claim").publish()

    assert job(a, pk).log_key == kept
    assert a.blobs.get(kept) == b"attempt 1 of 3\n"

"""When things go wrong around a job: a worker that cannot write its heartbeat stops the job's
process before the lease lapses; a transient error sends the job back to the queue (within
MODELMILL_JOB_MAX_ATTEMPTS), a permanent one fails it at once with the reason.

Run: `.venv/bin/pytest tests/jobs -q`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy.exc import OperationalError

from jobs import children
from jobs.test_queue import version_with_job
from modelmill.jobs import child, executors, worker
from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.tables import ModelVersion

SHORT_LEASE_S = 2.0
PID_WAIT_S = 60.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, job_lease_s=SHORT_LEASE_S, job_max_attempts=2)


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    opened = Env.open(settings)
    yield opened
    opened.db.dispose()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped; /proc says which.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def database_down(*_: Any, **__: Any) -> bool:
    raise OperationalError("UPDATE jobs ...", {}, Exception("could not connect to server"))


def test_a_worker_that_cannot_write_its_heartbeat_stops_the_child(
    settings: Settings, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job_pk = version_with_job(env)
    job = queue.claim(env, "worker-a")
    assert job is not None and job.lease_owner
    monkeypatch.setattr(executors, "run_job", children.train_forever)
    monkeypatch.setattr(queue, "heartbeat", database_down)
    running = worker.Worker(settings)
    pid_file = settings.data_dir / f"child-{job_pk}.pid"

    try:
        running._run(job, job.lease_owner)  # returns once the child is gone
    finally:
        running.env.db.dispose()

    assert pid_file.exists(), "the child never started"
    assert not alive(int(pid_file.read_text())), "the child trains on without a heartbeat"
    released = queue.get(env, job_pk)
    assert released.state == queue.QUEUED and "exited with code -9" in released.error


def fail_with(error: Exception) -> Any:
    def kind(env: Env, job: Any, token: str, log: Any) -> None:
        raise error

    return lambda: {"train": kind}


def run_child(settings: Settings, env: Env, monkeypatch: pytest.MonkeyPatch, error: Exception):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(child, "kinds", fail_with(error))
    monkeypatch.setattr(child, "watch_parent", lambda: None)  # runs in this process
    job = queue.claim(env, "worker-a")
    assert job is not None and job.lease_owner
    child.run_job(settings.model_dump(), job.pk, job.lease_owner)
    return queue.get(env, job.pk)


def version_status(env: Env, version_pk: int) -> tuple[int, str]:
    with env.db.session() as session:
        version = session.get(ModelVersion, version_pk)
        assert version is not None
        return version.status_code, version.status_description


def test_a_transient_error_sends_the_job_back_until_its_attempts_run_out(
    settings: Settings, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_pk, _ = version_with_job(env, max_attempts=settings.job_max_attempts)
    outage = OperationalError("SELECT ...", {}, Exception("database is locked"))

    first = run_child(settings, env, monkeypatch, outage)

    assert (first.state, first.attempts) == (queue.QUEUED, 1)
    assert "temporary error" in first.error and first.log_key
    assert version_status(env, version_pk)[0] == codes.MODEL_QUEUED_FOR_TRAINING

    last = run_child(settings, env, monkeypatch, outage)

    assert (last.state, last.attempts) == (queue.FAILED, 2)
    code, description = version_status(env, version_pk)
    assert code == codes.MODEL_TRAINING_FAILED
    assert "2 times with temporary errors" in description and "OperationalError" in description


def test_a_wrapped_transient_error_is_still_transient() -> None:
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as disk_full:
            raise RuntimeError("could not save the checkpoint") from disk_full
    except RuntimeError as wrapped:
        assert child.is_transient(wrapped)
    assert not child.is_transient(ValueError("bad data"))
    assert not child.is_transient(AssertionError())


def test_a_permanent_error_fails_the_job_at_once_with_the_reason(
    settings: Settings, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_pk, _ = version_with_job(env, max_attempts=settings.job_max_attempts)

    job = run_child(settings, env, monkeypatch, ValueError("a label column is missing"))

    assert (job.state, job.attempts) == (queue.FAILED, 1)
    code, description = version_status(env, version_pk)
    assert code == codes.MODEL_TRAINING_FAILED
    assert "ValueError: a label column is missing" in description


def test_a_child_that_lost_its_job_writes_nothing(
    settings: Settings, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_pk, job_pk = version_with_job(env, max_attempts=settings.job_max_attempts)
    held: dict[str, Any] = {}

    def checkpoint_after_losing_the_lease(env: Env, job: Any, token: str, log: Any) -> None:
        # The attempt's start was published while the child held the job.
        held["log_key"] = queue.get(env, job.pk).log_key
        with env.db.session() as session:  # another worker takes over meanwhile
            session.get(type(job), job.pk).lease_owner = "worker-b/other-claim"
        queue.set_checkpoint(env, job.pk, "stale", token)

    monkeypatch.setattr(child, "kinds", lambda: {"train": checkpoint_after_losing_the_lease})
    monkeypatch.setattr(child, "watch_parent", lambda: None)
    job = queue.claim(env, "worker-a")
    assert job is not None and job.lease_owner
    child.run_job(settings.model_dump(), job.pk, job.lease_owner)

    after = queue.get(env, job_pk)
    assert (after.state, after.lease_owner) == (queue.RUNNING, "worker-b/other-claim")
    assert held["log_key"] is not None
    assert after.checkpoint_key is None and after.log_key == held["log_key"]  # nothing since
    assert version_status(env, version_pk)[0] == codes.MODEL_QUEUED_FOR_TRAINING

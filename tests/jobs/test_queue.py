"""The job queue on a real database: claims under a lease, a lapsed lease claimed again, the
heartbeat, finish fenced by the lease owner, and a job that keeps dying failing for good.

Run: `.venv/bin/pytest tests/jobs -q`; `-m postgres` with MODELMILL_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import update

from modelmill.jobs.worker import Worker
from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.tables import App, Job, Model, ModelVersion, User, utcnow

LEASE_S = 30.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = (
        request.getfixturevalue("postgres").create_database() if request.param == "postgres" else ""
    )
    return Settings(data_dir=tmp_path, database_url=url, job_lease_s=LEASE_S, job_max_attempts=3)


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    opened = Env.open(settings)
    yield opened
    opened.db.dispose()


def enqueue(env: Env, kind: str = "train", **options: Any) -> int:
    with env.db.session() as session:
        return queue.enqueue(session, kind, {"n": 1}, **options).pk


def expire(env: Env, job_pk: int) -> None:
    """The lease lapses, as when its worker stops heartbeating."""
    with env.db.session() as session:
        session.execute(
            update(Job)
            .where(Job.pk == job_pk)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_claim_takes_the_oldest_queued_job_under_a_lease(env: Env) -> None:
    first, second = enqueue(env), enqueue(env)

    job = queue.claim(env, "worker-a")
    assert job is not None and job.pk == first
    assert (job.state, job.attempts) == (queue.RUNNING, 1)
    assert (job.lease_owner or "").startswith("worker-a/")
    assert job.started_at is not None
    lease = job.lease_expires_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)
    assert timedelta(seconds=LEASE_S - 5) < lease <= timedelta(seconds=LEASE_S)

    other = queue.claim(env, "worker-b")
    assert other is not None and other.pk == second
    assert queue.claim(env, "worker-c") is None


def test_background_embedding_waits_behind_trainings(env: Env) -> None:
    embed = enqueue(env, "embed")
    train = enqueue(env, "train")
    assert queue.claim(env, "w").pk == train  # type: ignore[union-attr]
    assert queue.claim(env, "w").pk == embed  # type: ignore[union-attr]


def test_a_held_lease_is_not_claimed_and_the_heartbeat_extends_it(env: Env) -> None:
    job_pk = enqueue(env)
    claimed = queue.claim(env, "worker-a")
    assert claimed is not None and claimed.lease_owner
    token = claimed.lease_owner
    assert queue.claim(env, "worker-b") is None

    with env.db.session() as session:  # pretend the lease is nearly over
        session.execute(
            update(Job)
            .where(Job.pk == job_pk)
            .values(lease_expires_at=utcnow() + timedelta(seconds=1))
        )
    assert queue.heartbeat(env, job_pk, token)
    extended = queue.get(env, job_pk).lease_expires_at
    assert extended.replace(tzinfo=None) > (utcnow() + timedelta(seconds=LEASE_S - 5)).replace(
        tzinfo=None
    )
    assert queue.claim(env, "worker-b") is None
    assert not queue.heartbeat(env, job_pk, "worker-b"), "only the owner extends a lease"
    assert not queue.heartbeat(env, job_pk, "worker-a"), "only with the claim's token"


def test_a_lapsed_lease_is_claimed_again_and_fences_out_the_old_owner(env: Env) -> None:
    job_pk = enqueue(env)
    first = queue.claim(env, "worker-a")
    assert first is not None and first.lease_owner
    expire(env, job_pk)

    taken = queue.claim(env, "worker-b")
    assert taken is not None and taken.pk == job_pk and taken.lease_owner
    assert (taken.state, taken.attempts) == (queue.RUNNING, 2)

    # The first worker was only slow, not dead: it learns it lost the job and cannot end it.
    stale = first.lease_owner
    assert not queue.heartbeat(env, job_pk, stale)
    assert not queue.finish(env, job_pk, stale, queue.DONE)
    queue.release(env, job_pk, stale, "crashed")
    with pytest.raises(queue.LeaseLost):
        queue.set_checkpoint(env, job_pk, "stale-checkpoint", stale)
    assert not queue.set_log(env, job_pk, "stale-log", stale)
    job = queue.get(env, job_pk)
    assert (job.state, job.checkpoint_key, job.log_key) == (queue.RUNNING, None, None)

    assert queue.heartbeat(env, job_pk, taken.lease_owner)
    assert queue.finish(env, job_pk, taken.lease_owner, queue.DONE)
    done = queue.get(env, job_pk)
    assert (done.state, done.lease_expires_at) == (queue.DONE, None)
    assert done.finished_at is not None


def test_each_claim_has_its_own_token_even_by_the_same_worker(env: Env) -> None:
    """A worker that lost a job's lease and then claimed the same job again must not be able
    to write with its first claim: owner names alone would match."""
    job_pk = enqueue(env)
    first = queue.claim(env, "worker-a")
    assert first is not None and first.lease_owner
    expire(env, job_pk)
    second = queue.claim(env, "worker-a")
    assert second is not None and second.lease_owner and second.pk == job_pk

    assert first.lease_owner != second.lease_owner
    assert not queue.heartbeat(env, job_pk, first.lease_owner)
    with pytest.raises(queue.LeaseLost):
        queue.set_checkpoint(env, job_pk, "from-the-first-claim", first.lease_owner)
    assert not queue.finish(env, job_pk, first.lease_owner, queue.DONE)
    queue.set_checkpoint(env, job_pk, "from-the-second-claim", second.lease_owner)
    assert queue.get(env, job_pk).checkpoint_key == "from-the-second-claim"


def test_a_long_worker_name_still_fits_its_claim_token(env: Env) -> None:
    enqueue(env)
    owner = "a-very-long-kubernetes-pod-host-name-0123456789abcdef:4242:0a1b2c3d"
    claimed = queue.claim(env, owner)
    assert claimed is not None and claimed.lease_owner
    assert len(claimed.lease_owner) <= queue.LEASE_OWNER_CHARS
    assert queue.heartbeat(env, claimed.pk, claimed.lease_owner)


def test_a_finished_job_stays_finished(env: Env) -> None:
    job_pk = enqueue(env)
    claimed = queue.claim(env, "worker-a")
    assert claimed is not None and claimed.lease_owner
    assert queue.finish(env, job_pk, claimed.lease_owner, queue.FAILED, "bad data")

    assert not queue.finish(env, job_pk, claimed.lease_owner, queue.DONE), "finish is once"
    assert not queue.heartbeat(env, job_pk, claimed.lease_owner)
    assert queue.claim(env, "worker-b") is None
    job = queue.get(env, job_pk)
    assert (job.state, job.error) == (queue.FAILED, "bad data")


def test_release_puts_a_crashed_job_back_with_the_reason(env: Env) -> None:
    job_pk = enqueue(env)
    claimed = queue.claim(env, "worker-a")
    assert claimed is not None and claimed.lease_owner
    queue.release(env, job_pk, claimed.lease_owner, "the training process exited with code -9")

    released = queue.get(env, job_pk)
    assert (released.state, released.lease_owner, released.lease_expires_at) == (
        queue.QUEUED,
        None,
        None,
    )
    assert released.error == "the training process exited with code -9"
    again = queue.claim(env, "worker-b")
    assert again is not None and again.pk == job_pk and again.attempts == 2


def test_cancel_flag_and_checkpoint_are_stored(env: Env) -> None:
    job_pk = enqueue(env)
    assert not queue.is_cancel_requested(env, job_pk)
    with env.db.session() as session:
        session.execute(update(Job).where(Job.pk == job_pk).values(cancel_requested=True))
    assert queue.is_cancel_requested(env, job_pk)
    claimed = queue.claim(env, "worker-a")
    assert claimed is not None and claimed.lease_owner
    queue.set_checkpoint(env, job_pk, "blob-key", claimed.lease_owner)
    assert queue.get(env, job_pk).checkpoint_key == "blob-key"
    assert queue.find(env, job_pk + 1000) is None


def test_concurrent_workers_take_each_job_exactly_once(settings: Settings, env: Env) -> None:
    jobs = [enqueue(env) for _ in range(40)]
    taken: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        own = Env.open(settings, migrate=False)  # its own engine, as another process has
        try:
            while (job := queue.claim(own, owner)) is not None:
                assert queue.finish(own, job.pk, job.lease_owner or "", queue.DONE)
                with lock:
                    taken.append(job.pk)
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)
        finally:
            own.db.dispose()

    threads = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert sorted(taken) == jobs, Counter(taken).most_common(3)


def version_with_job(env: Env, **job: Any) -> tuple[int, int]:
    """A queued model version (of a real user, app and model) with a training job."""
    with env.db.session() as session:
        user = User(id="u")
        session.add(user)
        session.flush()
        app = App(user_pk=user.pk, id="a")
        session.add(app)
        session.flush()
        model = Model(app_pk=app.pk, id="m", model_type_id="embedding-classifier")
        session.add(model)
        session.flush()
        version = ModelVersion(
            model_pk=model.pk, id="v", status_code=codes.MODEL_QUEUED_FOR_TRAINING
        )
        session.add(version)
        session.flush()
        row = queue.enqueue(session, "train", {}, model_version_pk=version.pk, max_attempts=2)
        for key, value in job.items():
            setattr(row, key, value)
        return version.pk, row.pk


def run_worker_once(settings: Settings) -> None:
    worker = Worker(settings)
    try:
        worker.run(once=True)
    finally:
        worker.close()


def test_a_job_that_keeps_dying_fails_for_good_with_the_reason(
    settings: Settings, env: Env
) -> None:
    # Two attempts so far, each ended by a crash of its training process.
    version_pk, job_pk = version_with_job(
        env, attempts=2, error="the training process exited with code -9"
    )
    run_worker_once(settings)

    job = queue.get(env, job_pk)
    assert job.state == queue.FAILED
    with env.db.session() as session:
        version = session.get(ModelVersion, version_pk)
    assert version is not None
    assert version.status_code == codes.MODEL_TRAINING_FAILED
    assert "2 times" in version.status_description
    assert "exited with code -9" in version.status_description
    assert version.completed_at is not None


def test_a_job_whose_worker_vanished_fails_for_good_after_max_attempts(
    settings: Settings, env: Env
) -> None:
    version_pk, job_pk = version_with_job(env)
    for owner in ("worker-a", "worker-b"):  # each claims it, then dies without a word
        assert queue.claim(env, owner) is not None
        expire(env, job_pk)
    run_worker_once(settings)

    with env.db.session() as session:
        version = session.get(ModelVersion, version_pk)
    assert version is not None and version.status_code == codes.MODEL_TRAINING_FAILED
    assert "2 times" in version.status_description and "went silent" in version.status_description
    assert queue.get(env, job_pk).state == queue.FAILED

"""The job queue: rows in the `jobs` table claimed under a lease that a heartbeat keeps alive.

Claims are optimistic (a conditional UPDATE that must touch exactly one row), so they are safe
across processes and machines on SQLite and PostgreSQL alike. Every claim gets a new token,
kept in `lease_owner` ("worker/claim"); every later write to the job (heartbeat, checkpoint, log,
finish, release) names that token and is refused once the job was claimed again, even by the
same worker: a process that lost its lease cannot overwrite its successor's work.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from modelmill.store.env import Env
from modelmill.store.tables import Job, utcnow

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
CLAIM_ID_CHARS = 12
LEASE_OWNER_CHARS = 64  # the jobs.lease_owner column


class LeaseLost(Exception):
    """This claim no longer holds the job: its lease lapsed and another claim took it, or it
    ended. The process working under the claim must stop without writing anything more."""


def _claim_token(owner: str) -> str:
    """'worker/claim-id', cut to fit the column: the claim id is what makes it unique."""
    room = LEASE_OWNER_CHARS - 1 - CLAIM_ID_CHARS
    return f"{owner[:room]}/{uuid.uuid4().hex[:CLAIM_ID_CHARS]}"


def _held(job_pk: int, token: str):  # type: ignore[no-untyped-def]
    return (Job.pk == job_pk) & (Job.lease_owner == token) & (Job.state == RUNNING)


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    model_version_pk: int | None = None,
    max_attempts: int = 3,
) -> Job:
    job = Job(
        kind=kind, payload=payload, model_version_pk=model_version_pk, max_attempts=max_attempts
    )
    session.add(job)
    session.flush()
    return job


def _claimable():  # type: ignore[no-untyped-def]
    now = utcnow()
    return or_(Job.state == QUEUED, (Job.state == RUNNING) & (Job.lease_expires_at < now))


def claim(env: Env, owner: str) -> Job | None:
    """Take the oldest queued job, or one whose worker went silent; None when there is none.
    The job's `lease_owner` is this claim's token: pass it to every later call."""
    lease = timedelta(seconds=env.settings.job_lease_s)
    for _ in range(5):
        with env.db.session() as session:
            # Background embedding yields to trainings: a training embeds what it needs itself.
            background_last = case((Job.kind == "embed", 1), else_=0)
            # SKIP LOCKED (PostgreSQL; SQLite, which locks the whole file, ignores it): workers
            # each take a different row instead of queueing on the same one and losing the race.
            job = session.scalar(
                select(Job)
                .where(_claimable())
                .order_by(background_last, Job.pk)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if job is None:
                return None
            now = utcnow()
            claimed = session.execute(
                update(Job)
                .where(Job.pk == job.pk, Job.attempts == job.attempts, _claimable())
                .values(
                    state=RUNNING,
                    lease_owner=_claim_token(owner),
                    lease_expires_at=now + lease,
                    attempts=job.attempts + 1,
                    started_at=job.started_at or now,
                )
                # Not evaluated in Python against the loaded row: SQLite hands back naive
                # datetimes, which cannot be compared with the aware `now` (the refresh below
                # reads the row anew anyway).
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed == 1:
                session.expire(job)
                session.refresh(job)
                return job
    return None


def heartbeat(env: Env, job_pk: int, token: str) -> bool:
    """Extend the lease; False if this claim lost the job (to another claim, or it ended)."""
    with env.db.session() as session:
        extended = session.execute(
            update(Job)
            .where(_held(job_pk, token))
            .values(lease_expires_at=utcnow() + timedelta(seconds=env.settings.job_lease_s))
        ).rowcount
    return extended == 1


def finish(env: Env, job_pk: int, token: str, state: str, error: str = "") -> bool:
    """End a job this claim holds; False if the lease was lost meanwhile."""
    with env.db.session() as session:
        done = session.execute(
            update(Job)
            .where(_held(job_pk, token))
            .values(state=state, error=error, finished_at=utcnow(), lease_expires_at=None)
        ).rowcount
    return done == 1


def release(env: Env, job_pk: int, token: str, error: str) -> None:
    """Give a job back to the queue after a crash, to be tried again."""
    with env.db.session() as session:
        session.execute(
            update(Job)
            .where(_held(job_pk, token))
            .values(state=QUEUED, error=error, lease_owner=None, lease_expires_at=None)
        )


def find(env: Env, job_pk: int) -> Job | None:
    """The job, or None when it is gone (deleting a model version deletes its jobs)."""
    with env.db.session() as session:
        return session.get(Job, job_pk)


def get(env: Env, job_pk: int) -> Job:
    job = find(env, job_pk)
    assert job is not None
    return job


def is_cancel_requested(env: Env, job_pk: int) -> bool:
    with env.db.session() as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.pk == job_pk)))


def set_checkpoint(env: Env, job_pk: int, key: str, token: str) -> None:
    """Record the job's latest checkpoint; LeaseLost if this claim no longer holds the job."""
    with env.db.session() as session:
        stored = session.execute(
            update(Job).where(_held(job_pk, token)).values(checkpoint_key=key)
        ).rowcount
    if stored != 1:
        raise LeaseLost(f"job {job_pk} is no longer held by {token}")


def set_log(env: Env, job_pk: int, key: str, token: str) -> bool:
    """Keep the job's log blob; False when this claim no longer holds the job."""
    with env.db.session() as session:
        stored = session.execute(update(Job).where(_held(job_pk, token)).values(log_key=key))
    return stored.rowcount == 1

"""The child process of one job: sets up its log, runs the job's kind, records how it ended.

An error is permanent (a bug, bad data: the job fails at once, with the reason) unless it is
transient (the database or the disk was briefly unavailable): then the job goes back to the
queue and is tried again, up to MODELMILL_JOB_MAX_ATTEMPTS attempts in all.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import exc as sql_errors

from modelmill.domain import model_versions as lifecycle
from modelmill.jobs.logs import LogPublisher
from modelmill.services import Env
from modelmill.services.logs import log_path
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.tables import Evaluation, Export, Job, ModelVersion, utcnow

PARENT_CHECK_S = 1.0
# Errors that say "not now" rather than "never": a lost or locked database connection, a network
# hiccup, a full or busy disk. Anything else would fail the same way again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sql_errors.OperationalError,
    sql_errors.InterfaceError,
    sql_errors.TimeoutError,  # no pooled connection came free
    ConnectionError,
    TimeoutError,
)
TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EAGAIN, errno.EBUSY, errno.EIO, errno.EDQUOT}


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed; looks through the chain of causes, as libraries
    often wrap a database or disk error in their own."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TRANSIENT_ERRORS):
            return True
        if isinstance(current, sql_errors.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError) and current.errno in TRANSIENT_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def _die_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(PARENT_CHECK_S)


def watch_parent() -> None:
    """Exit when the parent process dies. A process killed with SIGKILL cannot stop its
    children: a job's child stops itself so the job's next owner does not race an orphan, and
    a worker started by `serve` stops with it."""
    threading.Thread(target=_die_with_parent, args=(os.getppid(),), daemon=True).start()


def kinds() -> dict[str, Callable[[Env, Job, str, logging.Logger], None]]:
    from modelmill.jobs.embed import run_embedding
    from modelmill.jobs.evaluate import run_evaluation
    from modelmill.jobs.export import run_export
    from modelmill.jobs.train import run_training

    return {
        "train": run_training,
        "evaluate": run_evaluation,
        "embed": run_embedding,
        "export": run_export,
    }


def run_job(settings_values: dict[str, Any], job_pk: int, owner: str) -> None:
    """Entry point of the child process."""
    watch_parent()
    settings = Settings(**settings_values)
    env = Env.open(settings, migrate=False)
    path = log_path(settings, job_pk)
    publisher = LogPublisher(env, job_pk, path, owner)
    publisher.resume()  # before the handler appends: an earlier attempt may have run elsewhere
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger(f"modelmill.job.{job_pk}")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    job = queue.get(env, job_pk)
    import torch  # every kind of job computes with it

    torch.set_num_threads(settings.resolved_job_threads)
    log.info(
        "job %s (%s), attempt %s of %s, on %s, %s CPU threads",
        job_pk,
        job.kind,
        job.attempts,
        job.max_attempts,
        owner,
        torch.get_num_threads(),
    )
    # Published at once, then every few seconds: a worker killed in the first seconds still
    # leaves the attempt's start in the blob store for the next owner's log to continue.
    handler.flush()
    publisher.publish()
    publisher.start()
    state, error_text = queue.DONE, ""
    try:
        kinds()[job.kind](env, job, owner, log)
    except queue.LeaseLost:
        # Another claim holds the job now: it records the outcome; this process writes nothing.
        log.warning("this attempt lost the job to another worker; stopping")
        publisher.stop(publish=False)
        return
    except Exception as error:
        log.exception("job failed")
        if is_transient(error) and job.attempts < job.max_attempts:
            log.warning(
                "a temporary error (%s); the job goes back to the queue for attempt %s of %s",
                type(error).__name__,
                job.attempts + 1,
                job.max_attempts,
            )
            handler.flush()
            publisher.stop()
            queue.release(env, job_pk, owner, f"temporary error: {type(error).__name__}")
            return
        if is_transient(error):
            reason = (
                f"The job failed {job.attempts} times with temporary errors (last: "
                f"{type(error).__name__}); it will not be retried. The train log has the details."
            )
        else:  # a bug or bad data: retrying would fail the same way
            reason = f"{type(error).__name__}: {error}. The train log has the details."
        fail_for_good(env, job, reason)
        state, error_text = queue.FAILED, str(error)
    # Keep the log before ending the job: once the job ends, the worker stops watching us.
    handler.flush()
    publisher.stop()
    queue.finish(env, job_pk, owner, state, error_text)


def fail_for_good(
    env: Env, job: Job, description: str, code: int = codes.MODEL_TRAINING_FAILED
) -> None:
    """Record on the job's target (version, evaluation or export) that it failed, and why."""
    with env.db.session() as session:
        if job.kind == "train" and job.model_version_pk:
            version = session.get(ModelVersion, job.model_version_pk)
            if version is not None and version.status_code not in lifecycle.TERMINAL:
                version.status_code = lifecycle.check_transition(version.status_code, code)
                version.status_description = description
                version.completed_at = utcnow()
        elif job.kind == "evaluate":
            evaluation = session.get(Evaluation, job.payload["evaluation_pk"])
            if evaluation is not None:
                evaluation.status_code = codes.MODEL_EVALUATION_FAILED
                evaluation.status_description = description
        elif job.kind == "export":
            export = session.get(Export, job.payload["export_pk"])
            if export is not None:
                export.status_code = codes.MODEL_EXPORTING_FAILED
                export.status_description = description

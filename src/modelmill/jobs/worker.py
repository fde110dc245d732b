"""A worker: claims jobs and runs each through its executor (a child process, or a Ray task),
heartbeating its lease meanwhile.

The job's own process contains crashes; a worker killed mid-job stops heartbeating, its lease
lapses and another worker claims the job and resumes it from the last checkpoint. A worker that
cannot write its heartbeat (a database outage) kills the job's process before the lease can
lapse, so a job never runs twice at once.
Run alone with `python -m modelmill.jobs.worker --data-dir DIR` or `modelmill worker`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid

from modelmill.jobs.child import fail_for_good
from modelmill.jobs.executors import open_executor
from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.tables import Job

log = logging.getLogger("modelmill.worker")
POLL_S = 0.5
CANCEL_GRACE_S = 30.0
EXIT_GRACE_S = 30.0  # how long a run that recorded its job's end may take to exit
ERROR_WAIT_S = 5.0


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = Env.open(settings)
        self.executor = open_executor(settings, self.env)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()

    def run(self, once: bool = False) -> None:
        """Work until stopped (or, with `once`, until the queue is empty)."""
        log.info("worker %s started", self.owner)
        while not self.stopping.is_set():
            try:
                worked = self._work_once()
            except Exception:  # a database outage or a bug: the worker lives on, jobs are leased
                log.exception(
                    "worker %s: error between jobs; retrying in %s s", self.owner, ERROR_WAIT_S
                )
                self.stopping.wait(ERROR_WAIT_S)
                continue
            if not worked:
                if once:
                    return
                self.stopping.wait(POLL_S)

    def _work_once(self) -> bool:
        """Claim one job and see it to its end; False when the queue is empty."""
        job = queue.claim(self.env, self.owner)
        if job is None:
            return False
        if job.attempts > job.max_attempts:
            fail_for_good(
                self.env,
                job,
                f"The job stopped unexpectedly {job.max_attempts} times "
                f"(last: {job.error or 'its worker went silent'}); it will not be retried.",
            )
            queue.finish(self.env, job.pk, job.lease_owner or "", queue.FAILED, job.error)
            return True
        self._run(job, job.lease_owner or "")
        return True

    def _run(self, job: Job, token: str) -> None:
        """Run the job claimed under `token` and heartbeat while it runs."""
        job_pk = job.pk
        run = self.executor.start(job, token)
        heartbeat_every = max(self.settings.job_lease_s / 4, 0.2)
        # Past this long without a written heartbeat the lease may lapse before the next one:
        # the run must be gone by then, or the job's next claim would run beside it.
        silent_limit = self.settings.job_lease_s - heartbeat_every
        last_heartbeat = time.monotonic()
        cancel_seen_at: float | None = None
        ended_at: float | None = None
        try:
            while not run.wait(heartbeat_every):
                try:
                    held = queue.heartbeat(self.env, job_pk, token)
                except Exception:
                    silent_s = time.monotonic() - last_heartbeat
                    if silent_s < silent_limit:
                        log.warning("job %s: heartbeat not written; trying again", job_pk)
                        continue
                    log.exception(
                        "job %s: no heartbeat written for %.0f s; stopping its process before "
                        "its lease lapses",
                        job_pk,
                        silent_s,
                    )
                    run.kill()
                    break
                last_heartbeat = time.monotonic()
                if not held:
                    current = queue.find(self.env, job_pk)
                    if current is not None and current.state != queue.RUNNING:
                        # The run recorded the end and is exiting: let it finish, within
                        # EXIT_GRACE_S (a training on several workers also stops the others).
                        ended_at = ended_at or time.monotonic()
                        if time.monotonic() - ended_at > EXIT_GRACE_S:
                            run.kill()
                            break
                        continue
                    log.warning("lost the lease of job %s; stopping its process", job_pk)
                    run.kill()
                    break
                if cancel_seen_at is None and queue.is_cancel_requested(self.env, job_pk):
                    cancel_seen_at = time.monotonic()
                if cancel_seen_at is not None and (
                    time.monotonic() - cancel_seen_at > CANCEL_GRACE_S
                ):
                    run.kill()  # the template did not stop at its next step; stop it here
        finally:
            if not run.wait(0):  # an error above must not leave it training unwatched
                run.kill()
        ended = queue.find(self.env, job_pk)
        if ended is None:  # its model version was deleted while it ran
            log.info("job %s was deleted while it ran", job_pk)
            return
        if ended.state == queue.RUNNING and ended.lease_owner == token:
            reason = run.describe_end()
            if ended.cancel_requested:
                fail_for_good(self.env, ended, "Training was cancelled by the user.")
                queue.finish(self.env, job_pk, token, queue.CANCELLED)
            else:
                log.error("job %s: %s; it goes back to the queue", job_pk, reason)
                queue.release(self.env, job_pk, token, reason)

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.executor.close()
        self.env.db.dispose()


def main(settings: Settings | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = Worker(settings or Settings())
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    try:
        worker.run()
    finally:
        worker.close()


if __name__ == "__main__":
    import sys
    from pathlib import Path

    args = sys.argv[1:]
    data_dir = Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else None
    main(Settings(data_dir=data_dir) if data_dir else None)

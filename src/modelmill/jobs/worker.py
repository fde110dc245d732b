"""A worker: claims jobs and runs each in a child process, heartbeating its lease meanwhile.

The child process contains crashes; a worker killed mid-job stops heartbeating, its lease lapses
and another worker claims the job and resumes it from the last checkpoint. A worker that cannot
write its heartbeat (a database outage) kills the child before the lease can lapse, so a job never
runs twice at once.
Run alone with `python -m modelmill.jobs.worker --data-dir DIR` or `modelmill worker`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid

from modelmill.jobs.child import fail_for_good, run_job
from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store import queue

log = logging.getLogger("modelmill.worker")
POLL_S = 0.5
CANCEL_GRACE_S = 30.0
ERROR_WAIT_S = 5.0


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = Env.open(settings)
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
        self._run_in_child(job.pk, job.lease_owner or "")
        return True

    def _run_in_child(self, job_pk: int, token: str) -> None:
        """Run the job claimed under `token` in a child process and heartbeat while it lives."""
        context = multiprocessing.get_context("spawn")
        child = context.Process(
            target=run_job, args=(self.settings.model_dump(), job_pk, token), daemon=True
        )
        child.start()
        heartbeat_every = max(self.settings.job_lease_s / 4, 0.2)
        # Past this long without a written heartbeat the lease may lapse before the next one:
        # the child must be gone by then, or the job's next claim would run beside it.
        silent_limit = self.settings.job_lease_s - heartbeat_every
        last_heartbeat = time.monotonic()
        cancel_seen_at = None
        try:
            while child.is_alive():
                child.join(heartbeat_every)
                if not child.is_alive():
                    break
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
                    child.kill()
                    break
                last_heartbeat = time.monotonic()
                if not held:
                    job = queue.find(self.env, job_pk)
                    if job is not None and job.state != queue.RUNNING:
                        continue  # the child recorded the end and is exiting: let it finish
                    log.warning("lost the lease of job %s; stopping its process", job_pk)
                    child.kill()
                    break
                if cancel_seen_at is None and queue.is_cancel_requested(self.env, job_pk):
                    cancel_seen_at = time.monotonic()
                if cancel_seen_at is not None and (
                    time.monotonic() - cancel_seen_at > CANCEL_GRACE_S
                ):
                    child.kill()  # the template did not stop at its next step; stop it here
        finally:
            if child.is_alive():  # an error above must not leave it training unwatched
                child.kill()
            child.join()
        job = queue.find(self.env, job_pk)
        if job is None:  # its model version was deleted while it ran
            log.info("job %s was deleted while it ran", job_pk)
            return
        if job.state == queue.RUNNING and job.lease_owner == token:
            reason = f"the training process exited with code {child.exitcode}"
            if job.cancel_requested:
                fail_for_good(self.env, job, "Training was cancelled by the user.")
                queue.finish(self.env, job_pk, token, queue.CANCELLED)
            else:
                log.error("job %s: %s; it goes back to the queue", job_pk, reason)
                queue.release(self.env, job_pk, token, reason)

    def stop(self, *_: object) -> None:
        self.stopping.set()


def main(settings: Settings | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = Worker(settings or Settings())
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()


if __name__ == "__main__":
    import sys
    from pathlib import Path

    args = sys.argv[1:]
    data_dir = Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else None
    main(Settings(data_dir=data_dir) if data_dir else None)

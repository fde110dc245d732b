"""A job's log beyond its machine. The job's process appends to a file in its own data dir and
publishes it to the blob store every few seconds and at its end, so a server on another machine
serves it; a job resumed on another machine continues the log its first attempts wrote."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from modelmill.services import Env
from modelmill.store import queue

# How stale a log read on another machine may be; each publish is one small blob write.
PUBLISH_EVERY_S = 3.0

log = logging.getLogger("modelmill.jobs.logs")


class LogPublisher:
    """Keeps Job.log_key pointing at the latest copy of the job's log file, while this claim
    (`token`) holds the job: a claim that lost the job cannot overwrite its successor's log. The
    copy it replaces is deleted (a log's content is its job's alone: no other row shares it)."""

    def __init__(self, env: Env, job_pk: int, path: Path, token: str) -> None:
        self.env, self.job_pk, self.path, self.token = env, job_pk, path, token
        self._published_size = -1
        self._key: str | None = None  # the copy Job.log_key names
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-publisher", daemon=True)

    def resume(self) -> None:
        """Start the local file from the published log when an earlier attempt of this job ran
        on another machine (or in another data dir)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self._key = queue.get(self.env, self.job_pk).log_key
        if self.path.exists():
            return
        if key:
            # KeyError: replaced by a newer copy meanwhile, so another attempt has it in hand
            with contextlib.suppress(KeyError):
                self.env.blobs.get_file(key, self.path)

    def start(self) -> None:
        self._thread.start()

    def stop(self, publish: bool = True) -> None:
        """Stop the periodic publishing and publish the final log (unless the job was lost)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if publish:
            self.publish()

    def _loop(self) -> None:
        while not self._stop.wait(PUBLISH_EVERY_S):
            try:
                self.publish()
            except Exception:  # a blob store or database hiccup: the next round tries again
                log.warning("job %s: could not publish its log", self.job_pk, exc_info=True)

    def publish(self) -> None:
        if not self.path.exists():
            return
        size = self.path.stat().st_size
        if size == self._published_size:
            return
        key = self.env.blobs.put_file(self.path)
        if not queue.set_log(self.env, self.job_pk, key, self.token):
            # Another claim holds the job, or its version (and so the job) was deleted.
            if key != self._key:
                self.env.blobs.delete(key)
            return
        if self._key and self._key != key:
            self.env.blobs.delete(self._key)
        self._key, self._published_size = key, size

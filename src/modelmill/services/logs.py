"""Reading a job's log wherever its worker runs: the file in this data dir while the job runs
here, else the copy the job publishes to the blob store (jobs/logs.py writes both)."""

from __future__ import annotations

from pathlib import Path

from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.tables import Job


def log_path(settings: Settings, job_pk: int) -> Path:
    return settings.data_dir / "logs" / f"job-{job_pk}.log"


def read_log(env: Env, job: Job) -> bytes | None:
    """The freshest log of a job, or None if there is none yet. While it runs, the local file when
    this data dir holds one at least as long as the published copy (a file left by an attempt
    that moved to another machine stops growing and is soon overtaken); else, and once the job
    has ended, the published copy."""
    live = log_path(env.settings, job.pk)
    live_size = live.stat().st_size if live.exists() else -1
    key = job.log_key
    for _ in range(2):  # a publish may replace the copy between reading the row and the blob
        if not key:
            break
        try:
            if job.state == queue.RUNNING and live_size >= env.blobs.size(key):
                return live.read_bytes()
            return env.blobs.get(key)
        except KeyError:
            key = queue.get(env, job.pk).log_key
    return live.read_bytes() if live_size >= 0 else None

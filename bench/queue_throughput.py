"""Queue throughput: jobs claimed (and finished) per second by 1, 2 and 4 worker processes on
SQLite and PostgreSQL, through the queue's own claim/finish (jobs/queue.py), with jobs that do
no work: the ceiling the database puts on how fast workers can take jobs.

Run: .venv/bin/python bench/queue_throughput.py [--jobs 400] [--postgres-url URL]
(URL: `scripts/postgres.sh start` prints one; without it only SQLite is measured.)

On PostgreSQL each count is also run, right after, with the claim's `FOR UPDATE SKIP LOCKED`
turned off in the worker processes (the claim as it was before), to compare the two side by side.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.engine import make_url

from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.tables import Job

WORKER_COUNTS = (1, 2, 4)


def work(settings_values: dict[str, Any], start_at: float, results: Any, skip_locked: bool) -> None:
    """One worker process: claim and finish until the queue is empty."""
    if not skip_locked:  # the earlier claim: a plain SELECT, every worker after the same row
        Select.with_for_update = lambda self, **_: self  # type: ignore[method-assign]
    env = Env.open(Settings(**settings_values), migrate=False)
    owner = f"bench:{os.getpid()}:{secrets.token_hex(4)}"
    claimed = misses = 0
    time.sleep(max(start_at - time.time(), 0))  # every process starts at once
    while True:
        job = queue.claim(env, owner)
        if job is None:
            with env.db.session() as session:
                left = session.scalar(
                    select(func.count()).select_from(Job).where(Job.state == queue.QUEUED)
                )
            if not left:
                break
            misses += 1  # lost every race of one claim's retries to other workers
            continue
        queue.finish(env, job.pk, owner, queue.DONE)
        claimed += 1
    results.put((claimed, misses, time.time()))
    env.db.dispose()


def measure(
    settings: Settings, jobs: int, workers: int, skip_locked: bool = True
) -> tuple[float, int]:
    env = Env.open(settings)
    with env.db.session() as session:
        for _ in range(jobs):
            queue.enqueue(session, "bench", {})
    env.db.dispose()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0  # time for the processes to import and connect
    processes = [
        context.Process(target=work, args=(settings.model_dump(), start_at, results, skip_locked))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    claimed = sum(o[0] for o in outcomes)
    assert claimed == jobs, f"claimed {claimed} of {jobs}"
    return jobs / (max(o[2] for o in outcomes) - start_at), sum(o[1] for o in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--postgres-url", default="")
    args = parser.parse_args()
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[0]
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load}, {os.cpu_count()} cores")
    print("| database | claim | workers | jobs/s | claims lost to a race |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        backends = {"SQLite": ""}
        if args.postgres_url:
            backends["PostgreSQL"] = args.postgres_url
        for label, admin_url in backends.items():
            for workers in WORKER_COUNTS:
                for skip_locked in (True, False) if admin_url else (True,):
                    data_dir = Path(scratch) / f"{label}-{workers}-{skip_locked}"
                    url = fresh_postgres_database(admin_url) if admin_url else ""
                    settings = Settings(data_dir=data_dir, database_url=url)
                    rate, misses = measure(settings, args.jobs, workers, skip_locked)
                    claim = "SKIP LOCKED" if skip_locked else "plain SELECT"
                    claim = claim if admin_url else "(file lock)"
                    print(f"| {label} | {claim} | {workers} | {rate:.0f} | {misses} |", flush=True)


def fresh_postgres_database(admin_url: str) -> str:
    import psycopg

    parsed = make_url(admin_url)
    name = f"modelmill_bench_{secrets.token_hex(4)}"
    with psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database or "postgres",
        autocommit=True,
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return parsed.set(database=name).render_as_string(hide_password=False)


if __name__ == "__main__":
    main()

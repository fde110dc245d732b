"""Where a claimed job runs: a child process of the worker (`local`) or a Ray task (`ray`).

Both run the same entry, `child.run_job`; the worker around them claims the job, heartbeats its
lease, and stops the run when the lease is lost or a cancel is not honoured.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Protocol

from modelmill.jobs.child import run_job
from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store.tables import Job


class Run(Protocol):
    """One job's run, started by an executor."""

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s`; True once the run has ended."""
        ...

    def kill(self) -> None:
        """Stop the run now; returns once it is gone."""
        ...

    def describe_end(self) -> str:
        """How the run ended, for the log and the job's error."""
        ...


class Executor(Protocol):
    def start(self, job: Job, token: str) -> Run:
        """Run `job`, claimed under `token`."""
        ...

    def close(self) -> None: ...


class ChildProcess:
    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process

    def wait(self, timeout_s: float) -> bool:
        self.process.join(timeout_s)
        return not self.process.is_alive()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()

    def describe_end(self) -> str:
        return f"the training process exited with code {self.process.exitcode}"


class LocalExecutor:
    """Each job in a child process of the worker: it contains crashes, and is killed outright."""

    def __init__(self, settings: Settings, env: Env) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")

    def start(self, job: Job, token: str) -> Run:
        process = self.context.Process(
            target=run_job, args=(self.settings.model_dump(), job.pk, token), daemon=True
        )
        process.start()
        return ChildProcess(process)

    def close(self) -> None:
        pass


def _ray_executor(settings: Settings, env: Env) -> Executor:
    # Imported only when chosen: `import ray` takes seconds and a local Ray hundreds of MB, which
    # a worker with the local executor must not pay.
    try:
        from modelmill.jobs.ray_tasks import RayExecutor
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise
        raise SystemExit(
            "MODELMILL_EXECUTOR=ray needs Ray: pip install 'modelmill[ray]'"
        ) from error
    return RayExecutor(settings, env)


EXECUTORS: dict[str, Callable[[Settings, Env], Executor]] = {
    "local": LocalExecutor,
    "ray": _ray_executor,
}


def open_executor(settings: Settings, env: Env) -> Executor:
    """The executor MODELMILL_EXECUTOR names."""
    return EXECUTORS[settings.executor](settings, env)

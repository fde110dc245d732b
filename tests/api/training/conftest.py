"""Servers for the training tests: a shared one per backend whose own worker trains, and fresh
ones without workers where a test runs (and kills) its own `modelmill worker` processes.

Run: `.venv/bin/pytest tests/api/training -q` (fast tier), `-m slow` (kills, cancels, SDK, images),
`-m postgres` with MODELMILL_TEST_POSTGRES_URL for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import Account, Api, Server, create_app, make_server

# The shared server: one worker; embeddings computed by the trainings themselves, so that an
# upload does not queue background work in front of them.
TRAINING_SETTINGS = {
    "MODELMILL_WORKERS": "1",
    "MODELMILL_JOB_LEASE_S": "10",
    "MODELMILL_EMBED_ON_UPLOAD": "false",
}
# Servers for the robustness tests: no worker of their own, a short lease so that a killed
# worker's job is claimed again within seconds.
BARE_SETTINGS = {
    "MODELMILL_WORKERS": "0",
    "MODELMILL_JOB_LEASE_S": "4",
    "MODELMILL_JOB_MAX_ATTEMPTS": "3",
    "MODELMILL_EMBED_ON_UPLOAD": "false",
}
WORKER_START_TIMEOUT_S = 120.0


def descendants(process: subprocess.Popen[bytes] | None) -> list[psutil.Process]:
    if process is None:
        return []
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_with_descendants(server: Server) -> None:
    """Stop the server, then whatever it started that outlived it (workers, their children)."""
    started = descendants(server.process)
    server.stop()
    for child in started:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def database_url_for(backend: str, request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("postgres").create_database() if backend == "postgres" else ""


@pytest.fixture(scope="session")
def training_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = make_server(
        tmp_path_factory.mktemp(f"training-{backend}"),
        database_url_for(backend, request),
        TRAINING_SETTINGS,
    )
    server.start()
    yield server
    stop_with_descendants(server)


@pytest.fixture(scope="session")
def trainer(training_server: Server) -> Account:
    return Account("trainer", training_server.token("trainer"))


@pytest.fixture
def tapi(training_server: Server, trainer: Account, transport: str) -> Api:
    """The trainer's client on a fresh app of the training server, over this test's transport."""
    return Api(
        training_server,
        transport,
        trainer.key,
        trainer.user_id,
        create_app(training_server, trainer),
    )


@pytest.fixture
def trainer_api(training_server: Server, trainer: Account) -> Api:
    """A gRPC client on a fresh app of the training server (for tests that need no transport)."""
    return Api(
        training_server, "grpc", trainer.key, trainer.user_id, create_app(training_server, trainer)
    )


# ---- fresh servers and their workers -------------------------------------------------------------


@dataclass
class Workers:
    """`modelmill worker` processes run against one server's database and data directory."""

    server: Server
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, data_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A worker on the server's data dir and settings, or on its own (another "machine")."""
        log = (self.server.data_dir / f"worker-{len(self.processes)}.log").open("ab")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "modelmill", "worker",
                "--data-dir", str(data_dir or self.server.data_dir),
            ],
            env=self.server.env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.processes.append(process)
        return process

    def job_processes(self, worker: subprocess.Popen[bytes]) -> list[psutil.Process]:
        """The worker's job child processes (not multiprocessing's resource tracker)."""
        found = []
        for child in descendants(worker):
            try:
                command = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            if "spawn_main" in command and "resource_tracker" not in command:
                found.append(child)
        return found

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker alone, as the OOM killer or a power cut would."""
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.server.data_dir.glob("worker-*.log"))
        )

    def stop_all(self) -> None:
        for process in self.processes:
            children = descendants(process)
            if process.poll() is None:
                process.kill()
                process.wait(30)
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()


@dataclass
class Bare:
    """A fresh server without workers, a client on one of its apps, and its worker processes."""

    server: Server
    api: Api
    workers: Workers


@pytest.fixture
def bare(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """`bare(settings)` starts a fresh server with BARE_SETTINGS (and `settings` over them)."""
    made: list[Bare] = []

    def start(settings: dict[str, str] | None = None) -> Bare:
        server = make_server(
            tmp_path / f"server-{len(made)}",
            database_url_for(backend, request),
            {**BARE_SETTINGS, **(settings or {})},
        )
        server.start()
        user = Account("robust", server.token("robust"))
        api = Api(server, "grpc", user.key, user.user_id, create_app(server, user))
        item = Bare(server, api, Workers(server))
        made.append(item)
        return item

    yield start
    for item in made:
        item.workers.stop_all()
        stop_with_descendants(item.server)

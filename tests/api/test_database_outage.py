"""Fault: PostgreSQL stops while clients upload, then starts again. Calls during the outage are
refused whole with DATABASE_FAIL_TO_GET_CONNECTIONS (not INTERNAL_SERVER_ISSUE), nothing of them is
kept, and the same server (no restart) stores the retried batch exactly once.

Runs in the postgres tier on a throwaway cluster of its own (scripts/postgres.sh), since it stops
the database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, text_input
from conftest import Account, Api, Server, free_port, make_server

ROOT = Path(__file__).resolve().parents[2]
BATCH = 32
RETRIES = 20

pytestmark = pytest.mark.postgres


@dataclass
class Cluster:
    url: str
    folder: Path
    port: int

    def pg_ctl(self, *args: str) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        command = [str(binaries[-1] / "pg_ctl"), "-D", str(self.folder / "data"), *args]
        if os.getuid() == 0:  # PostgreSQL will not run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self.pg_ctl("-m", "immediate", "-w", "stop")  # as a crash or a pulled cable would

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.folder}"
        )
        self.pg_ctl("-l", str(self.folder / "server.log"), "-w", "-t", "60", "-o", options, "start")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    port = free_port()
    # Not under pytest's folders: the `postgres` user must be able to reach this one.
    parent = Path(tempfile.mkdtemp(prefix="modelmill-outage-"))
    parent.chmod(0o755)
    folder = parent / "pg"
    env = {**os.environ, "MODELMILL_PG_PORT": str(port), "MODELMILL_PG_DIR": str(folder)}
    started = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres.sh"), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if started.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        reason = f"could not start a PostgreSQL cluster: {started.stderr.strip()[-300:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield Cluster(started.stdout.strip().splitlines()[-1], folder, port)
    subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "stop"], env=env, timeout=180)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def server_on(cluster: Cluster, tmp_path: Path) -> Iterator[Server]:
    server = make_server(tmp_path / "server", cluster.url).start()
    yield server
    server.stop()


def batch(prefix: str) -> list[Any]:
    return [text_input(f"{prefix}-{n}", f"text {n} of {prefix}") for n in range(BATCH)]


def test_uploads_survive_a_database_outage(cluster: Cluster, server_on: Server) -> None:
    owner = Account("alice", server_on.token("alice"))
    api = Api(server_on, "grpc", owner.key, owner.user_id, "")
    assert_ok(api.PostApps(apps=[{"id": "outage"}]))
    api = Api(server_on, "grpc", owner.key, owner.user_id, "outage")
    assert_ok(api.PostInputs(inputs=batch("before")))

    during: list[Any] = []
    uploading = threading.Thread(
        target=lambda: during.extend(api.PostInputs(inputs=batch(f"during{n}")) for n in range(5))
    )
    uploading.start()
    cluster.stop()
    uploading.join(300)
    refused = api.PostInputs(inputs=batch("retried"))
    cluster.start()
    for _ in range(RETRIES):  # the pool's dead connections are found and replaced
        retried = api.PostInputs(inputs=batch("retried"))
        if retried.status.code == codes.SUCCESS:
            break

    assert refused.status.code == codes.DATABASE_FAIL_TO_GET_CONNECTIONS, refused.status
    assert retried.status.code == codes.SUCCESS, retried.status
    for reply in during:  # stored whole before the outage, or refused whole
        assert reply.status.code in (codes.SUCCESS, codes.DATABASE_FAIL_TO_GET_CONNECTIONS)
    kept = {r.inputs[0].id.rsplit("-", 1)[0] for r in during if r.status.code == codes.SUCCESS}
    listed = [i.id for i in assert_ok(api.ListInputs(per_page=1000)).inputs]
    expected = {"before", "retried", *kept}
    assert sorted(listed) == sorted(f"{p}-{n}" for p in expected for n in range(BATCH))

"""Workers on other machines: each `modelmill worker` has a data dir of its own and only the
database URL, the blob URL and the secret in common with the API server (PostgreSQL and moto's
S3 server here), so nothing may travel through a shared disk. A training whose worker is killed
on one "machine" finishes on the other; its log and its model reach the API server through the
database and the bucket, and so does an export the other machine builds.
"""

from __future__ import annotations

import io
import os
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, name
from api.training.conftest import BARE_SETTINGS, Workers, stop_with_descendants
from api.training.support import (
    TRAINED,
    TRAINING,
    StatusLog,
    labelled_images,
    predict,
    start_training,
    top_concept,
    wait_for_version,
    wait_until,
    without_labels,
)
from api.training.test_workers import image_training, job_log, training_started
from conftest import Account, Api, MotoServer, PostgresServer, Server, create_app, make_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]


def finished_export(api: Api, version_id: str) -> pb.ModelVersionExport | None:
    export = assert_ok(api.GetModelVersionExport(model_id="shapes", version_id=version_id)).export
    pending = (codes.MODEL_EXPORT_PENDING, codes.MODEL_EXPORTING)
    return None if export.status.code in pending else export


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def cluster(
    postgres: PostgresServer, s3_server: MotoServer, tmp_path: Path
) -> Iterator[tuple[Server, dict[str, str]]]:
    """An API server (no workers of its own) on PostgreSQL + S3, and the variables a worker on
    another machine gets: the three shared settings, the S3 endpoint, and the test's lease."""
    shared = {
        "MODELMILL_DATABASE_URL": postgres.create_database(),
        **s3_server.settings(s3_server.create_bucket()),
        "MODELMILL_SECRET_KEY": secrets.token_hex(32),
    }
    server = make_server(tmp_path / "api-machine", settings={**BARE_SETTINGS, **shared})
    server.start()
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("MODELMILL_", "AWS_"))}
    lease = {"MODELMILL_JOB_LEASE_S": BARE_SETTINGS["MODELMILL_JOB_LEASE_S"]}
    worker_env = {**plain, **shared, **lease}
    yield server, worker_env
    stop_with_descendants(server)


def test_a_training_killed_on_one_machine_finishes_on_another(
    cluster: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    server, worker_env = cluster
    account = Account("remote", server.token("remote"))
    api = Api(server, "grpc", account.key, account.user_id, create_app(server, account))
    workers = Workers(server)
    machine_a, machine_b = tmp_path / "machine-a", tmp_path / "machine-b"
    try:
        image_training(api)
        version = start_training(api, "shapes")
        first = workers.start(machine_a, worker_env)
        log = StatusLog()
        started = training_started(api, "shapes", version.id, log)
        assert started.status.code == TRAINING, f"finished before the kill: {log.names()}"
        children = workers.job_processes(first)
        assert children, "the worker runs its job in a child process"

        workers.kill(first)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, "the killed worker's training process kept running"
        workers.start(machine_b, worker_env)
        done = wait_for_version(api, "shapes", version.id, log=log)

        assert done.status.code == TRAINED, f"{name(done.status.code)}: {done.status.description}"
        assert done.metrics.status.code == codes.MODEL_EVALUATED
        assert log.seen[-2:] == [TRAINING, TRAINED], log.names()
        # The API server holds no log file: it serves the copy machine B published, which
        # continues the one machine A published before it was killed.
        text = job_log(api, "shapes", version.id)
        assert "attempt 1 of 3" in text and "attempt 2 of 3" in text, text
        assert files_under(machine_a / "logs") and files_under(machine_b / "logs")
        # Neither machine wrote blobs to a disk: inputs, checkpoints and the model are in S3.
        for data_dir in (server.data_dir, machine_a, machine_b):
            assert files_under(data_dir / "blobs") == [], data_dir
        # The API server predicts with the model machine B trained, fetched from the bucket.
        probe = labelled_images(1, concepts=["red-circle", "blue-triangle"])
        reply = assert_ok(predict(api, "shapes", [without_labels(m) for m in probe]))
        assert [top_concept(o) for o in reply.outputs] == ["red-circle", "blue-triangle"]
        # Machine B exports the model into the bucket; the API server streams the archive, also
        # from an offset, as a download that resumes asks for it.
        assert_ok(api.PutModelVersionExports(model_id="shapes", version_id=version.id))
        export = wait_until(lambda: finished_export(api, version.id), "the export")
        assert export.status.code == codes.MODEL_EXPORTED, export.status
        archive = requests.get(export.url, timeout=60).content
        assert len(archive) == export.size
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            assert "concepts.json" in bundle.namelist()
        resumed = requests.get(export.url, headers={"Range": "bytes=1000-"}, timeout=60)
        assert resumed.status_code == 206 and resumed.content == archive[1000:]
    except BaseException:
        print(workers.log())
        raise
    finally:
        workers.stop_all()

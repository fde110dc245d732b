"""Estimator end to end: the estimate a user is shown against the wait they then have, from
PostModelVersions to MODEL_TRAINED, through a real `modelmill serve` and the official client.

    MODELMILL_JOB_THREADS=1 .venv/bin/python bench/estimator_e2e.py [--template NAME ...]
                                                                   [--extra-load N]

Each row is a fresh server (one worker, a fresh data dir: the estimate is what a new install
says, with the shipped calibration and no finished training to learn from) with generated JPEG
images uploaded over gRPC into a dataset version; then PostModelVersionsTrainingTimeEstimate
for that dataset version, then PostModelVersions with the same params, and GetModel polled
every 0.2 s until MODEL_TRAINED. The "cached" rows compute the embeddings on upload (background
jobs, waited for) before estimating and training. The grid uses input counts, epochs, image
sizes and batch sizes that the shipped calibration did not. `--extra-load N` runs N processes
spinning on the CPUs meanwhile. Prints a markdown table with the 1-minute load average before
and after each row, the parts the job measured (start-up, runner, saving) and the MAPE per
template. A benchmark measures: it asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api import service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf.struct_pb2 import Struct
from PIL import Image, ImageDraw

CONCEPTS = ("red-circle", "blue-square")
UPLOAD_BATCH = 64
POLL_S = 0.2
STORED_SIDE = (320, 240)  # stored image size: calibration used 320, 800 and 1600 px wide


@dataclass(frozen=True)
class Row:
    model_type: str
    template: str
    inputs: int
    params: dict[str, Any]
    cached: bool = False

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.params.items())
        return (
            f"{self.inputs} images"
            + (f", {shown}" if shown else "")
            + (", embeddings cached" if self.cached else "")
        )


# Held out: the calibration trained Lite0 at 1, 2 and 4 epochs, 112/224/336 px and batches of
# 32 and 8, on 8 to a few hundred inputs; the embedding classifier on 8 to ~600 inputs.
GRID = (
    Row("visual-classifier", "EfficientNet_Lite0_Fast", 200, {"num_epochs": 3, "image_size": 64}),
    Row(
        "visual-classifier",
        "EfficientNet_Lite0_Fast",
        400,
        {"num_epochs": 3, "image_size": 64, "batch_size": 16},
    ),
    Row(
        "visual-classifier",
        "EfficientNet_Lite0_Fast",
        300,
        {"num_epochs": 2, "image_size": 96, "batch_size": 16},
    ),
    Row("visual-classifier", "EfficientNet_Lite0_Fast", 150, {"num_epochs": 5, "image_size": 80}),
    Row("embedding-classifier", "embedding-classifier", 100, {}),
    Row("embedding-classifier", "embedding-classifier", 250, {}),
    Row("embedding-classifier", "embedding-classifier", 400, {}),
    Row("embedding-classifier", "embedding-classifier", 400, {}, cached=True),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jpeg(index: int, rng: random.Random) -> tuple[bytes, str]:
    concept = CONCEPTS[index % 2]
    image = Image.new("RGB", STORED_SIDE, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x, y, r = rng.randrange(40, 280), rng.randrange(40, 200), rng.randrange(15, 40)
    box = (x - r, y - r, x + r, y + r)
    if concept == "red-circle":
        draw.ellipse(box, fill=(220, rng.randrange(60), rng.randrange(60)))
    else:
        draw.rectangle(box, fill=(rng.randrange(60), rng.randrange(60), 220))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue(), concept


def spin() -> None:
    while True:
        pass


@contextmanager
def extra_load(processes: int) -> Iterator[None]:
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(processes)]
    for process in spinners:
        process.start()
    try:
        yield
    finally:
        for process in spinners:
            process.kill()
            process.join()


class Server:
    """A `modelmill serve` on a fresh data dir, with one worker."""

    def __init__(self, embed_on_upload: bool) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="mm-estimator-e2e-"))
        self.http, self.grpc = free_port(), free_port()
        cli = [sys.executable, "-m", "modelmill"]
        token = [*cli, "token", "create", "--data-dir", str(self.data_dir), "--user", "bench"]
        created = subprocess.run(
            [*token, "--app", "e2e"], check=True, capture_output=True, text=True
        )
        self.key = created.stdout.strip().splitlines()[-1]
        env = {
            **os.environ,
            "MODELMILL_EMBED_ON_UPLOAD": str(embed_on_upload).lower(),
            "MODELMILL_WORKERS": "1",
        }
        self.process = subprocess.Popen(
            [*cli, "serve", "--data-dir", str(self.data_dir)]
            + ["--http-port", str(self.http), "--grpc-port", str(self.grpc)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        channel = ClarifaiChannel.get_insecure_grpc_channel("127.0.0.1", self.grpc)
        self.stub = service_pb2_grpc.V2Stub(channel)
        self.meta = (("authorization", f"Key {self.key}"),)
        self.app = pb.UserAppIDSet(user_id="me", app_id="e2e")

    def call(self, method: str, request: Any) -> Any:
        request.user_app_id.CopyFrom(self.app)
        reply = getattr(self.stub, method)(request, metadata=self.meta)
        assert reply.status.code == codes.SUCCESS, (method, reply.status)
        return reply

    def database(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "modelmill.db")

    def wait_for_idle_queue(self) -> None:
        """Until the background embedding jobs have all ended."""
        while True:
            with self.database() as db:
                (busy,) = db.execute(
                    "select count(*) from jobs where state in ('queued', 'running')"
                ).fetchone()
            if not busy:
                return
            time.sleep(1.0)

    def measured_parts(self) -> dict[str, float]:
        import json

        with self.database() as db:
            row = db.execute(
                "select run from training_runs where source = 'wait' order by pk desc limit 1"
            ).fetchone()
        return json.loads(row[0]) if row else {}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_row(row: Row, seed: int) -> dict[str, Any]:
    server = Server(embed_on_upload=row.cached)
    try:
        rng = random.Random(seed)
        server.call("PostDatasets", service.PostDatasetsRequest(datasets=[pb.Dataset(id="d")]))
        for start in range(0, row.inputs, UPLOAD_BATCH):
            inputs = []
            for index in range(start, min(start + UPLOAD_BATCH, row.inputs)):
                image, concept = jpeg(index, rng)
                data = pb.Data(
                    image=pb.Image(base64=image), concepts=[pb.Concept(id=concept, value=1)]
                )
                inputs.append(pb.Input(id=f"i{index}", data=data, dataset_ids=["d"]))
            server.call("PostInputs", service.PostInputsRequest(inputs=inputs))
        server.call(
            "PostDatasetVersions",
            service.PostDatasetVersionsRequest(
                dataset_id="d", dataset_versions=[pb.DatasetVersion(id="v1")]
            ),
        )
        model = pb.Model(id="m", model_type_id=row.model_type)
        server.call("PostModels", service.PostModelsRequest(model=model))
        if row.cached:
            server.wait_for_idle_queue()
        params = Struct()
        template = {"template": row.template} if row.model_type == "visual-classifier" else {}
        params.update({**template, **row.params, "dataset_id": "d", "dataset_version_id": "v1"})
        version = pb.ModelVersion(
            train_info=pb.TrainInfo(params=params),
            output_info=pb.OutputInfo(data=pb.Data(concepts=[pb.Concept(id=c) for c in CONCEPTS])),
        )
        load_before = os.getloadavg()[0]
        estimate = server.call(
            "PostModelVersionsTrainingTimeEstimate",
            service.PostModelVersionsTrainingTimeEstimateRequest(
                model_id="m", model_versions=[version]
            ),
        )
        estimated = estimate.training_time_estimates[0].seconds
        started = time.perf_counter()
        server.call(
            "PostModelVersions",
            service.PostModelVersionsRequest(model_id="m", model_versions=[version]),
        )
        while True:
            current = server.call(
                "GetModel", service.GetModelRequest(model_id="m")
            ).model.model_version
            if current.status.code not in (
                codes.MODEL_QUEUED_FOR_TRAINING,
                codes.MODEL_TRAINING,
            ):
                break
            time.sleep(POLL_S)
        took = time.perf_counter() - started
        assert current.status.code == codes.MODEL_TRAINED, current.status
        time.sleep(0.5)  # the job records its wait right after the status
        return {
            "estimated": float(estimated),
            "took": took,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "parts": server.measured_parts(),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", action="append", default=[])
    parser.add_argument("--extra-load", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [r for r in GRID if not args.template or r.template in args.template]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.processor() or platform.machine()} · "
        f"{os.cpu_count()} CPUs · MODELMILL_JOB_THREADS={os.environ.get('MODELMILL_JOB_THREADS')}"
        f" · extra load {args.extra_load}\n"
    )
    print(
        "| template | training | estimated s | PostModelVersions → MODEL_TRAINED s | error | "
        "queued / start-up / runner / saving s (job's own) | load before → after |"
    )
    print("|---|---|--:|--:|--:|---|---|")
    errors: dict[str, list[float]] = {}
    with extra_load(args.extra_load):
        for index, row in enumerate(rows):
            result = run_row(row, args.seed + index)
            error = (result["estimated"] - result["took"]) / result["took"]
            errors.setdefault(row.template, []).append(abs(error))
            parts = result["parts"]
            runner = parts.get("train_s", 0.0) + parts.get("embed_s", 0.0)
            measured = " / ".join(
                f"{v:.1f}"
                for v in (
                    parts.get("queued_s", 0.0),
                    parts.get("start_s", 0.0),
                    runner,
                    parts.get("save_s", 0.0),
                )
            )
            print(
                f"| {row.template} | {row.describe()} | {result['estimated']:.0f} | "
                f"{result['took']:.1f} | {100 * error:+.0f} % | {measured} | "
                f"{result['load_before']:.1f} → {result['load_after']:.1f} |",
                flush=True,
            )
    print()
    for template, values in errors.items():
        print(
            f"- {template}: MAPE {100 * statistics.mean(values):.1f} % over {len(values)} trainings"
        )


if __name__ == "__main__":
    main()

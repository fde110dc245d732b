"""Estimator end to end: the estimate a user is shown against the wait they then have, from
PostModelVersions to MODEL_TRAINED, through a real `modelmill serve` and the official client.

    MODELMILL_JOB_THREADS=1 .venv/bin/python bench/estimator_e2e.py [--template NAME ...]
                                                                   [--extra-load N]

Each row is a fresh server (one worker, a fresh data dir: the estimate is what a new install
says, with the shipped calibration and no finished training to learn from) with its model
type's generated data (the task's `sample_data`: images with concepts, boxes, masks or a
normal/anomalous label; texts with concepts or completions) uploaded over gRPC into a dataset
version; then PostModelVersionsTrainingTimeEstimate for that dataset version, then
PostModelVersions with the same params, and GetModel polled every 0.2 s until MODEL_TRAINED.
The "cached" rows compute the embeddings on upload (background jobs, waited for) before
estimating and training. The grid uses input counts, epochs, image sizes, batch sizes and text
lengths that the shipped calibration did not. Jobs compute with the server's default threads
(the cores shared among its workers), as the calibration's trials did, unless
MODELMILL_JOB_THREADS says otherwise. `--extra-load N` runs N processes spinning on the CPUs
meanwhile. Prints a markdown table with the 1-minute load average before
and after each row, the parts the job measured (start-up, runner, saving) and the MAPE per
template. A benchmark measures: it asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import platform
import shutil
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

from modelmill.training.contract import Example, Region
from modelmill.training.registry import task_of

UPLOAD_BATCH = 64
POLL_S = 0.2
IMAGE_SIDE = 320  # stored image width: calibration used 320, 800 and 1600 px
TEXT_CHARS = 200  # stored text length: calibration used 80, 400 and 1500 characters


@dataclass(frozen=True)
class Row:
    model_type: str
    template: str
    inputs: int
    params: dict[str, Any]
    kind: str = "image"
    cached: bool = False
    # the sample data's text length (a pair, prompt and target, has ~1.4× as many characters)
    chars: int = TEXT_CHARS

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.params.items())
        length = (
            f" of {self.chars} chars" if self.kind == "text" and self.chars != TEXT_CHARS else ""
        )
        return (
            f"{self.inputs} {self.kind}s{length}"
            + (f", {shown}" if shown else "")
            + (", embeddings cached" if self.cached else "")
        )


# Held out: the calibration trained 1, 2 and 4 epochs, image sizes 0.5/1/1.5 × the template's
# default, its default batch and a quarter of it, on 16 inputs up to what fills 3–12 s a trial
# (at --time-scale 0.5); the embedding classifier on 8 to ~600 inputs.
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
    Row("embedding-classifier", "embedding-classifier", 300, {}, kind="text"),
    Row("embedding-classifier", "embedding-classifier", 900, {}, kind="text"),
    Row("text-classifier", "HF_BERT_FullFineTune", 160, {"num_epochs": 3}, kind="text"),
    Row(
        "text-classifier",
        "HF_BERT_FullFineTune",
        300,
        {"num_epochs": 2, "batch_size": 16},
        kind="text",
    ),
    Row(
        "visual-detector",
        "EfficientNet_Lite0_RetinaNet_Fast",
        48,
        {"num_epochs": 3, "image_size": 256},
    ),
    Row(
        "visual-detector",
        "EfficientNet_Lite0_RetinaNet_Fast",
        96,
        {"num_epochs": 2, "image_size": 224, "batch_size": 4},
    ),
    Row("visual-segmenter", "Unet_EfficientNet_Lite0", 40, {"num_epochs": 3, "image_size": 256}),
    Row(
        "visual-segmenter",
        "Unet_EfficientNet_Lite0",
        80,
        {"num_epochs": 2, "image_size": 192, "batch_size": 8},
    ),
    Row("visual-embedder", "Lite0_MultiSimilarity", 200, {"num_epochs": 3, "image_size": 96}),
    Row(
        "visual-embedder",
        "Lite0_MultiSimilarity",
        120,
        {"num_epochs": 5, "image_size": 160, "batch_size": 16},
    ),
    Row("visual-anomaly-heatmap", "PatchCore", 90, {"image_size": 192}),
    Row("visual-anomaly-heatmap", "PatchCore", 200, {"image_size": 256}),
    Row("text-to-text", "HF_SmolLM2_135m_lora", 48, {"num_epochs": 2, "batch_size": 4}, "text"),
    Row("text-to-text", "HF_SmolLM2_135m_lora", 96, {"num_epochs": 1}, "text"),
    Row("text-to-text", "HF_SmolLM2_135m_lora", 64, {"num_epochs": 2}, "text", chars=120),
    Row(
        "text-to-text",
        "HF_SmolLM2_135m_lora",
        40,
        {"num_epochs": 1, "batch_size": 4},
        "text",
        chars=600,
    ),
    Row("text-to-text", "HF_SmolLM2_135m_FullFineTune", 48, {"num_epochs": 1}, "text"),
    Row("text-to-text", "HuggingFace_AdvancedConfig", 40, {}, "text"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def region_message(region: Region) -> pb.Region:
    message = pb.Region(
        data=pb.Data(concepts=[pb.Concept(id=c, value=v) for c, v in region.concepts.items()])
    )
    if region.box is not None:
        top, left, bottom, right = region.box
        message.region_info.bounding_box.CopyFrom(
            pb.BoundingBox(top_row=top, left_col=left, bottom_row=bottom, right_col=right)
        )
    elif region.mask_png is not None:
        message.region_info.mask.image.base64 = region.mask_png
    else:
        message.region_info.polygon.points.extend(
            pb.Point(row=row, col=col) for row, col in region.polygon
        )
    return message


def input_of(example: Example, dataset_id: str, number: int) -> pb.Input:
    """A generated example as a client sends it: content, concepts, regions, and a text
    generator's wanted output as metadata (`completion`, or chat `messages`). The sample data
    cycles through a few distinct contents; input `number` is made unlike the others (its number in
    pixels, or after the text) so that, as in a real dataset, no two inputs share a content
    and the embedding cache computes each once."""
    content = example.load()
    if example.kind == "image":
        image = content.convert("RGB")
        for bit in range(16):  # the number in black and white pixels along the top row
            image.putpixel((bit, 0), (255, 255, 255) if number >> bit & 1 else (0, 0, 0))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        data = pb.Data(image=pb.Image(base64=out.getvalue()))
    else:
        data = pb.Data(text=pb.Text(raw=f"{content} {number}"))
    data.concepts.extend(pb.Concept(id=c, value=v) for c, v in example.concepts.items())
    data.regions.extend(region_message(r) for r in example.regions)
    if example.target_text is not None:
        data.metadata.update({"completion": example.target_text})
    if example.messages:
        turns = [{"role": role, "content": text} for role, text in example.messages]
        data.metadata.update({"messages": turns})
    return pb.Input(id=example.input_id, data=data, dataset_ids=[dataset_id])


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

    def __init__(self, embed_on_upload: bool, weights_dir: Path) -> None:
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
            "MODELMILL_WEIGHTS_DIR": str(weights_dir),
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
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a text-to-text row leaves ~2 GB


def run_row(row: Row, weights_dir: Path) -> dict[str, Any]:
    size = IMAGE_SIDE if row.kind == "image" else row.chars
    data = task_of(row.model_type).sample_data(row.kind, row.inputs, size)  # type: ignore[arg-type]
    server = Server(embed_on_upload=row.cached, weights_dir=weights_dir)
    try:
        server.call("PostDatasets", service.PostDatasetsRequest(datasets=[pb.Dataset(id="d")]))
        examples = list(data.examples)
        for start in range(0, len(examples), UPLOAD_BATCH):
            batch = examples[start : start + UPLOAD_BATCH]
            inputs = [input_of(e, "d", start + n) for n, e in enumerate(batch)]
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
        template = {"template": row.template} if row.template != row.model_type else {}
        params.update({**template, **row.params, "dataset_id": "d", "dataset_version_id": "v1"})
        concepts = [pb.Concept(id=c) for c in data.concepts]
        version = pb.ModelVersion(
            train_info=pb.TrainInfo(params=params),
            output_info=pb.OutputInfo(data=pb.Data(concepts=concepts)),
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
    parser.add_argument(
        "--first-only", action="store_true", help="only the first row of each chosen template"
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mm-estimator-e2e-weights",
        help="shared by every row, as by one install's trainings (SmolLM2's GGUF is converted "
        "into it on the first text-to-text training)",
    )
    args = parser.parse_args()
    rows = [r for r in GRID if not args.template or r.template in args.template]
    if args.first_only:
        rows = [r for i, r in enumerate(rows) if r.template not in {o.template for o in rows[:i]}]
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
        for row in rows:
            try:
                result = run_row(row, args.weights_dir)
            except Exception as error:  # a row that fails is a finding: say it, go on
                print(f"| {row.template} | {row.describe()} | failed: {error!r:.300} |", flush=True)
                continue
            error = (result["estimated"] - result["took"]) / result["took"]
            errors.setdefault(f"{row.template} ({row.kind}s)", []).append(abs(error))
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

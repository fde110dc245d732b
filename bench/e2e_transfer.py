"""End to end: 1,000 labelled texts uploaded → a trained embedding-classifier version.

    .venv/bin/python bench/e2e_transfer.py [--inputs 1000]

Starts a real server (one worker) per variant, uploads over gRPC in batches of 128, trains,
polls GetModel until MODEL_TRAINED and prints a table. Variants: embeddings computed in the
background as inputs arrive (the default) and only at training time.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2 as service
from clarifai_grpc.grpc.api import service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf.struct_pb2 import Struct
from rich.console import Console
from rich.table import Table

TOPICS = {
    "sport": ["match", "goal", "team", "coach", "season", "league", "player", "score", "stadium"],
    "food": ["recipe", "oven", "flavour", "dinner", "spice", "bread", "soup", "dessert", "chef"],
    "tech": [
        "laptop",
        "software",
        "server",
        "battery",
        "update",
        "network",
        "code",
        "chip",
        "cloud",
    ],
    "travel": ["flight", "hotel", "beach", "passport", "museum", "train", "island", "tour", "map"],
}
FILLER = ["the", "a", "was", "really", "new", "today", "we", "about", "with", "after", "very"]
BATCH = 128


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def texts(count: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    items = []
    for index in range(count):
        topic = list(TOPICS)[index % len(TOPICS)]
        words = rng.sample(TOPICS[topic], 3) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        items.append((topic, " ".join(words) + f" #{index}"))
    return items


def run(count: int, embed_on_upload: bool) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="mm-e2e-"))
    http, grpc_port = free_port(), free_port()
    cli = [sys.executable, "-m", "modelmill"]
    key = (
        subprocess.run(
            [
                *cli,
                "token",
                "create",
                "--data-dir",
                str(data_dir),
                "--user",
                "bench",
                "--app",
                "e2e",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    env = {**os.environ, "MODELMILL_EMBED_ON_UPLOAD": str(embed_on_upload).lower()}
    server = subprocess.Popen(
        [
            *cli,
            "serve",
            "--data-dir",
            str(data_dir),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc_port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        stub = service_pb2_grpc.V2Stub(
            ClarifaiChannel.get_insecure_grpc_channel("127.0.0.1", grpc_port)
        )
        meta = (("authorization", f"Key {key}"),)
        app = pb.UserAppIDSet(user_id="me", app_id="e2e")
        wait_healthy(http)
        items = texts(count)
        start = time.perf_counter()
        for offset in range(0, count, BATCH):
            inputs = [
                pb.Input(
                    data=pb.Data(text=pb.Text(raw=text), concepts=[pb.Concept(id=topic, value=1)])
                )
                for topic, text in items[offset : offset + BATCH]
            ]
            reply = stub.PostInputs(
                service.PostInputsRequest(user_app_id=app, inputs=inputs), metadata=meta
            )
            assert reply.status.code == codes.SUCCESS, reply.status
        uploaded = time.perf_counter()
        stub.PostModels(
            service.PostModelsRequest(
                user_app_id=app, model=pb.Model(id="topics", model_type_id="embedding-classifier")
            ),
            metadata=meta,
        )
        params = Struct()
        params.update({"enrich_dataset": "Automatic"})
        reply = stub.PostModelVersions(
            service.PostModelVersionsRequest(
                user_app_id=app,
                model_id="topics",
                model_versions=[
                    pb.ModelVersion(
                        train_info=pb.TrainInfo(params=params),
                        output_info=pb.OutputInfo(
                            data=pb.Data(concepts=[pb.Concept(id=t) for t in TOPICS])
                        ),
                    )
                ],
            ),
            metadata=meta,
        )
        assert reply.status.code == codes.SUCCESS, reply.status
        while True:
            version = stub.GetModel(
                service.GetModelRequest(user_app_id=app, model_id="topics"), metadata=meta
            ).model.model_version
            if version.status.code not in (codes.MODEL_QUEUED_FOR_TRAINING, codes.MODEL_TRAINING):
                break
            time.sleep(0.2)
        trained = time.perf_counter()
        assert version.status.code == codes.MODEL_TRAINED, version.status
        return {
            "upload_s": uploaded - start,
            "train_s": trained - uploaded,
            "total_s": trained - start,
            "accuracy": version.metrics.summary.top1_accuracy,
        }
    finally:
        server.terminate()
        server.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=1000)
    args = parser.parse_args()
    table = Table(title=f"{args.inputs} labelled texts → trained embedding-classifier version")
    for column in (
        "embeddings",
        "upload s",
        "queue+train+eval s",
        "total s",
        "k-fold top-1 accuracy",
    ):
        table.add_column(column)
    for embed_on_upload in (True, False):
        result = run(args.inputs, embed_on_upload)
        table.add_row(
            "in the background on upload" if embed_on_upload else "at training time",
            f"{result['upload_s']:.1f}",
            f"{result['train_s']:.1f}",
            f"{result['total_s']:.1f}",
            f"{result['accuracy']:.3f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()

"""Ingest throughput: images/s and texts/s through PostInputs on loopback.

    .venv/bin/python bench/ingest.py [--batches 20] [--warmup 3] [--clients 1,3]
                                     [--postgres-url URL] [--markdown FILE] [--profile DIR]
    make bench      # the same, with a throwaway PostgreSQL from scripts/postgres.sh

For each backend (SQLite; PostgreSQL when a URL is given) it starts its own `modelmill serve`
(MODELMILL_WORKERS=0, a fresh data dir and database), makes a key with `modelmill token create`,
then sends batches of 128 inputs with the official clarifai-grpc stub over gRPC and over its
JSON channel (REST), from one client and then from several client threads at once. Images are
256x256 JPEGs drawn with Pillow (gradients, shapes, noise), every one different; texts are a
few sentences; each input carries one concept label, as a training upload does. A benchmark
measures, it asserts nothing about time; it does fail if the server rejects an input.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

BATCH = 128
IMAGE_SIDE = 256
USER, APP = "bench", "bench"
CONCEPTS = ["cat", "dog", "bird", "fish", "horse"]
PROSE = (
    "the a model learns from labelled images and text every batch brings new examples while "
    "training runs on two cores without a graphics card so each step counts data arrives through "
    "the api clients upload folders of photos reviews support tickets and short notes people "
    "press train and wait for a version they can evaluate call and export later today"
)
WORDS = PROSE.split()
console = Console(width=None if sys.stdout.isatty() else 120)


# ---- data -------------------------------------------------------------------------------------


class ImageMaker:
    """Distinct 256x256 JPEGs: a pool of drawn scenes, each copy shifted and stamped uniquely,
    so that every image decodes to different pixels (the blob store deduplicates by content)."""

    def __init__(self, rng: np.random.Generator, pool_size: int = 64) -> None:
        self.rng = rng
        self.count = 0
        self.pool = [self._scene() for _ in range(pool_size)]

    def _scene(self) -> np.ndarray:
        rng = self.rng
        yy, xx = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE].astype(np.float32) / IMAGE_SIDE
        angle = rng.random() * 2 * np.pi
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        start, end = rng.random((2, 3)).astype(np.float32) * 255
        pixels = start * (1 - t)[..., None] + end * t[..., None]
        pixels += rng.normal(0, rng.uniform(2, 30), (IMAGE_SIDE, IMAGE_SIDE, 1))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 8))):
            x, y = (int(v) for v in rng.integers(0, IMAGE_SIDE - 40, 2))
            w, h = (int(v) for v in rng.integers(10, 120, 2))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x, y, x + w, y + h], fill=fill)
        return np.asarray(image)

    def make(self) -> bytes:
        self.count += 1
        pixels = np.roll(self.pool[self.count % len(self.pool)], self.count % 97, axis=1).copy()
        for bit in range(24):  # the counter, as black and white 6x6 squares along the top
            pixels[:6, bit * 6 : bit * 6 + 6] = 255 if self.count >> bit & 1 else 0
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()


def make_text(rng: np.random.Generator) -> str:
    sentences = []
    for _ in range(int(rng.integers(2, 5))):
        words = list(rng.choice(WORDS, int(rng.integers(8, 16))))
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def make_requests(kind: str, batches: int, rng: np.random.Generator, images: ImageMaker) -> list:
    """`batches` PostInputsRequests of BATCH inputs each, with fresh ids."""
    requests = []
    for _ in range(batches):
        inputs = []
        for _ in range(BATCH):
            concept = resources_pb2.Concept(id=str(rng.choice(CONCEPTS)), value=1)
            if kind == "images":
                data = resources_pb2.Data(
                    image=resources_pb2.Image(base64=images.make()), concepts=[concept]
                )
            else:
                data = resources_pb2.Data(
                    text=resources_pb2.Text(raw=make_text(rng)), concepts=[concept]
                )
            inputs.append(resources_pb2.Input(id=secrets.token_hex(8), data=data))
        requests.append(
            service_pb2.PostInputsRequest(
                user_app_id=resources_pb2.UserAppIDSet(user_id=USER, app_id=APP), inputs=inputs
            )
        )
    return requests


# ---- server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    key: str

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fresh_postgres_database(url: str) -> Iterator[str]:
    """A new, empty database on the server `url` names, dropped afterwards."""
    import psycopg

    admin_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"modelmill_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_server(
    database_url: str, profile: Path | None, label: str, workers: int = 0
) -> Iterator[Server]:
    data_dir = Path(tempfile.mkdtemp(prefix="modelmill-bench-"))
    env = {
        **os.environ,
        "MODELMILL_WORKERS": str(workers),
        "MODELMILL_DATABASE_URL": database_url,
    }
    modelmill = [sys.executable, "-m", "modelmill"]
    key = subprocess.run(
        [*modelmill, "token", "create", "--data-dir", str(data_dir), "--user", USER, "--app", APP],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    http_port, grpc_port = free_port(), free_port()
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [*modelmill, "serve", "--data-dir", str(data_dir), "--http-port", str(http_port),
         "--grpc-port", str(grpc_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    profiler = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"modelmill serve did not start:\n{(data_dir / 'server.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            # Collapsed stacks ("frame;frame;... count"): grep-able, and speedscope opens them.
            profiler = subprocess.Popen(
                [py_spy, "record", "--pid", str(process.pid), "--rate", "100", "--format", "raw",
                 "--output", str(profile / f"{label}.collapsed.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        yield Server(process, http_port, grpc_port, key)
    except BaseException:
        tail = (data_dir / "server.log").read_text().splitlines()[-40:]
        console.print(f"[red]{label} server, exit code {process.poll()}; its log ends:[/]")
        console.print("\n".join(tail), markup=False, highlight=False)
        raise
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=120)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


# ---- measuring --------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    transport: str
    kind: str
    clients: int
    inputs: int
    seconds: float
    batch_ms: float  # median latency of one PostInputs call
    server_cpu: float  # server CPU seconds / wall seconds (2.0 = both cores busy)
    load: float  # the machine's 1-minute load average as the run started: other work competes

    @property
    def per_second(self) -> float:
        return self.inputs / self.seconds

    @property
    def cpu_ms_per_input(self) -> float:
        """Server CPU per input: what the server itself costs, whatever else shares the cores."""
        return self.server_cpu * self.seconds * 1000 / self.inputs


def stub_for(server: Server, transport: str) -> service_pb2_grpc.V2Stub:
    # Made right before use: ClarifaiChannel keeps one global response deserializer, set by the
    # channel created last, and a stub captures it when built.
    if transport == "gRPC":
        channel = ClarifaiChannel.get_insecure_grpc_channel(base="127.0.0.1", port=server.grpc_port)
    else:
        channel = ClarifaiChannel.get_json_channel(base_url=f"http://127.0.0.1:{server.http_port}")
    return service_pb2_grpc.V2Stub(channel)


def post(stub: service_pb2_grpc.V2Stub, key: str, request: service_pb2.PostInputsRequest) -> float:
    start = time.perf_counter()
    try:
        response = stub.PostInputs(request, metadata=(("authorization", f"Key {key}"),))
    except Exception as error:  # the JSON channel's errors carry the whole base64 request
        raise RuntimeError(
            f"PostInputs failed: {type(error).__name__} {str(error)[:300]}"
        ) from None
    elapsed = time.perf_counter() - start
    if response.status.code != status_code_pb2.SUCCESS:
        bad = [i.status.description for i in response.inputs if i.status.description][:3]
        raise RuntimeError(f"PostInputs answered {response.status.description}: {bad}")
    return elapsed


def measure(
    server: Server, backend: str, transport: str, kind: str, clients: int,
    warmup: list, timed: list,
) -> Row:  # fmt: skip
    stub = stub_for(server, transport)
    for request in warmup:
        post(stub, server.key, request)
    load = os.getloadavg()[0]
    cpu_before, start = server.cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(lambda request: post(stub, server.key, request), timed))
    seconds = time.perf_counter() - start
    cpu = (server.cpu_seconds() - cpu_before) / seconds
    return Row(
        backend, transport, kind, clients, len(timed) * BATCH, seconds,
        statistics.median(latencies) * 1000, cpu, load,
    )  # fmt: skip


def print_table(rows: list[Row], title: str) -> None:
    table = Table(title=title)
    for column in ("backend", "transport", "kind", "clients", "inputs", "seconds"):
        table.add_column(
            column, justify="right" if column in ("clients", "inputs", "seconds") else "left"
        )
    table.add_column("inputs/s", justify="right", style="bold")
    table.add_column("ms/batch (median)", justify="right")
    table.add_column("server CPU", justify="right")
    table.add_column("CPU ms/input", justify="right")
    table.add_column("load", justify="right")
    for r in rows:
        table.add_row(
            r.backend, r.transport, r.kind, str(r.clients), str(r.inputs), f"{r.seconds:.1f}",
            f"{r.per_second:.0f}", f"{r.batch_ms:.0f}", f"{r.server_cpu * 100:.0f}%",
            f"{r.cpu_ms_per_input:.2f}", f"{r.load:.1f}",
        )  # fmt: skip
    console.print(table)


def markdown(rows: list[Row]) -> str:
    lines = [
        "| backend | transport | kind | clients | inputs | seconds | inputs/s "
        "| ms/batch (median) | server CPU | CPU ms/input | load |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r.backend} | {r.transport} | {r.kind} | {r.clients} | {r.inputs} | {r.seconds:.1f} "
        f"| **{r.per_second:.0f}** | {r.batch_ms:.0f} | {r.server_cpu * 100:.0f}% "
        f"| {r.cpu_ms_per_input:.2f} | {r.load:.1f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run (of 128)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before each run")
    parser.add_argument(
        "--clients", default="1,3", help="client threads per run, comma-separated (1 = sequential)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MODELMILL_BENCH_POSTGRES_URL", ""),
        help="a PostgreSQL server (SQLAlchemy URL); each run gets a new database on it "
        "[env MODELMILL_BENCH_POSTGRES_URL]",
    )
    parser.add_argument("--transports", default="gRPC,REST", help="comma-separated")
    parser.add_argument("--kinds", default="images,texts", help="comma-separated")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--profile", type=Path, help="record each server with py-spy (pip install py-spy) here"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = ImageMaker(rng)
    backends = [("SQLite", "")]
    if args.postgres_url:
        backends.append(("PostgreSQL", args.postgres_url))
    rows: list[Row] = []
    for backend, url in backends:
        database = fresh_postgres_database(url) if url else contextlib.nullcontext("")
        with (
            database as database_url,
            running_server(database_url, args.profile, backend) as server,
        ):
            for transport in args.transports.split(","):
                for kind in args.kinds.split(","):
                    for clients in (int(c) for c in args.clients.split(",")):
                        # Built before the clock starts: the timed part is the client call.
                        warmup = make_requests(kind, args.warmup, rng, images)
                        timed = make_requests(kind, args.batches, rng, images)
                        row = measure(server, backend, transport, kind, clients, warmup, timed)
                        console.print(
                            f"{backend:10} {transport:4} {kind:6} x{clients}: "
                            f"{row.per_second:6.0f} inputs/s"
                        )
                        rows.append(row)
    title = (
        f"PostInputs, batches of {BATCH}, {args.batches} timed after {args.warmup} warm-up, "
        f"{IMAGE_SIDE}x{IMAGE_SIDE} JPEG"
    )
    print_table(rows, title)
    if args.markdown:
        args.markdown.write_text(markdown(rows))


if __name__ == "__main__":
    main()

"""Ingest throughput: images/s and texts/s through PostInputs on loopback.

    .venv/bin/python bench/ingest.py [--batches 20] [--warmup 3] [--clients 1,3]
                                     [--api-processes 1,2] [--postgres-url URL]
                                     [--markdown FILE] [--profile DIR]
    make bench      # the same, with a throwaway PostgreSQL from scripts/postgres.sh

For each backend (SQLite; PostgreSQL when a URL is given) it starts its own `modelmill serve`
(MODELMILL_WORKERS=0, a fresh data dir and database), makes a key with `modelmill token create`,
then sends batches of 128 inputs with the official clarifai-grpc stub over gRPC and over its
JSON channel (REST), from one client and then from several client threads at once. Images are
256x256 JPEGs drawn with Pillow (gradients, shapes, noise), every one different; texts are a
few sentences; each input carries one concept label, as a training upload does.

With `--api-processes 1,2` it starts two `modelmill serve` processes on the same data dir and
database (README "Running on several machines"), and measures each configuration once with the
client threads all on the first process and once spread round robin over both (thread t sends
to process t mod N: a client-side stand-in for a load balancer). A benchmark measures, it
asserts nothing about time; inputs the server rejects are counted per configuration and shown,
and the script then exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import queue
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


def start_server(modelmill: list[str], data_dir: Path, env: dict, log: Path) -> tuple:
    http_port, grpc_port = free_port(), free_port()
    with log.open("w") as output:  # the child keeps its own copy of the file
        process = subprocess.Popen(
            [*modelmill, "serve", "--data-dir", str(data_dir), "--http-port", str(http_port),
             "--grpc-port", str(grpc_port)],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, http_port, grpc_port


def wait_healthy(process: subprocess.Popen, http_port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=1).read()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"modelmill serve did not start:\n{log.read_text()}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def running_servers(
    database_url: str, profile: Path | None, label: str, processes: int = 1, workers: int = 0
) -> Iterator[list[Server]]:
    """`processes` `modelmill serve` processes on one data dir and one database, each on its own
    ports: the README's API processes side by side (there behind a load balancer)."""
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
    logs = [data_dir / f"server-{index}.log" for index in range(processes)]
    started = [start_server(modelmill, data_dir, env, log) for log in logs]
    profilers = []
    try:
        for (process, http_port, _), log in zip(started, logs, strict=True):
            wait_healthy(process, http_port, log)
        for index, (process, _, _) in enumerate(started):
            if profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
                py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                name = label if processes == 1 else f"{label}-{index}"
                # Collapsed stacks ("frame;frame;... count"): grep-able, and speedscope opens them.
                profilers.append(subprocess.Popen(
                    [py_spy, "record", "--pid", str(process.pid), "--rate", "100", "--format",
                     "raw", "--output", str(profile / f"{name}.collapsed.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
        yield [Server(process, http, grpc, key) for process, http, grpc in started]
    except BaseException:
        for (process, _, _), log in zip(started, logs, strict=True):
            tail = log.read_text().splitlines()[-40:]
            console.print(
                f"[red]{label} server {log.stem}, exit code {process.poll()}; its log:[/]"
            )
            console.print("\n".join(tail), markup=False, highlight=False)
        raise
    finally:
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=120)
        for process, _, _ in started:
            process.send_signal(signal.SIGINT)
        for process, _, _ in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


# ---- measuring --------------------------------------------------------------------------------


ACCEPTED = {
    status_code_pb2.INPUT_DOWNLOAD_SUCCESS,
    status_code_pb2.INPUT_DOWNLOAD_PENDING,
    status_code_pb2.INPUT_DOWNLOAD_IN_PROGRESS,
}


@dataclass
class Row:
    backend: str
    processes: int  # API processes the client threads were spread over
    transport: str
    kind: str
    clients: int
    inputs: int
    rejected: int  # inputs the server did not store (a failed call counts all of its batch)
    first_error: str
    seconds: float
    batch_ms: float  # median latency of one PostInputs call
    server_cpu: float  # servers' CPU seconds / wall seconds (2.0 = both cores busy)
    load: float  # the machine's 1-minute load average as the run started: other work competes
    load_after: float  # ... and as it ended

    @property
    def per_second(self) -> float:
        """Inputs stored per second."""
        return (self.inputs - self.rejected) / self.seconds

    @property
    def cpu_ms_per_input(self) -> float:
        """Server CPU per input: what the server itself costs, whatever else shares the cores."""
        return self.server_cpu * self.seconds * 1000 / max(self.inputs - self.rejected, 1)


def stub_for(server: Server, transport: str) -> service_pb2_grpc.V2Stub:
    # Made right before use: ClarifaiChannel keeps one global response deserializer, set by the
    # channel created last, and a stub captures it when built.
    if transport == "gRPC":
        channel = ClarifaiChannel.get_insecure_grpc_channel(base="127.0.0.1", port=server.grpc_port)
    else:
        channel = ClarifaiChannel.get_json_channel(base_url=f"http://127.0.0.1:{server.http_port}")
    return service_pb2_grpc.V2Stub(channel)


def post(
    stub: service_pb2_grpc.V2Stub, key: str, request: service_pb2.PostInputsRequest
) -> tuple[float, int, str]:
    """Seconds the call took, how many of its inputs the server rejected, and the first reason."""
    start = time.perf_counter()
    try:
        response = stub.PostInputs(request, metadata=(("authorization", f"Key {key}"),))
    except Exception as error:  # the JSON channel's errors carry the whole base64 request
        elapsed = time.perf_counter() - start
        return elapsed, len(request.inputs), f"{type(error).__name__} {str(error)[:200]}"
    elapsed = time.perf_counter() - start
    if response.status.code == status_code_pb2.SUCCESS:
        return elapsed, 0, ""
    if response.status.code == status_code_pb2.MIXED_STATUS:
        rejected = [i.status for i in response.inputs if i.status.code not in ACCEPTED]
        return elapsed, len(rejected), rejected[0].description
    return elapsed, len(request.inputs), response.status.description


def measure(
    servers: list[Server], processes: int, backend: str, transport: str, kind: str,
    clients: int, warmup: list, timed: list,
) -> Row:  # fmt: skip
    """Client thread t sends to API process t % `processes` (round robin: a client-side
    stand-in for a load balancer); the CPU column sums every running server, idle ones too."""
    stubs = [stub_for(server, transport) for server in servers[:processes]]
    key = servers[0].key
    for index, request in enumerate(warmup):
        _, rejected, reason = post(stubs[index % processes], key, request)
        if rejected:
            console.print(f"[yellow]warm-up batch: {rejected} rejected: {reason}[/]")
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for request in timed:
        todo.put(request)
    results: list[tuple[float, int, str]] = []

    def client(thread: int) -> None:
        while True:
            try:
                request = todo.get_nowait()
            except queue.Empty:
                return
            results.append(post(stubs[thread % processes], key, request))

    load = os.getloadavg()[0]
    cpu_before, start = sum(s.cpu_seconds() for s in servers), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    seconds = time.perf_counter() - start
    cpu = (sum(s.cpu_seconds() for s in servers) - cpu_before) / seconds
    errors = [reason for _, _, reason in results if reason]
    return Row(
        backend, processes, transport, kind, clients, len(timed) * BATCH,
        sum(rejected for _, rejected, _ in results), errors[0] if errors else "", seconds,
        statistics.median(latency for latency, _, _ in results) * 1000, cpu, load,
        os.getloadavg()[0],
    )  # fmt: skip


COLUMNS = (
    "backend", "API processes", "transport", "kind", "clients", "inputs", "rejected", "seconds",
    "inputs/s", "ms/batch (median)", "server CPU", "CPU ms/input", "load before → after",
)  # fmt: skip


def cells(r: Row) -> list[str]:
    return [
        r.backend, str(r.processes), r.transport, r.kind, str(r.clients), str(r.inputs),
        str(r.rejected), f"{r.seconds:.1f}", f"{r.per_second:.0f}", f"{r.batch_ms:.0f}",
        f"{r.server_cpu * 100:.0f}%", f"{r.cpu_ms_per_input:.2f}",
        f"{r.load:.1f} → {r.load_after:.1f}",
    ]  # fmt: skip


def comparisons(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """One line per configuration measured with several process counts: inputs/s of each, the
    ratio of the most processes to one, and the rejections of each."""
    counts = sorted({r.processes for r in rows})
    groups: dict[tuple, dict[int, Row]] = {}
    for r in rows:
        groups.setdefault((r.backend, r.transport, r.kind, r.clients), {})[r.processes] = r
    header = [
        "backend", "transport", "kind", "clients",
        *(f"inputs/s, {n} proc." for n in counts), f"{counts[-1]} vs {counts[0]}",
        "rejected", "load",
    ]  # fmt: skip
    lines = []
    for (backend, transport, kind, clients), by_count in groups.items():
        first, last = by_count[counts[0]], by_count[counts[-1]]
        lines.append([
            backend, transport, kind, str(clients),
            *(f"{by_count[n].per_second:.0f}" for n in counts),
            f"{last.per_second / first.per_second:.2f}×" if first.per_second else "–",
            " / ".join(str(by_count[n].rejected) for n in counts),
            " / ".join(f"{by_count[n].load:.1f}→{by_count[n].load_after:.1f}" for n in counts),
        ])  # fmt: skip
    return header, lines


def print_table(header: list[str] | tuple[str, ...], lines: list[list[str]], title: str) -> None:
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in COLUMNS[:4] else "right")
    for line in lines:
        table.add_row(*line)
    console.print(table)


def markdown(header: list[str] | tuple[str, ...], lines: list[list[str]]) -> str:
    rows = [header, ["---" if c in COLUMNS[:4] else "--:" for c in header], *lines]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run (of 128)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before each run")
    parser.add_argument(
        "--clients", default="1,3", help="client threads per run, comma-separated (1 = sequential)"
    )
    parser.add_argument(
        "--api-processes",
        default="1",
        help="API processes per run, comma-separated (e.g. 1,2): `modelmill serve` processes on "
        "one data dir and database; client thread t sends to process t mod N",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MODELMILL_BENCH_POSTGRES_URL", ""),
        help="a PostgreSQL server (SQLAlchemy URL); each run gets a new database on it "
        "[env MODELMILL_BENCH_POSTGRES_URL]",
    )
    parser.add_argument("--transports", default="gRPC,REST", help="comma-separated")
    parser.add_argument("--kinds", default="images,texts", help="comma-separated")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument(
        "--profile", type=Path, help="record each server with py-spy (pip install py-spy) here"
    )
    args = parser.parse_args()
    process_counts = [int(n) for n in args.api_processes.split(",")]

    rng = np.random.default_rng(0)
    images = ImageMaker(rng)
    backends = [("SQLite", "")]
    if args.postgres_url:
        backends.append(("PostgreSQL", args.postgres_url))
    rows: list[Row] = []
    for backend, url in backends:
        database = fresh_postgres_database(url) if url else contextlib.nullcontext("")
        # All processes run throughout; each configuration sends to the first N of them, so the
        # process counts are measured in turns, under the same load and on the same database.
        with (
            database as database_url,
            running_servers(database_url, args.profile, backend, max(process_counts)) as servers,
        ):
            for transport in args.transports.split(","):
                for kind in args.kinds.split(","):
                    for clients in (int(c) for c in args.clients.split(",")):
                        for processes in process_counts:
                            # Built before the clock starts: the timed part is the client call.
                            warmup = make_requests(kind, args.warmup, rng, images)
                            timed = make_requests(kind, args.batches, rng, images)
                            row = measure(
                                servers, processes, backend, transport, kind, clients,
                                warmup, timed,
                            )  # fmt: skip
                            console.print(
                                f"{backend:10} {processes}p {transport:4} {kind:6} x{clients}: "
                                f"{row.per_second:6.0f} inputs/s, {row.rejected} rejected"
                                + (f" ({row.first_error})" if row.rejected else "")
                            )
                            rows.append(row)
    title = (
        f"PostInputs, batches of {BATCH}, {args.batches} timed after {args.warmup} warm-up, "
        f"{IMAGE_SIDE}x{IMAGE_SIDE} JPEG"
    )
    tables = [(COLUMNS, [cells(r) for r in rows], title)]
    if len(process_counts) > 1:
        tables.append((*comparisons(rows), "The same configurations by API processes"))
    for header, lines, caption in tables:
        print_table(header, lines, caption)
    if args.markdown:
        args.markdown.write_text("\n".join(markdown(header, lines) for header, lines, _ in tables))
    rejected = [r for r in rows if r.rejected]
    for r in rejected:
        console.print(f"[red]{r.backend} x{r.processes}p {r.transport} {r.kind}: {r.first_error}")
    if rejected:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""One timed training of a template on synthetic data, as a worker runs a job: validate → train →
evaluate in a fresh process, timed from its start, in a quiet moment of the machine. Calibration
and the estimator benchmark are made of these.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelmill.training.contract import (
    Example,
    InputKind,
    Region,
    Template,
    TrainContext,
    TrainingData,
)
from modelmill.training.estimator import DataStats, Run, epochs_run, workload_of

CONCEPTS = ("alpha", "beta")
DISTINCT_INPUTS = 32  # synthetic files per stored size; trials cycle through them
IMAGE_ASPECT = 0.75  # stored images are 4:3
JPEG_QUALITY = 90
KIB = 1024  # ru_maxrss is in KiB on Linux


class CalibrationError(RuntimeError):
    """A trial that could not train; the message says why."""


@dataclass(frozen=True)
class Trial:
    """One short training: how many inputs, the template's params, the stored input size."""

    num_inputs: int
    params: dict[str, Any]  # a full Params model_dump
    source: int  # stored image width in pixels, or text length in characters


def stats_of(kind: InputKind, trial: Trial) -> DataStats:
    if kind == "image":
        return DataStats(trial.num_inputs, kind, mean_megapixels=_pixels(trial.source) / 1e6)
    return DataStats(trial.num_inputs, kind, mean_chars=float(trial.source))


def _pixels(side: int) -> int:
    return side * round(side * IMAGE_ASPECT)


# ---- synthetic data ----------------------------------------------------------------------------

WORDS = {
    "alpha": "river mountain forest valley cloud stone meadow rain wind lake snow hill",
    "beta": "engine wheel circuit battery signal motor cable sensor metal gear pump valve",
}
COMMON = "the a of and to in is that it with for on as was by this from at"


def _image(side: int, concept_index: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    coarse[..., concept_index] = 220  # one colour channel tells the concepts apart
    height = round(side * IMAGE_ASPECT)
    image = Image.fromarray(coarse).resize((side, height), Image.Resampling.BILINEAR)
    noise = rng.integers(-12, 13, (height, side, 3))
    pixels = np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _text(chars: int, concept: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        pool = (WORDS[concept] if rng.random() < 0.4 else COMMON).split()
        words.append(str(rng.choice(pool)))
    return " ".join(words).capitalize() + "."


def synthetic_inputs(kind: InputKind, source: int, directory: Path) -> list[str]:
    """DISTINCT_INPUTS image files (kept in `directory` for later trials) or texts; input i is
    labelled CONCEPTS[i % 2]."""
    if kind == "text":
        return [_text(source, CONCEPTS[i % 2], i) for i in range(DISTINCT_INPUTS)]
    paths = []
    for i in range(DISTINCT_INPUTS):
        path = directory / f"image-{source}-{i}.jpg"
        if not path.exists():
            path.write_bytes(_image(source, i % 2, i))
        paths.append(str(path))
    return paths


def _load_image(path: str):  # type: ignore[no-untyped-def]
    from PIL import Image

    with open(path, "rb") as file:  # like a blob read, then a decode
        return Image.open(io.BytesIO(file.read())).convert("RGB")


def examples(kind: InputKind, inputs: Sequence[str], count: int) -> list[Example]:
    """`count` labelled examples cycling through `inputs`, with every kind of label a template
    may read: concepts, a box region, a target text."""
    made = []
    for i in range(count):
        concept = CONCEPTS[i % 2]
        item = inputs[i % len(inputs)]
        load = (lambda path=item: _load_image(path)) if kind == "image" else (lambda t=item: t)
        made.append(
            Example(
                f"input-{i}",
                kind,
                load,
                {concept: 1.0},
                (Region({concept: 1.0}, box=(0.2, 0.2, 0.8, 0.8)),),
                target_text=f"This is about {concept}.",
            )
        )
    return made


# ---- running one trial -----------------------------------------------------------------------


def _embed(examples: Sequence[Example], model_id: str) -> np.ndarray:
    from modelmill.training.embedders import get_embedder

    return np.asarray(get_embedder(model_id).embed([e.load() for e in examples]), np.float32)


def train_once(
    template: Template,
    kind: InputKind,
    trial: Trial,
    inputs: Sequence[str],
    device: str,
    weights_dir: Path | None,
    work_dir: Path,
) -> dict[str, Any]:
    """validate → train → evaluate, as the training job runs them; returns what was measured
    beside the time: epochs actually run and peak memory."""
    params = template.Params(**trial.params)
    data = examples(kind, inputs, trial.num_inputs)
    invalid = template.validate(data, params)
    if invalid:
        raise CalibrationError(f"synthetic input {invalid[0].input_id} {invalid[0].reason}")
    checkpoints = work_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    ctx = TrainContext(
        device=device,
        work_dir=work_dir,
        checkpoint_dir=checkpoints,
        report=lambda progress, **metrics: None,
        cancelled=lambda: False,
        embeddings=_embed,
        weights_dir=weights_dir,
    )
    exclusive = bool(getattr(params, "concepts_mutually_exclusive", False))
    training = TrainingData(data, list(CONCEPTS), exclusive)
    artifacts = template.train(ctx, training, params)
    template.evaluate(ctx, training, params, artifacts)
    gpu = None
    if device == "cuda":
        import torch

        gpu = int(torch.cuda.max_memory_allocated())
    return {
        "epochs": epochs_run(checkpoints),
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB,
        "peak_gpu_memory_bytes": gpu,
    }


def waiting_s() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (Linux schedstat);
    0 where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _trial_process(connection: Any, *args: Any) -> None:
    try:
        measured = train_once(*args)
        # Since the process started, imports included: it was spawned for this trial.
        connection.send(("ok", {**measured, "waiting_s": waiting_s()}))
    except BaseException as error:  # anything: the parent reports it and goes on
        connection.send(("error", f"{type(error).__name__}: {error}"))


@dataclass(frozen=True)
class Quiet:
    """How a trial keeps other work on the machine out of its time. It starts when others use
    under `busy` of the CPUs (or after `wait_s`), and runs again (up to `attempts` times) when
    they used more while it ran, keeping the fastest attempt. What disturbance is left, the
    time its main thread waited for a CPU, is taken off its time (see `Measured`)."""

    busy: float = 0.25
    wait_s: float = 30.0
    attempts: int = 2
    sample_s: float = 1.0  # how long to watch the machine before deciding it is quiet


def _busy_seconds() -> float | None:
    """CPU-seconds the whole machine has been busy (all cores), from /proc/stat; None where
    there is no such file."""
    try:
        with open("/proc/stat") as stat:
            fields = [float(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, *rest = fields
    steal = rest[0] if rest else 0.0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU-seconds of this process and of its children that have ended."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def others_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over the next `seconds` (this process is idle meanwhile)."""
    before = _busy_seconds()
    time.sleep(seconds)
    after = _busy_seconds()
    if before is None or after is None:
        return 0.0
    return (after - before) / (seconds * (os.cpu_count() or 1))


def wait_until_quiet(quiet: Quiet) -> None:
    deadline = time.monotonic() + quiet.wait_s
    while others_busy(quiet.sample_s) > quiet.busy and time.monotonic() < deadline:
        time.sleep(2.0)


@dataclass(frozen=True)
class Measured:
    """A timed trial. `run.seconds` is its wall-clock time less `waited_s`, the time its main
    thread was runnable but waited for a CPU that other processes held: about what the trial
    takes on an idle machine (its own threads still share the CPUs as they would)."""

    run: Run
    wall_s: float
    waited_s: float
    interference: float  # share of the CPUs other processes used while the trial ran


def run_trial(
    template: Template,
    kind: InputKind,
    trial: Trial,
    device: str,
    weights_dir: Path | None,
    scratch: Path,
    in_process: bool = False,
    quiet: Quiet | None = None,
) -> Measured:
    """Time one trial, in a quiet moment. In a spawned process (as a worker runs a job) unless
    `in_process`, which skips process start-up and measures no memory: for tiny templates."""
    quiet = quiet or Quiet()
    inputs = synthetic_inputs(kind, trial.source, scratch)
    best: Measured | None = None
    for _ in range(quiet.attempts):
        wait_until_quiet(quiet)
        measured = _time_trial(
            template, kind, trial, inputs, device, weights_dir, scratch, in_process
        )
        if best is None or measured.run.seconds < best.run.seconds:
            best = measured  # a disturbance only ever adds time: the fastest attempt is truest
        if measured.interference <= quiet.busy:
            break
    assert best is not None
    return best


def _time_trial(
    template: Template,
    kind: InputKind,
    trial: Trial,
    inputs: Sequence[str],
    device: str,
    weights_dir: Path | None,
    scratch: Path,
    in_process: bool,
) -> Measured:
    work_dir = Path(tempfile.mkdtemp(prefix="trial-", dir=scratch))
    busy_before, own_before = _busy_seconds(), _own_cpu_seconds()
    try:
        if in_process:
            started, waited = time.perf_counter(), waiting_s()
            measured = train_once(template, kind, trial, inputs, device, weights_dir, work_dir)
            seconds = time.perf_counter() - started
            measured.update(peak_memory_bytes=None, waiting_s=waiting_s() - waited)
        else:
            seconds, measured = _spawned(
                template, kind, trial, inputs, device, weights_dir, work_dir
            )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    busy_after, own_after = _busy_seconds(), _own_cpu_seconds()
    interference = 0.0
    if busy_before is not None and busy_after is not None:
        # Our own time includes the trial's process: it has been waited for (joined) by now.
        others = (busy_after - busy_before) - (own_after - own_before)
        interference = max(0.0, others) / (seconds * (os.cpu_count() or 1))
    workload = workload_of(trial.params, stats_of(kind, trial))
    if measured["epochs"]:
        workload = replace(workload, num_epochs=measured["epochs"])
    waited = min(measured["waiting_s"], seconds)
    run = Run(
        workload,
        seconds - waited,
        measured["peak_memory_bytes"],
        measured["peak_gpu_memory_bytes"],
    )
    return Measured(run, seconds, waited, interference)


def _spawned(
    template: Template,
    kind: InputKind,
    trial: Trial,
    inputs: Sequence[str],
    device: str,
    weights_dir: Path | None,
    work_dir: Path,
) -> tuple[float, dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_trial_process,
        args=(sender, template, kind, trial, list(inputs), device, weights_dir, work_dir),
        name="modelmill-calibration-trial",
    )
    started = time.perf_counter()
    process.start()
    sender.close()
    try:
        outcome, value = receiver.recv()
    except EOFError:
        outcome, value = "error", f"the trial process died (exit code {process.exitcode})"
    seconds = time.perf_counter() - started  # the job is done when its result is, not at exit
    process.join()
    if outcome != "ok":
        raise CalibrationError(value)
    return seconds, value

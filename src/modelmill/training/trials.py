"""One timed training of a template on its task's sample data, through the same runner as the
worker's training job (validate → train → evaluate), in a fresh process timed from its start, in
a quiet moment of the machine. Calibration and the estimator benchmark are made of these.
"""

from __future__ import annotations

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

from modelmill.training import runner
from modelmill.training.contract import DataError, Example, InputKind, Template, TrainContext
from modelmill.training.estimator import (
    DataStats,
    Run,
    prompt_tokens_of,
    text_chars,
    workload_of,
)
from modelmill.training.registry import task_of
from modelmill.training.runner import TrainingPlan
from modelmill.training.tasks.samples import image_height

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
    return side * image_height(side)


# ---- running one trial -----------------------------------------------------------------------


class _Embeddings:
    """Each input embedded once per trial, as the training job's embedding cache does for a
    dataset of distinct inputs: its training embeds them, its evaluation finds them cached.
    `computing_s`: the time computing them took."""

    def __init__(self) -> None:
        self.vectors: dict[tuple[str, str], np.ndarray] = {}
        self.computing_s = 0.0

    def __call__(self, examples: Sequence[Example], model_id: str) -> np.ndarray:
        from modelmill.training.embedders import get_embedder

        embedder = get_embedder(model_id)
        missing = [e for e in examples if (e.input_id, model_id) not in self.vectors]
        started = time.perf_counter()
        for example, vector in zip(
            missing, embedder.embed([e.load() for e in missing]), strict=True
        ):
            self.vectors[example.input_id, model_id] = np.asarray(vector, np.float32)
        self.computing_s += time.perf_counter() - started
        rows = [self.vectors[e.input_id, model_id] for e in examples]
        return np.stack(rows) if rows else np.zeros((0, embedder.dim), np.float32)


def train_once(
    template: Template,
    kind: InputKind,
    trial: Trial,
    device: str,
    weights_dir: Path | None,
    work_dir: Path,
) -> dict[str, Any]:
    """The task's sample data, then the training runner as the training job runs it; returns
    what was measured beside the time: epochs actually run, peak memory, the seconds spent
    computing embeddings (transfer learning) and making the sample data (not part of a
    training: the caller takes them off)."""
    made = time.perf_counter()
    data = task_of(template.model_type_id).sample_data(kind, trial.num_inputs, trial.source)
    chars = [
        text_chars(e.load(), e.target_text, e.messages) for e in data.examples if kind == "text"
    ]
    making_s = time.perf_counter() - made
    params = template.Params(**trial.params)
    checkpoints = work_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    embeddings = _Embeddings()
    ctx = TrainContext(
        device=device,
        work_dir=work_dir,
        checkpoint_dir=checkpoints,
        report=lambda progress, **metrics: None,
        cancelled=lambda: False,
        embeddings=embeddings,
        weights_dir=weights_dir,
    )
    plan = TrainingPlan(
        template.model_type_id,
        template.name,
        list(data.concepts),
        bool(getattr(params, "concepts_mutually_exclusive", False)),
        params.model_dump(mode="json", by_alias=True),
        tolerance_percent=0.0,  # sample data is all usable: anything else is a bug to report
    )
    try:
        outcome = runner.run(template, plan, data.examples, ctx)
    except DataError as error:
        raise CalibrationError(error.description) from None
    gpu = None
    if device == "cuda":
        import torch

        gpu = int(torch.cuda.max_memory_allocated())
    import torch

    return {
        "threads": torch.get_num_threads(),
        # what the examples really hold (a text-to-text pair is a prompt and its completion)
        "mean_chars": sum(chars) / len(chars) if chars else None,
        "epochs": outcome.result.epochs_run,
        "embed_s": embeddings.computing_s if embeddings.vectors else None,
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB,
        "peak_gpu_memory_bytes": gpu,
        "making_s": making_s,
    }


def waiting_s() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (Linux schedstat);
    0 where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _trial_process(connection: Any, threads: int, *args: Any) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)  # as a job's child sets them
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
    threads: int  # the CPU threads torch computed with


def run_trial(
    template: Template,
    kind: InputKind,
    trial: Trial,
    device: str,
    weights_dir: Path | None,
    scratch: Path,
    in_process: bool = False,
    quiet: Quiet | None = None,
    threads: int = 0,
) -> Measured:
    """Time one trial, in a quiet moment. In a spawned process (as a worker runs a job, with
    `threads` CPU threads: 0 leaves torch's default) unless `in_process`, which skips process
    start-up and measures no memory: for tiny templates."""
    quiet = quiet or Quiet()
    best: Measured | None = None
    for _ in range(quiet.attempts):
        wait_until_quiet(quiet)
        measured = _time_trial(
            template, kind, trial, device, weights_dir, scratch, in_process, threads
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
    device: str,
    weights_dir: Path | None,
    scratch: Path,
    in_process: bool,
    threads: int,
) -> Measured:
    work_dir = Path(tempfile.mkdtemp(prefix="trial-", dir=scratch))
    busy_before, own_before = _busy_seconds(), _own_cpu_seconds()
    try:
        if in_process:
            started, waited = time.perf_counter(), waiting_s()
            measured = train_once(template, kind, trial, device, weights_dir, work_dir)
            seconds = time.perf_counter() - started
            measured.update(peak_memory_bytes=None, waiting_s=waiting_s() - waited)
        else:
            seconds, measured = _spawned(
                template, kind, trial, device, weights_dir, work_dir, threads
            )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    busy_after, own_after = _busy_seconds(), _own_cpu_seconds()
    interference = 0.0
    if busy_before is not None and busy_after is not None:
        # Our own time includes the trial's process: it has been waited for (joined) by now.
        others = (busy_after - busy_before) - (own_after - own_before)
        interference = max(0.0, others) / (seconds * (os.cpu_count() or 1))
    stats = stats_of(kind, trial)
    if measured["mean_chars"] is not None:
        stats = replace(stats, mean_chars=measured["mean_chars"])
    workload = workload_of(
        trial.params, stats, measured["epochs"] or None, prompt_tokens_of(template, trial.params)
    )
    seconds -= measured["making_s"]
    waited = min(measured["waiting_s"], seconds)
    run = Run(
        workload,
        seconds - waited,
        measured["peak_memory_bytes"],
        measured["peak_gpu_memory_bytes"],
        embed_s=measured["embed_s"],
    )
    return Measured(run, seconds, waited, interference, measured["threads"])


def _spawned(
    template: Template,
    kind: InputKind,
    trial: Trial,
    device: str,
    weights_dir: Path | None,
    work_dir: Path,
    threads: int,
) -> tuple[float, dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_trial_process,
        args=(sender, threads, template, kind, trial, device, weights_dir, work_dir),
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

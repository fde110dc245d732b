"""Calibration: short real trainings of a template on synthetic data at several input counts,
epochs, image sizes, text lengths and batch sizes (each a timed trial, see trials.py), planned so
that every term of the cost model can be told apart; `estimator.fit` turns them into coefficients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelmill.training.contract import InputKind, Template
from modelmill.training.estimator import (
    BATCH_PARAMS,
    EPOCH_PARAMS,
    IMAGE_SIZE_PARAMS,
    TIME_TERMS,
    Workload,
    find_param,
    fit,
    leave_one_out,
    param_number,
    prompt_tokens_of,
    workload_of,
)
from modelmill.training.trials import Measured, Quiet, Trial, run_trial, stats_of

SOURCE_SIDES = (320, 800, 1600)  # stored image widths: 0.08, 0.48 and 1.9 megapixels
TEXT_CHARS = (80, 400, 1500)  # stored text lengths; for texts this is also the model size knob
EPOCH_LEVELS = (1, 2, 4)
# Of the template's default image size: people train above it too, and the cost per pixel is
# not constant (bench/RESULTS.md), so calibration brackets the sizes in use, not extrapolates.
SIZE_FRACTIONS = (0.5, 1.0, 1.5)
SIZE_STEP = 32
BATCH_DIVISOR = 4  # the small batch level is the default divided by this
TIME_LEVELS_S = (6.0, 12.0, 24.0)  # seconds beyond start-up each trial aims at
PILOT_INPUTS = (16, 48)
MIN_INPUTS, MAX_INPUTS = 24, 4000  # 24: some inputs left for validation and several steps
# Input counts of trials whose time level MIN_INPUTS already overshoots (a slow model: SmolLM2
# takes ~1 s an input): × these by time level, so the input count still varies between trials
# and the fit can tell the per-epoch cost from the per-input-epoch one.
CLAMPED_INPUT_FACTORS = (1.0, 1.5, 2.0)

# The trials after the two pilots: level indexes of (epochs, image size, stored size, batch,
# time). Every pair of knobs meets at several levels, so each term of the cost model can be told
# apart from the others; rows that differ only in knobs a template lacks collapse into one.
DESIGN = (
    (0, 0, 0, 0, 1),
    (1, 1, 1, 0, 0),
    (2, 2, 2, 0, 2),
    (0, 1, 2, 1, 2),
    (1, 2, 0, 1, 1),
    (2, 0, 1, 1, 0),
    (0, 2, 1, 0, 0),
    (1, 0, 2, 0, 2),
    (2, 1, 0, 0, 1),
    (1, 1, 1, 1, 2),
)


# ---- knobs: the cost-driving params a template has -------------------------------------------


def _bounds(template: Template, path: tuple[str, ...]) -> tuple[float, float]:
    low, high = 1.0, float("inf")
    info = template.Params.model_fields.get(path[0]) if len(path) == 1 else None
    for meta in info.metadata if info else ():
        low = float(getattr(meta, "ge", None) or low)
        high = float(getattr(meta, "le", None) or high)
    return low, high


def _levels(template: Template, path: tuple[str, ...], wanted: Sequence[float]) -> tuple[int, ...]:
    low, high = _bounds(template, path)
    return tuple(int(min(max(value, low), high)) for value in wanted)


def _with(values: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `values` with the value at `path` (one or two keys deep) replaced."""
    if len(path) == 1:
        return {**values, path[0]: value}
    return {**values, path[0]: {**values[path[0]], path[1]: value}}


@dataclass(frozen=True)
class Knobs:
    """Where a template keeps its epochs, image size and batch size, and the levels to try;
    the tokens its prompt format adds to each text (the same in every trial)."""

    defaults: dict[str, Any]
    epochs: tuple[tuple[str, ...], tuple[int, ...]] | None
    size: tuple[tuple[str, ...], tuple[int, ...]] | None
    batch: tuple[tuple[str, ...], tuple[int, ...]] | None
    prompt_tokens: int = 0

    @classmethod
    def of(cls, template: Template, kind: InputKind, overrides: dict[str, Any]) -> Knobs:
        defaults = template.Params(**overrides).model_dump(mode="json")
        epochs_path, _ = find_param(defaults, EPOCH_PARAMS)
        size_path, size = find_param(defaults, IMAGE_SIZE_PARAMS) if kind == "image" else ((), 0)
        batch_path, batch = find_param(defaults, BATCH_PARAMS)
        return cls(
            defaults,
            (epochs_path, _levels(template, epochs_path, EPOCH_LEVELS)) if epochs_path else None,
            (
                size_path,
                _levels(
                    template,
                    size_path,
                    [
                        max(SIZE_STEP, round(size * f / SIZE_STEP) * SIZE_STEP)
                        for f in SIZE_FRACTIONS
                    ],
                ),
            )
            if size_path
            else None,
            (batch_path, _levels(template, batch_path, [batch, max(1, batch // BATCH_DIVISOR)]))
            if batch_path
            else None,
            prompt_tokens_of(template, defaults),
        )

    def params(self, epochs: int, size: int, batch: int) -> dict[str, Any]:
        """Params at these level indexes (ignored for knobs the template lacks)."""
        values = self.defaults
        for knob, level in ((self.epochs, epochs), (self.size, size), (self.batch, batch)):
            if knob is not None:
                values = _with(values, knob[0], knob[1][level])
        return values

    def workload(self, kind: InputKind, trial: Trial) -> Workload:
        return workload_of(trial.params, stats_of(kind, trial), prompt_tokens=self.prompt_tokens)


def plan(
    knobs: Knobs, kind: InputKind, seconds_per_input: float, time_scale: float = 1.0
) -> list[Trial]:
    """The DESIGN trials, each with as many inputs as fill its time level, given the pilots'
    marginal `seconds_per_input` (at the smallest epochs level and the largest image size).
    A row that a template's missing knobs make a repeat takes the next time level instead, so
    a template with few knobs still gets trials of several input counts; where MIN_INPUTS
    overshoots a time level, the count follows the level from there (CLAMPED_INPUT_FACTORS)."""
    sources = SOURCE_SIDES if kind == "image" else TEXT_CHARS
    pilot = pilot_trial(knobs, kind, PILOT_INPUTS[1])
    pilot_cost = _relative_cost(knobs.workload(kind, pilot))
    trials: list[Trial] = []
    for epochs, size, source, batch, level in DESIGN:
        draft = Trial(1, knobs.params(epochs, size, batch), sources[source])
        per_input = seconds_per_input * _relative_cost(knobs.workload(kind, draft)) / pilot_cost
        for shift in range(len(TIME_LEVELS_S)):
            at = (level + shift) % len(TIME_LEVELS_S)
            count = TIME_LEVELS_S[at] * time_scale / max(per_input, 1e-6)
            if count < MIN_INPUTS:
                count = MIN_INPUTS * CLAMPED_INPUT_FACTORS[at]
            count = min(count, MAX_INPUTS)
            trial = replace(draft, num_inputs=2 * round(count / 2))  # even: both concepts
            if trial not in trials:
                trials.append(trial)
                break
    return trials


def _relative_cost(workload: Workload) -> float:
    """Epochs × model size: how the dominant term scales, to size trials before any fit."""
    return workload.num_epochs * workload.size_units


def pilot_trial(knobs: Knobs, kind: InputKind, num_inputs: int) -> Trial:
    sources = SOURCE_SIDES if kind == "image" else TEXT_CHARS
    size_level = len(knobs.size[1]) - 1 if knobs.size else 0
    return Trial(num_inputs, knobs.params(0, size_level, 0), sources[1])


# ---- a whole calibration -----------------------------------------------------------------------

# (trials done, trials planned, what runs now); called before each trial and once at the end.
OnTrial = Callable[[int, int, str], None]


def describe(kind: InputKind, trial: Trial, prompt_tokens: int = 0) -> str:
    w = workload_of(trial.params, stats_of(kind, trial), prompt_tokens=prompt_tokens)
    stored = f"{trial.source}px" if kind == "image" else f"{trial.source} chars"
    model = (
        f"{(w.size_units * 224 * 224) ** 0.5:.0f}px"
        if kind == "image"
        else (f"{w.size_units * 128:.0f} tokens")
    )
    batch = f", batch {w.batch_size}" if w.batch_size else ""
    configured = round(param_number(find_param(trial.params, EPOCH_PARAMS)[1]) or 1)
    # an epoch that repeats small data (min_samples_per_epoch) is several passes
    passes = f" ({w.num_epochs} passes)" if w.num_epochs != configured else ""
    epochs = f"{configured} epochs{passes}"
    return f"{w.num_inputs} inputs × {epochs}, {model}, stored {stored}{batch}"


def calibrate(
    template: Template,
    kind: InputKind,
    device: str,
    weights_dir: Path | None,
    scratch: Path,
    overrides: dict[str, Any] | None = None,
    time_scale: float = 1.0,
    on_trial: OnTrial | None = None,
    in_process: bool = False,
    quiet: Quiet | None = None,
    threads: int = 0,
) -> list[Measured]:
    """An untimed warm-up trial, then two pilot trials that size the DESIGN trials; returns
    every measured trial, pilots included.

    `overrides` are params set in every trial (e.g. pretrained_weights None where no weights
    can be had: training time is the same); `time_scale` scales each trial's target length;
    `threads` are the CPU threads a job computes with (0: torch's default).
    """
    knobs = Knobs.of(template, kind, overrides or {})
    report = on_trial or (lambda done, total, what: None)

    def run(trial: Trial) -> Measured:
        return run_trial(
            template, kind, trial, device, weights_dir, scratch, in_process, quiet, threads
        )

    def measure(trials: list[Trial], done: int, total: int) -> list[Measured]:
        measured = []
        for index, trial in enumerate(trials, start=done):
            report(index, total, describe(kind, trial, knobs.prompt_tokens))
            measured.append(run(trial))
        return measured

    planned = len(PILOT_INPUTS) + len(DESIGN)
    # An untimed first training: what only an install's first training pays (weights converted
    # into the weights folder: SmolLM2's GGUF, ~15 s) is no cost of every training (a first
    # pilot that paid it put SmolLM2's start-up term at 23.5 s, 17.2 s without).
    warm_up = pilot_trial(knobs, kind, PILOT_INPUTS[0])
    report(0, planned, f"warming up: {describe(kind, warm_up, knobs.prompt_tokens)}")
    run(warm_up)
    pilots = measure([pilot_trial(knobs, kind, count) for count in PILOT_INPUTS], 0, planned)
    small, large = (m.run.seconds for m in pilots)
    marginal = (large - small) / (PILOT_INPUTS[1] - PILOT_INPUTS[0])
    # Timing noise can make the difference tiny or negative; a quarter of the average time
    # per input is a floor that keeps trial sizes sane.
    seconds_per_input = max(marginal, large / PILOT_INPUTS[1] / 4)
    trials = plan(knobs, kind, seconds_per_input, time_scale)
    total = len(pilots) + len(trials)
    measured = pilots + measure(trials, len(pilots), total)
    report(total, total, "done")
    return measured


def fit_report(title: str, measured: Sequence[Measured]) -> list[Any]:
    """What `modelmill calibrate` prints (rich renderables): each trial's seconds (wall clock,
    less what it waited for CPUs others held), the fit's, and those of a fit without that trial
    (the honest error), then the coefficients."""
    from rich.table import Table

    runs = [m.run for m in measured]
    model = fit(runs)
    held_out = leave_one_out(runs)
    trials = Table(title=title, title_justify="left")
    for column in (
        "inputs",
        "epochs",
        "model size",
        "stored",
        "batch",
        "wall s",
        "waited s",
        "measured s",
        "fit s",
        "left out s",
        "error",
        "others' CPU",
    ):
        trials.add_column(column, justify="right")
    for item, predicted in zip(measured, held_out, strict=True):
        w, seconds = item.run.workload, item.run.seconds
        fitted = model.seconds(w) if model else float("nan")
        trials.add_row(
            str(w.num_inputs),
            str(w.num_epochs),
            f"{w.size_units:.2f}",
            f"{w.source_units:.2f}",
            str(w.batch_size or "-"),
            f"{item.wall_s:.1f}",
            f"{item.waited_s:.1f}",
            f"{seconds:.1f}",
            f"{fitted:.1f}",
            f"{predicted:.1f}",
            f"{(predicted - seconds) / seconds:+.0%}",
            f"{item.interference:.0%}",
        )
    coefficients = Table(title=f"{title}: seconds = Σ coefficient × term", title_justify="left")
    coefficients.add_column("term")
    coefficients.add_column("coefficient", justify="right")
    coefficients.add_column("why")
    for term in TIME_TERMS:
        value = model.coefficients.get(term.name, 0.0) if model else 0.0
        coefficients.add_row(term.name, f"{value:.4g}", term.why)
    errors = [
        abs(p - r.seconds) / r.seconds
        for p, r in zip(held_out, runs, strict=True)
        if not math.isnan(p)
    ]
    summary = (
        f"{len(runs)} trials; mean error {model.error:.1%} fitted, "
        f"{sum(errors) / max(len(errors), 1):.1%} predicting each trial left out of the fit"
        if model
        else "too few trials to fit"
    )
    return [trials, coefficients, summary]

"""Estimator error: for each template (and input kind), predict the time of trainings at held-out
points (input counts, epochs, image sizes, stored sizes and batch sizes that no calibration trial
used), then run them on this machine and compare.

    .venv/bin/python bench/estimator_error.py [--template NAME ...] [--param KEY=VALUE ...]
                                              [--data-dir DIR] [--points 4] [--target-s 20]

The estimates come from the calibration that ships for this hardware profile, or from DIR's
database when --data-dir is given (after `modelmill calibrate --data-dir DIR`). Each held-out
training runs as a calibration trial does: validate → train → evaluate on synthetic data, in a
fresh process, timed from its start, when other processes leave the CPUs quiet. Prints a markdown
table per template and the mean absolute percentage error (MAPE); the aim is ≤ 10 %.
A benchmark measures: it asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

from modelmill.training.calibrate import SIZE_STEP, Knobs, describe
from modelmill.training.contract import InputKind, Template
from modelmill.training.estimator import (
    IMAGE_SIZE_PARAMS,
    CostModel,
    find_param,
    fit,
    input_kinds,
    model_key,
    shipped_runs,
)
from modelmill.training.hardware import this_hardware
from modelmill.training.trials import Trial, run_trial

# Held-out points, between and beyond the calibration levels (calibration: epochs 1, 2, 4; image
# sizes 0.5, 1.0, 1.5 × the default; stored widths 320, 800, 1600 px; texts 80, 400, 1500
# chars; batches the default and a quarter of it): (epochs, image size × default, stored size,
# batch ÷, share of the target time).
HELD_OUT = (
    (3, 0.625, 1, 1, 1.0),
    (5, 0.875, 0, 2, 0.6),
    (2, 1.25, 2, 1, 1.4),
    (3, 1.0, 0, 2, 0.8),
    (6, 0.5, 2, 1, 1.2),
    (1, 0.875, 1, 3, 1.0),
)
STORED_IMAGE_WIDTHS = (480, 1200, 640)
STORED_TEXT_CHARS = (250, 900, 150)
MIN_INPUTS, MAX_INPUTS = 8, 4000


def held_out_trials(
    knobs: Knobs, kind: InputKind, model: CostModel, points: int, target_s: float
) -> list[Trial]:
    trials = []
    for epochs, size, stored, divisor, share in HELD_OUT[:points]:
        params = knobs.defaults
        if knobs.epochs:
            params = _set(params, knobs.epochs[0], epochs)
        if knobs.size:
            default = find_param(knobs.defaults, IMAGE_SIZE_PARAMS)[1]
            params = _set(params, knobs.size[0], max(SIZE_STEP, round(default * size / 16) * 16))
        if knobs.batch:
            params = _set(params, knobs.batch[0], max(1, knobs.batch[1][0] // divisor))
        source = (STORED_IMAGE_WIDTHS if kind == "image" else STORED_TEXT_CHARS)[stored]
        trial = Trial(2, params, source)
        # As many inputs as the model says fill this point's share of the target time: the
        # model picks the size of the test, never its answer.
        one, two = (
            model.seconds(knobs.workload(kind, Trial(n, params, source))) for n in (100, 200)
        )
        per_input = max((two - one) / 100, 1e-6)
        count = (target_s * share - (one - 100 * per_input)) / per_input
        count = 2 * round(min(max(count, MIN_INPUTS), MAX_INPUTS) / 2)
        trials.append(Trial(count, trial.params, source))
    return trials


def _set(values: dict, path: tuple[str, ...], value: object) -> dict:  # type: ignore[type-arg]
    if len(path) == 1:
        return {**values, path[0]: value}
    return {**values, path[0]: {**values[path[0]], path[1]: value}}


def model_for(
    template: Template, kind: InputKind, profile: str, data_dir: Path | None
) -> CostModel | None:
    key = model_key(template, kind)
    if data_dir is None:
        return fit(shipped_runs(profile).get(key, []))
    from modelmill.services import Env
    from modelmill.services.estimates import runs_for
    from modelmill.settings import Settings

    return fit(runs_for(Env.open(Settings(data_dir=data_dir)), key, profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--template",
        action="append",
        default=[],
        help="template name or alias (repeat; default: all)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        help="KEY=VALUE for templates that have KEY, e.g. pretrained_weights=None",
    )
    parser.add_argument("--data-dir", type=Path, help="use this server's calibration")
    parser.add_argument("--points", type=int, default=4, help="held-out trainings per template")
    parser.add_argument(
        "--target-s",
        type=float,
        default=20.0,
        help="seconds beyond start-up each held-out training aims at",
    )
    args = parser.parse_args()

    from modelmill.services.calibrations import templates_named

    overrides = dict(item.split("=", 1) for item in args.param)
    hardware = this_hardware("cpu")
    print(
        f"# Estimator error on {hardware.profile} ({os.cpu_count()} cores, "
        f"{platform.platform()}, Python {sys.version.split()[0]})\n"
    )
    all_errors = []
    with tempfile.TemporaryDirectory(prefix="estimator-bench-") as scratch:
        for template in templates_named(args.template):
            own = {k: v for k, v in overrides.items() if k in template.Params.model_fields}
            for kind in input_kinds(template):
                title = model_key(template, kind)
                model = model_for(template, kind, hardware.profile, args.data_dir)
                if model is None:
                    print(f"## {title}\n\nnot calibrated for {hardware.profile}\n")
                    continue
                knobs = Knobs.of(template, kind, own)
                print(f"## {title}\n")
                print(
                    "| held-out training | predicted s | measured s | error | wall s | waited s "
                    "| others' CPU |"
                )
                print("|---|---:|---:|---:|---:|---:|---:|")
                errors = []
                for trial in held_out_trials(knobs, kind, model, args.points, args.target_s):
                    measured = run_trial(template, kind, trial, "cpu", None, Path(scratch))
                    actual = measured.run.seconds
                    predicted = model.seconds(measured.run.workload)
                    errors.append(abs(predicted - actual) / actual)
                    print(
                        f"| {describe(kind, trial, knobs.prompt_tokens)} | {predicted:.1f} | "
                        f"{actual:.1f} | "
                        f"{(predicted - actual) / actual:+.1%} | {measured.wall_s:.1f} | "
                        f"{measured.waited_s:.1f} | {measured.interference:.0%} |",
                        flush=True,
                    )
                all_errors += errors
                print(f"\nMAPE {sum(errors) / len(errors):.1%} over {len(errors)} trainings\n")
    if all_errors:
        mape = sum(all_errors) / len(all_errors)
        worst = max(all_errors)
        print(
            f"**Overall MAPE {mape:.1%}** over {len(all_errors)} held-out trainings "
            f"(worst {worst:.1%}; aim ≤ 10 %)"
        )
    if not all_errors or math.isnan(sum(all_errors)):
        sys.exit(1)


if __name__ == "__main__":
    main()

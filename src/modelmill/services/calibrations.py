"""Calibration as a use case: time short trainings of the registered templates on this machine,
keep the runs as this hardware's calibration (the estimates refit from them), and write them as a
calibration file like those modelmill ships."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from modelmill.services import Env
from modelmill.services.estimates import CALIBRATION
from modelmill.services.training_runs import record_runs
from modelmill.store.tables import TrainingRun
from modelmill.training.calibrate import calibrate
from modelmill.training.contract import DataError, InputKind, Template
from modelmill.training.estimator import (
    Run,
    calibration_document,
    input_kinds,
    model_key,
)
from modelmill.training.hardware import resolve_device, this_hardware
from modelmill.training.registry import TEMPLATES
from modelmill.training.trials import CalibrationError, Measured, Quiet


@dataclass(frozen=True)
class Calibrated:
    """One template and input kind after `calibrate_templates`: its trials, or why none ran."""

    template: Template
    kind: InputKind
    measured: list[Measured]
    skipped: str = ""


def templates_named(names: Sequence[str]) -> list[Template]:
    """Registered templates by name or alias (all of them for no names); ValueError names the
    known ones when one is not."""
    if not names:
        return list(TEMPLATES)
    chosen = []
    for name in names:
        found = [t for t in TEMPLATES if name in (t.name, *t.aliases)]
        if not found:
            known = ", ".join(sorted({t.name for t in TEMPLATES}))
            raise ValueError(f"no template '{name}'; known: {known}")
        chosen += [t for t in found if t not in chosen]
    return chosen


def calibrate_templates(
    env: Env,
    templates: Sequence[Template],
    overrides: dict[str, Any],
    time_scale: float = 1.0,
    on_trial: Callable[[str, int, int, str], None] | None = None,
    quiet: Quiet | None = None,
) -> list[Calibrated]:
    """Calibrate each template on this machine for each kind of input it takes, and keep the
    runs: they replace earlier calibrations of it on this hardware (finished trainings stay).

    `overrides` (e.g. {"pretrained_weights": "None"}) apply to templates whose Params have them;
    `on_trial(model key, done, total, what)` reports progress; `quiet` says how trials keep other
    work on the machine out of their times.
    """

    device = resolve_device(env.settings.device)
    hardware = this_hardware(device)
    weights_dir = env.settings.resolved_weights_dir
    results = []
    with tempfile.TemporaryDirectory(prefix="modelmill-calibration-") as scratch:
        for template in templates:
            own = {k: v for k, v in overrides.items() if k in template.Params.model_fields}
            try:
                template.check_params(template.Params(**own), weights_dir)
            except DataError as error:
                results += [
                    Calibrated(template, k, [], error.description) for k in input_kinds(template)
                ]
                continue
            for kind in input_kinds(template):
                key = model_key(template, kind)
                report = functools.partial(on_trial, key) if on_trial else None
                try:
                    measured = calibrate(
                        template,
                        kind,
                        device,
                        weights_dir,
                        Path(scratch),
                        own,
                        time_scale,
                        report,
                        quiet=quiet,
                        threads=env.settings.resolved_job_threads,  # what a job computes with
                    )
                except CalibrationError as error:
                    results.append(Calibrated(template, kind, [], str(error)))
                    continue
                with env.db.session() as session:
                    session.execute(
                        delete(TrainingRun).where(
                            TrainingRun.model_key == key,
                            TrainingRun.hardware_profile == hardware.profile,
                            TrainingRun.source == CALIBRATION,
                        )
                    )
                record_runs(env, template, kind, hardware, [m.run for m in measured])
                results.append(Calibrated(template, kind, measured))
    return results


def export_calibration(path: Path, results: Sequence[Calibrated], **about: Any) -> None:
    """Write (or update, for the same hardware profile) a calibration file like the ones
    modelmill ships in training/calibration/: the runs, and the coefficients for people."""
    profile = this_hardware(_device_of(results)).profile
    runs = {}
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("profile") == profile:
            runs = {k: [Run.from_json(r) for r in v["runs"]] for k, v in previous["models"].items()}
    for result in results:
        if result.measured:
            runs[model_key(result.template, result.kind)] = [m.run for m in result.measured]
    document = calibration_document(profile, runs, machine=_machine(), **about)
    path.write_text(json.dumps(document, indent=1) + "\n")


def _machine() -> dict[str, Any]:
    """What the calibration ran on, for the people reading the file."""
    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.now(UTC).date().isoformat(),
    }


def _device_of(results: Sequence[Calibrated]) -> str:
    gpu = any(m.run.peak_gpu_memory_bytes for r in results for m in r.measured)
    return "cuda" if gpu else "cpu"

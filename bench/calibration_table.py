"""The shipped calibration, template by template: how many trials, how long they took, and how
well the cost model fits them, in sample and leave-one-out (each trial predicted by a fit to the
others: the honest error, the one tests/training/test_estimator.py holds under 25 %).

    PYTHONPATH=src .venv/bin/python bench/calibration_table.py [CALIBRATION_FILE]

Reads the file, fits nothing new: it reports what `modelmill calibrate --export` wrote. Prints a
markdown table. A benchmark measures: it asserts nothing.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from modelmill.training.estimator import CALIBRATION_DIR, Run, fit, leave_one_out


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else CALIBRATION_DIR / "cpu-x86_64-2.json"
    document = json.loads(path.read_text())
    print(f"{path.name}: profile {document['profile']}, {document['machine']}\n")
    print("| model key | trials | trial seconds (sum) | fitted error | leave-one-out error |")
    print("|---|--:|--:|--:|--:|")
    for key, entry in sorted(document["models"].items()):
        runs = [Run.from_json(r) for r in entry["runs"]]
        model = fit(runs)
        if model is None:
            print(f"| {key} | {len(runs)} | – | too few runs | – |")
            continue
        fitted = [abs(model.seconds(r.workload) - r.seconds) / r.seconds for r in runs]
        held = [
            abs(p - r.seconds) / r.seconds for p, r in zip(leave_one_out(runs), runs, strict=True)
        ]
        print(
            f"| {key} | {len(runs)} | {sum(r.seconds for r in runs):,.0f} | "
            f"{100 * statistics.mean(fitted):.1f} % | {100 * statistics.mean(held):.1f} % |"
        )


if __name__ == "__main__":
    main()

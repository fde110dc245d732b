"""CI runs every tier: `.ci/run` sets CI=true, and under it scripts/run-tests.sh fails a tier that
collects no tests instead of passing it as empty.

Run: `.venv/bin/pytest tests/test_ci.py -q`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTHING = "tests/domain -k no_test_has_this_name"


def run_tier(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(
        MODELMILL_TEST_PYTHON=sys.executable,
        MODELMILL_TEST_ARTIFACTS=str(tmp_path),
        PYTEST_ARGS=NOTHING,
        **({"CI": "true"} if ci else {}),
    )
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "run-tests.sh"), "default"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_a_tier_that_collects_nothing_fails_only_under_ci(tmp_path: Path, ci: bool) -> None:
    result = run_tier(tmp_path, ci)

    summary = (tmp_path / "summary.txt").read_text()
    if ci:
        assert result.returncode != 0, result.stdout
        assert "FAILED (no tests collected)" in summary
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok (no tests)" in summary


def test_the_ci_entry_point_runs_under_ci_true() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "export CI=true" in [line.strip() for line in lines]

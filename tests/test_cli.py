"""`modelmill estimate`: the API's training-time estimate from the command line, with the same
15-minute rounding, cost and memory helpers as the web UI, and clear errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelmill.cli import app
from modelmill.services import Env
from modelmill.services.estimates import estimate_workload
from modelmill.settings import Settings
from modelmill.training.estimator import DataStats
from modelmill.training.registry import TEMPLATES

ADVANCED, NO_BASE_MODEL = "HuggingFace_AdvancedConfig", 'model_config={"torch_dtype": "float32"}'
WIDE = {"COLUMNS": "400"}  # one line per message: rich wraps at the terminal's width


def run(data_dir: Path, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["estimate", *args, "--data-dir", str(data_dir)], env={**WIDE, **env}
    )
    return result.exit_code, result.output


def shown(pattern: str, output: str) -> float:
    match = re.search(pattern, output)
    assert match, output
    return float(match.group(1).replace(",", ""))


def seconds_shown(output: str) -> float:
    return shown(r"\(([\d,]+) s\)", output)


def test_estimate_prints_what_the_api_would_answer(tmp_path: Path) -> None:
    code, output = run(
        tmp_path, "EfficientNet_Lite0_Fast", "--inputs", "5000", "--param", "num_epochs=30"
    )
    assert code == 0, output
    template = next(t for t in TEMPLATES if t.name == "EfficientNet_Lite0_Fast")
    expected = estimate_workload(
        Env.open(Settings(data_dir=tmp_path)),
        template,
        "image",
        template.Params(num_epochs=30),
        DataStats(5000, "image"),
    )
    assert seconds_shown(output) == expected.seconds
    first_line = output.splitlines()[0]
    assert first_line.startswith(expected.display) and expected.cost in first_line
    assert "at $4.00/h" in first_line
    assert "on 5,000 images" in output and expected.hardware in output


def test_more_epochs_and_bigger_images_take_longer(tmp_path: Path) -> None:
    base = ("MMClassification_EfficientNet", "--inputs", "2000")
    _, short = run(tmp_path, *base, "--param", "num_epochs=5")
    _, long = run(tmp_path, *base, "--param", "num_epochs=20")
    _, big = run(tmp_path, *base, "--param", "num_epochs=5", "--param", "image_size=320")
    assert seconds_shown(long) > seconds_shown(short)
    assert seconds_shown(big) > seconds_shown(short)


def test_the_price_setting_sets_the_cost(tmp_path: Path) -> None:
    args = ("embedding-classifier", "--inputs", "100000", "--kind", "image")
    _, default = run(tmp_path, *args)
    _, dearer = run(tmp_path, *args, MODELMILL_PRICE_PER_HOUR_USD="8")
    assert "at $8.00/h" in dearer and seconds_shown(dearer) == seconds_shown(default)
    cost, dearer_cost = (shown(r"· \$([\d,.]+) at", text) for text in (default, dearer))
    assert dearer_cost == pytest.approx(2 * cost, abs=0.011)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("NoSuchTemplate", "--inputs", "10"), "known: EfficientNet_Lite0_Fast"),
        (("EfficientNet_Lite0_Fast", "--inputs", "10", "--param", "epochs=3"), "no parameter"),
        (("EfficientNet_Lite0_Fast", "--inputs", "10", "--param", "num_epochs=0"), "num_epochs"),
        (("EfficientNet_Lite0_Fast", "--inputs", "10", "--param", "num_epochs"), "KEY=VALUE"),
        (("EfficientNet_Lite0_Fast", "--inputs", "10", "--kind", "text"), "trains on image"),
        (("EfficientNet_Lite0_Fast", "--inputs", "0"), "--inputs"),
        (("EfficientNet_Lite0_Fast", "--inputs", "9", "--model-type", "text-classifier"), "none"),
        (  # valid fields that the template still cannot train with
            (ADVANCED, "--model-type", "text-to-text", "--inputs", "9", "--param", NO_BASE_MODEL),
            "pretrained_model_name_or_path is required",
        ),
    ],
)
def test_bad_input_is_refused_with_what_to_change(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    code, output = run(tmp_path, *args)
    assert code == 2, output
    assert says in output

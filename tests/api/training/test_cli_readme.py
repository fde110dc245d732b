"""The README's "Command line" block, run line by line as a user would paste it, against the
training server: import three formats, train with --wait, status, predict, export, and dataset
export. Also the train command's refusals."""

from __future__ import annotations

import csv
import json
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from api.training.support import shape_image
from conftest import Account, Server, create_app

README = Path(__file__).resolve().parents[3] / "README.md"
BLOCK = re.compile(r"<!-- cli-example:start -->\n```sh\n(.*?)```\n<!-- cli-example:end -->", re.S)
COMMAND_TIMEOUT_S = 600
SHAPES = ("red-circle", "green-square")


def readme_commands() -> list[list[str]]:
    """The `modelmill ...` lines of the README's block, split as a shell would."""
    match = BLOCK.search(README.read_text())
    assert match, "README.md lost its cli-example block"
    lines = [shlex.split(line, comments=True) for line in match.group(1).splitlines()]
    return [words for words in lines if words and words[0] == "modelmill"]


def run(server: Server, key: str, words: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **server.env,
        "MODELMILL_BASE_URL": server.http_url,
        "MODELMILL_KEY": key,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "modelmill", *words[1:]],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def make_files(folder: Path) -> None:
    rng = random.Random(3)
    for concept in SHAPES:
        (folder / "shapes" / concept).mkdir(parents=True)
        for n in range(8):
            (folder / "shapes" / concept / f"{n}.png").write_bytes(shape_image(concept, rng))
    (folder / "circle.png").write_bytes(shape_image("red-circle", rng))
    with (folder / "reviews.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "input", "concepts", "metadata"])
        writer.writerow(["r1", "Lovely staff, quick service.", "praise", ""])
        writer.writerow(["r2", "The room was cold.", "complaint", '{"stars": 2}'])
    (folder / "pairs.jsonl").write_text(
        json.dumps({"prompt": "Capital of France?", "completion": "Paris"}) + "\n"
    )


@pytest.mark.slow
def test_the_readme_command_line_block_runs(
    training_server: Server, trainer: Account, tmp_path: Path
) -> None:
    make_files(tmp_path)
    outputs = []
    for words in readme_commands():
        if "--app" in words:  # a fresh app per run: the README's "demo" may exist already
            words[words.index("--app") + 1] = f"readme-{tmp_path.name[-8:].strip('_')}"
        result = run(training_server, trainer.key, words, tmp_path)
        assert result.returncode == 0, f"{shlex.join(words)}\n{result.stdout}{result.stderr}"
        outputs.append((words[1], result.stdout))
    said = dict(outputs)
    assert "16 uploaded" in outputs[0][1] and "2 uploaded" in outputs[1][1]
    assert "MODEL_TRAINED" in said["train"] and "from Train to trained" in said["train"]
    assert "shapes" in said["status"] and "MODEL_TRAINED" in said["status"]
    prediction = json.loads(said["predict"].strip().splitlines()[-1])
    assert max(prediction["concepts"], key=prediction["concepts"].get) == "red-circle"
    assert (tmp_path / "shapes-model.zip").stat().st_size > 0
    copied = sorted(
        p.relative_to(tmp_path / "shapes-copy") for p in (tmp_path / "shapes-copy").rglob("*.png")
    )
    assert len(copied) == 16 and {p.parts[0] for p in copied} == set(SHAPES)
    assert Image.open(tmp_path / "shapes-copy" / "red-circle" / "0.png").size == (64, 64)


def test_train_refusals_come_back_with_the_servers_words(
    training_server: Server, trainer: Account, tmp_path: Path
) -> None:
    app_id = create_app(training_server, trainer)
    base = ["modelmill", "train", "--app", app_id, "--model", "m"]
    no_concepts = run(
        training_server, trainer.key, [*base, "--type", "embedding-classifier"], tmp_path
    )
    assert no_concepts.returncode == 2 and "no concepts yet" in no_concepts.stdout
    base += ["--concept", "cat"]
    unknown_type = run(training_server, trainer.key, [*base, "--type", "no-such-type"], tmp_path)
    assert unknown_type.returncode == 2 and "no-such-type" in unknown_type.stdout
    bad_param = run(
        training_server,
        trainer.key,
        [*base, "--type", "embedding-classifier", "--param", "oops"],
        tmp_path,
    )
    assert bad_param.returncode == 2 and "KEY=VALUE" in bad_param.stdout
    unknown_concept = run(
        training_server, trainer.key, [*base, "--type", "embedding-classifier"], tmp_path
    )
    assert unknown_concept.returncode == 2 and "cat" in unknown_concept.stdout

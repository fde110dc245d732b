"""The client commands of `modelmill` as a user runs them: real `modelmill` processes talking
to a real server over REST (clarifai-grpc's JSON channel) or gRPC, checked through the API.

import: an ImageFolder tree, a CSV (image paths and texts), JSONL prompt/completion pairs;
resumable, with refusals summarised; dataset export → import round trips in each format.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb

from api.helpers import assert_ok, input_ids, jpeg, png
from conftest import Account, Api, Server

COMMAND_TIMEOUT_S = 300


def modelmill(
    server: Server, key: str, *args: str, cwd: Path | None = None, transport: str = "rest"
) -> subprocess.CompletedProcess[str]:
    base = server.http_url if transport == "rest" else f"grpc://127.0.0.1:{server.grpc_port}"
    env = {**server.env, "MODELMILL_BASE_URL": base, "MODELMILL_KEY": key, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "modelmill", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def labels(api: Api) -> dict[str, list[str]]:
    """Each stored input's positive concepts."""
    found: dict[str, list[str]] = {}
    page = 1
    while reply := assert_ok(api.ListInputs(page=page, per_page=500)).inputs:
        found.update({i.id: sorted(c.id for c in i.data.concepts if c.value > 0) for i in reply})
        page += 1
    return found


def image_tree(root: Path, classes: dict[str, int], unlabelled: int = 0) -> Path:
    for concept, count in classes.items():
        (root / concept).mkdir(parents=True)
        for n in range(count):
            (root / concept / f"img{n}.jpg").write_bytes(jpeg(20, 16, (40 * n, 90, 150)))
    for n in range(unlabelled):
        (root / f"loose{n}.png").write_bytes(png(12, 12))
    return root


@pytest.fixture
def app_api(server: Server, owner: Account, app_id: str) -> Api:
    return Api(server, "grpc", owner.key, owner.user_id, app_id)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_import_an_image_folder_into_a_dataset(
    server: Server, owner: Account, app_api: Api, tmp_path: Path, transport: str
) -> None:
    tree = image_tree(tmp_path / "pets", {"cat": 3, "dog": 2}, unlabelled=1)
    out = ok(
        modelmill(
            server, owner.key, "import", str(tree), "--app", app_api.app_id, "--dataset", "pets",
            transport=transport,
        )
    )  # fmt: skip
    assert "6 uploaded, 0 already stored, 0 refused" in out
    assert labels(app_api) == {
        "cat-img0": ["cat"], "cat-img1": ["cat"], "cat-img2": ["cat"],
        "dog-img0": ["dog"], "dog-img1": ["dog"], "loose0": [],
    }  # fmt: skip
    in_dataset = assert_ok(app_api.ListDatasetInputs(dataset_id="pets", per_page=100))
    assert len(in_dataset.dataset_inputs) == 6


def test_import_is_resumable_and_summarises_refusals(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    tree = image_tree(tmp_path / "pets", {"cat": 2})
    ok(modelmill(server, owner.key, "import", str(tree), "--app", app_api.app_id))
    (tree / "cat" / "img5.jpg").write_bytes(jpeg())
    (tree / "cat" / "broken.jpg").write_bytes(b"not really a jpeg")
    (tree / "cat" / "also-broken.png").write_bytes(b"nor a png")

    again = modelmill(server, owner.key, "import", str(tree), "--app", app_api.app_id)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "1 uploaded, 2 already stored, 2 refused" in again.stdout
    assert "2 ×" in again.stdout and "cat-broken" in again.stdout
    assert sorted(input_ids(app_api)) == ["cat-img0", "cat-img1", "cat-img5"]


def test_import_a_csv_of_image_paths_and_texts(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(jpeg())
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "input", "concepts", "metadata"])
        writer.writerow(["photo-a", "photos/a.jpg", "cat", ""])
        writer.writerow(["review-1", "Great soup, cold bread.", "food,complaint", '{"stars": 3}'])
        writer.writerow(["missing", "photos/none.jpg", "cat", ""])
        writer.writerow(["bad-meta", "text", "x", "{not json"])
    result = modelmill(server, owner.key, "import", str(path), "--app", app_api.app_id)
    assert result.returncode == 1
    assert "2 uploaded, 0 already stored, 2 refused" in result.stdout
    assert "does not exist" in result.stdout and "not JSON" in result.stdout
    review = assert_ok(app_api.GetInput(input_id="review-1")).input
    assert review.data.text.raw == "Great soup, cold bread."
    assert sorted(c.id for c in review.data.concepts) == ["complaint", "food"]
    assert dict(review.data.metadata) == {"stars": 3.0}
    assert assert_ok(app_api.GetInput(input_id="photo-a")).input.data.image.image_info.width == 32


def test_import_jsonl_prompt_completion_pairs(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    path = tmp_path / "pairs.jsonl"
    lines = [
        {"prompt": "Translate: bonjour", "completion": "hello"},
        {"id": "p2", "prompt": "Translate: merci", "completion": "thank you"},
        {"prompt": "no answer"},
        "not an object",
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = modelmill(server, owner.key, "import", str(path), "--app", app_api.app_id)
    assert "2 uploaded, 0 already stored, 2 refused" in result.stdout, result.stdout
    first = assert_ok(app_api.GetInput(input_id="pairs-1")).input
    assert first.data.text.raw == "Translate: bonjour"
    assert dict(first.data.metadata) == {"prompt": "Translate: bonjour", "completion": "hello"}
    assert "p2" in input_ids(app_api)


def test_bad_commands_say_what_to_change(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    (tmp_path / "x.txt").write_text("hi")
    unknown = modelmill(server, owner.key, "import", str(tmp_path / "x.txt"), "--app", "a")
    assert unknown.returncode == 2 and "--format" in unknown.stdout
    missing = modelmill(server, owner.key, "import", str(tmp_path / "nope"), "--app", "a")
    assert missing.returncode == 2 and "does not exist" in missing.stdout
    bad_key = modelmill(
        server, "wrong-key", "import", str(tmp_path), "--app", "a", "--format", "imagefolder"
    )
    assert bad_key.returncode == 2 and "CONN_KEY_INVALID" in bad_key.stdout
    no_format = modelmill(
        server, owner.key, "dataset", "export", "--app", app_api.app_id, "--dataset", "d",
        "--format", "parquet", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert no_format.returncode == 2 and "imagefolder" in no_format.stdout


@pytest.mark.parametrize("export_format", ["imagefolder", "csv", "jsonl"])
@pytest.mark.parametrize("frozen", [False, True], ids=["current", "version"])
def test_dataset_export_then_import_round_trips(
    server: Server, owner: Account, tmp_path: Path, export_format: str, frozen: bool
) -> None:
    from conftest import create_app

    source = Api(server, "grpc", owner.key, owner.user_id, create_app(server, owner))
    tree = image_tree(tmp_path / "pets", {"cat": 2, "dog": 1}, unlabelled=1)
    ok(modelmill(server, owner.key, "import", str(tree), "--app", source.app_id, "--dataset", "d"))
    if export_format != "imagefolder":
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text(json.dumps({"prompt": "2+2?", "completion": "4", "concepts": ["math"]}))
        ok(
            modelmill(
                server, owner.key, "import", str(pairs), "--app", source.app_id, "--dataset", "d"
            )
        )
    version: list[str] = []
    if frozen:
        assert_ok(
            source.PostDatasetVersions(
                dataset_id="d", dataset_versions=[pb.DatasetVersion(id="v1")]
            )
        )
        version = ["--version", "v1"]
    out = tmp_path / ("copy" if export_format == "imagefolder" else f"copy.{export_format}")
    ok(
        modelmill(
            server, owner.key, "dataset", "export", "--app", source.app_id, "--dataset", "d",
            "--format", export_format, "--out", str(out), *version,
        )
    )  # fmt: skip

    target = Api(server, "grpc", owner.key, owner.user_id, create_app(server, owner))
    ok(modelmill(server, owner.key, "import", str(out), "--app", target.app_id))
    assert labels(target) == labels(source)
    original = {i.id: i for i in assert_ok(source.ListInputs(per_page=100)).inputs}
    for copy in assert_ok(target.ListInputs(per_page=100)).inputs:
        before = original[copy.id].data
        assert copy.data.image.image_info.width == before.image.image_info.width
        assert copy.data.text.raw == before.text.raw
        assert dict(copy.data.metadata) == dict(before.metadata)

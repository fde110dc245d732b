"""Workflows of trained models through the `clarifai` SDK (App.create_workflow from a YAML file,
Workflow.predict_by_bytes, App.workflow, list_workflows, delete_workflow): a base embedding model
→ a transfer-learning classifier (the README's example, run as written), a classifier → a text
model, and (slow) a detector → a classifier on the crop of each region."""

from __future__ import annotations

import io
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from clarifai.client.app import App
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image

from api.helpers import assert_ok, assert_status, image_input
from api.sdk_support import sdk_base_url
from api.training.support import create_model, labelled_texts, predict, train, upload
from api.training.test_text_generator import PAIRS, pair_inputs
from api.training.test_visual_detector import TINY_DETECTOR, boxed_images
from conftest import Account, Api, Server, create_app
from modelmill.training.tasks.detection import COLOURS, shapes_image

sys.path.insert(0, str(Path(__file__).parents[2] / "training"))
from tiny_lm import build_tiny_lm  # noqa: E402

README = Path(__file__).resolve().parents[3] / "README.md"
TOPICS = ["cooking", "sports"]
TINY_WRITER = {
    "template": "HF_SmolLM2_135m_FullFineTune",
    "num_epochs": 80.0,
    "batch_size": 8.0,
    "max_length": 48.0,
    "learning_rate": 0.01,
    "warmup_epochs": 0.0,
    "early_stopping_patience": 0.0,
    "validation_fraction": 0.0,
    "dataset_id": "pairs",
}


def readme_block(name: str, language: str) -> str:
    pattern = rf"<!-- {name}:start -->\n```{language}\n(.*?)```\n<!-- {name}:end -->"
    match = re.search(pattern, README.read_text(), re.S)
    assert match, f"README.md lost its {name} block"
    return match.group(1)


def sdk_app(server: Server, account: Account, app_id: str) -> App:
    return App(
        user_id=account.user_id, app_id=app_id, pat=account.key, base_url=sdk_base_url(server)
    )


def write_workflow(folder: Path, workflow_id: str, *nodes: tuple[str, str, str]) -> str:
    """A workflow YAML as App.create_workflow reads it: (node id, model id, input node id)."""
    path = folder / f"{workflow_id}.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "workflow": {
                    "id": workflow_id,
                    "nodes": [
                        {
                            "id": node_id,
                            "model": {"model_id": model_id},
                            **({"node_inputs": [{"node_id": reads}]} if reads else {}),
                        }
                        for node_id, model_id, reads in nodes
                    ],
                }
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def topics(training_server: Server, trainer: Account) -> Api:
    """An app with a text transfer-learning classifier `topics` (cooking, sports)."""
    api = Api(
        training_server,
        "grpc",
        trainer.key,
        trainer.user_id,
        create_app(training_server, trainer),
    )
    upload(api, labelled_texts(12, topics=TOPICS))
    create_model(api, "topics", concepts=TOPICS)
    train(api, "topics", concepts=TOPICS, exclusive=True)
    return api


def test_the_readme_workflow_runs_as_written(
    training_server: Server,
    trainer: Account,
    topics: Api,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "workflow.yml").write_text(readme_block("workflow-yaml", "yaml"))
    code = readme_block("workflow-python", "python")
    for written, here in (
        ('user_id="me"', f'user_id="{trainer.user_id}"'),
        ('app_id="demo"', f'app_id="{topics.app_id}"'),
        ("http://127.0.0.1:18080", sdk_base_url(training_server)),
    ):
        assert written in code
        code = code.replace(written, here)

    exec(compile(code, "README.md", "exec"), {"KEY": trainer.key})

    printed = capsys.readouterr().out
    assert "384 cooking" in printed
    assert "['Universal', 'topics-flow']" in printed
    assert_status(
        topics.GetWorkflow(workflow_id="topics-flow"), codes.WORKFLOW_DOES_NOT_EXIST, "topics-flow"
    )


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [*PAIRS, *PAIRS.values(), "the bank and the goal", "rain and cloud"]
    return build_tiny_lm(tmp_path_factory.mktemp("workflow-tiny-lm"), texts * 4)


def test_a_text_model_after_a_classifier_reads_the_same_text(
    training_server: Server, trainer: Account, topics: Api, tiny_lm: Path, tmp_path: Path
) -> None:
    api = topics
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="pairs")]))
    pairs = pair_inputs(PAIRS)
    for message in pairs:
        message.dataset_ids.append("pairs")
    upload(api, pairs)
    create_model(api, "writer", model_type_id="text-to-text")
    writer = train(
        api,
        "writer",
        train_params={**TINY_WRITER, "base_model": str(tiny_lm)},
        inference_params={"max_tokens": 8.0},
    )
    app = sdk_app(training_server, trainer, api.app_id)

    flow = app.create_workflow(
        write_workflow(
            tmp_path, "tag-then-write", ("tag", "topics", ""), ("write", "writer", "tag")
        ),
        display=False,
    )
    reply = flow.predict_by_bytes(b"upper: red cat", input_type="text")

    tag, write = reply.results[0].outputs
    assert {c.id for c in tag.data.concepts} == set(TOPICS)
    assert write.data.text.raw == "RED CAT"
    assert (write.model.id, write.model.model_version.id) == ("writer", writer.id)
    got = app.workflow(workflow_id="tag-then-write")
    assert [n.node_inputs[0].node_id for n in got.nodes if n.node_inputs] == ["tag"]

    with pytest.raises(Exception, match="WORKFLOW_INVALID_GRAPH") as refused:
        app.create_workflow(
            write_workflow(
                tmp_path,
                "embed-then-write",
                ("embed", "all-minilm-l6-v2", ""),
                ("w", "writer", "embed"),
            ),
            display=False,
        )
    assert_status(refused.value.args[0], codes.WORKFLOW_INVALID_GRAPH, "node 'w'", "embeddings")
    assert [w.id for w in app.list_workflows()] == ["Universal", "tag-then-write"]


def colour_patches(per_colour: int) -> list[pb.Input]:
    """Small noisy patches of each detector colour, labelled with it, in dataset "patches"."""
    rng = random.Random(7)
    inputs = []
    for colour, rgb in COLOURS.items():
        for n in range(per_colour):
            pixels = [
                tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in rgb)
                for _ in range(24 * 24)
            ]
            image = Image.new("RGB", (24, 24))
            image.putdata(pixels)  # type: ignore[arg-type]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            message = image_input(f"patch-{colour}-{n}", buffer.getvalue(), concepts=[colour])
            message.dataset_ids.append("patches")
            inputs.append(message)
    return inputs


def crop(image: bytes, box: Any) -> bytes:
    with Image.open(io.BytesIO(image)) as opened:
        width, height = opened.size
        area = (
            int(box.left_col * width),
            int(box.top_row * height),
            math.ceil(box.right_col * width),
            math.ceil(box.bottom_row * height),
        )
        buffer = io.BytesIO()
        opened.convert("RGB").crop(area).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_a_classifier_after_a_detector_classifies_each_region(
    training_server: Server, trainer: Account, tmp_path: Path
) -> None:
    api = Api(
        training_server, "grpc", trainer.key, trainer.user_id, create_app(training_server, trainer)
    )
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="train"), pb.Dataset(id="patches")]))
    upload(api, boxed_images(24, seed=0, dataset="train") + colour_patches(8))
    create_model(api, "boxes", model_type_id="visual-detector", concepts=list(COLOURS))
    train(
        api,
        "boxes",
        train_params=TINY_DETECTOR,
        inference_params={"detection_threshold": 0.0, "max_detections": 3.0},
    )
    create_model(api, "colours", concepts=list(COLOURS))
    train(api, "colours", train_params={"dataset_id": "patches"}, exclusive=True)
    app = sdk_app(training_server, trainer, api.app_id)
    flow = app.create_workflow(
        write_workflow(
            tmp_path,
            "detect-then-classify",
            ("detect", "boxes", ""),
            ("classify", "colours", "detect"),
        ),
        display=False,
    )
    image, _ = shapes_image(COLOURS, 96, seed=9_001)

    reply = flow.predict_by_bytes(image, input_type="image")

    detect, classify = reply.results[0].outputs
    assert detect.data.regions, "the detector kept its three best boxes"
    assert len(classify.data.regions) == len(detect.data.regions)
    for found, classified in zip(detect.data.regions, classify.data.regions, strict=True):
        assert classified.region_info.bounding_box == found.region_info.bounding_box
        concepts = [c.id for c in classified.data.concepts]
        assert set(concepts) <= set(COLOURS) and concepts
        alone = assert_ok(
            predict(
                api, "colours", [image_input("crop", crop(image, found.region_info.bounding_box))]
            )
        ).outputs[0]
        assert alone.data.concepts[0].id == concepts[0], "not the crop's own prediction"

    detector_on_regions = pb.Workflow(
        id="detector-after-detector",
        nodes=[
            pb.WorkflowNode(id="tag", model=pb.Model(id="colours")),
            pb.WorkflowNode(
                id="boxes", model=pb.Model(id="boxes"), node_inputs=[pb.NodeInput(node_id="tag")]
            ),
            pb.WorkflowNode(
                id="again", model=pb.Model(id="boxes"), node_inputs=[pb.NodeInput(node_id="boxes")]
            ),
        ],
    )
    assert_status(
        api.PostWorkflows(workflows=[detector_on_regions]),
        codes.WORKFLOW_INVALID_GRAPH,
        "node 'again'",
    )

"""Workflows over gRPC and REST with the base embedding models as nodes (no training needed):
the app's default workflow, create / get / list / patch / delete, graphs refused with a status
naming the node and nothing stored, and PostWorkflowResults' answers per node and per input.
Workflows of trained models, through the `clarifai` SDK: tests/api/training/test_sdk_workflows.py.
"""

from __future__ import annotations

import math

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, assert_status, png, text_input
from conftest import Api

TEXT_MODEL, IMAGE_MODEL = "all-minilm-l6-v2", "efficientnet-lite0"


def node(node_id: str, model_id: str, *reads: str, version_id: str = "") -> pb.WorkflowNode:
    return pb.WorkflowNode(
        id=node_id,
        model=pb.Model(id=model_id, model_version=pb.ModelVersion(id=version_id)),
        node_inputs=[pb.NodeInput(node_id=r) for r in reads],
    )


def workflow_ids(api: Api) -> list[str]:
    return [w.id for w in assert_ok(api.ListWorkflows(per_page=100)).workflows]


def test_the_default_workflow_embeds_each_input_with_the_base_model_of_its_kind(api: Api) -> None:
    assert assert_ok(api.GetApp()).app.default_workflow_id == "Universal"
    (default,) = assert_ok(api.ListWorkflows()).workflows
    assert default.id == "Universal"
    assert [(n.id, n.model.id) for n in default.nodes] == [
        ("image-embedding", IMAGE_MODEL),
        ("text-embedding", TEXT_MODEL),
    ]
    base = assert_ok(api.GetModel(model_id=TEXT_MODEL)).model
    assert base.model_version.status.code == codes.MODEL_TRAINED
    assert default.nodes[1].model.model_version.id == base.model_version.id

    picture = pb.Input(id="p", data=pb.Data(image=pb.Image(base64=png())))
    reply = assert_ok(
        api.PostWorkflowResults(
            workflow_id="Universal", inputs=[text_input("t", "a red kite"), picture]
        )
    )
    text, image = reply.results
    assert [(o.id, o.model.id) for o in text.outputs] == [
        ("image-embedding", IMAGE_MODEL),
        ("text-embedding", TEXT_MODEL),
    ]
    assert_status(text.outputs[0].status, codes.WORKFLOW_NO_MATCHING_INPUT, "image-embedding")
    assert_status(image.outputs[1].status, codes.WORKFLOW_NO_MATCHING_INPUT, "text-embedding")
    for output, dimensions in ((text.outputs[1], 384), (image.outputs[0], 1280)):
        vector = output.data.embeddings[0].vector
        assert output.data.embeddings[0].num_dimensions == len(vector) == dimensions
        assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-4)

    assert_status(
        api.DeleteWorkflows(ids=["Universal"]), codes.WORKFLOW_PERMISSION_DENIED, "upload"
    )
    assert_status(
        api.PatchWorkflows(workflows=[pb.Workflow(id="Universal", description="x")]),
        codes.WORKFLOW_PERMISSION_DENIED,
    )


def test_create_get_list_patch_and_delete_a_workflow(api: Api) -> None:
    created = assert_ok(
        api.PostWorkflows(
            workflows=[pb.Workflow(id="texts", description="v1", nodes=[node("embed", TEXT_MODEL)])]
        )
    ).workflows[0]
    pinned = assert_ok(api.GetModel(model_id=TEXT_MODEL)).model.model_version.id
    assert created.nodes[0].model.model_version.id == pinned, "the version is pinned when saved"
    got = assert_ok(api.GetWorkflow(workflow_id="texts")).workflow
    assert (got.description, got.version.id) == ("v1", created.version.id)
    assert workflow_ids(api) == ["Universal", "texts"]
    assert [w.id for w in assert_ok(api.ListWorkflows(page=2, per_page=1)).workflows] == ["texts"]

    merged = assert_ok(
        api.PatchWorkflows(
            action="merge",
            workflows=[pb.Workflow(id="texts", nodes=[node("pictures", IMAGE_MODEL)])],
        )
    ).workflows[0]
    assert [n.id for n in merged.nodes] == ["embed", "pictures"]
    assert merged.description == "v1" and merged.version.id != created.version.id
    overwritten = assert_ok(
        api.PatchWorkflows(
            action="overwrite",
            workflows=[pb.Workflow(id="texts", description="v2", nodes=[node("e", TEXT_MODEL)])],
        )
    ).workflows[0]
    assert ([n.id for n in overwritten.nodes], overwritten.description) == (["e"], "v2")

    assert_ok(api.DeleteWorkflows(ids=["texts"]))
    assert_status(api.GetWorkflow(workflow_id="texts"), codes.WORKFLOW_DOES_NOT_EXIST, "texts")
    assert_status(api.DeleteWorkflows(ids=["texts"]), codes.WORKFLOW_DOES_NOT_EXIST, "texts")
    more = [pb.Workflow(id=f"w{i}", nodes=[node("e", TEXT_MODEL)]) for i in range(2)]
    assert_ok(api.PostWorkflows(workflows=more))
    assert_ok(api.DeleteWorkflows(delete_all=True))
    assert workflow_ids(api) == ["Universal"]


BAD_GRAPHS = {
    "cycle": (
        [node("a", TEXT_MODEL, "b"), node("b", TEXT_MODEL, "a")],
        codes.WORKFLOW_INVALID_GRAPH,
        ["node 'a'", "cycle"],
    ),
    "unknown node input": (
        [node("a", TEXT_MODEL), node("b", TEXT_MODEL, "nowhere")],
        codes.WORKFLOW_INVALID_GRAPH,
        ["node 'b'", "nowhere"],
    ),
    "two node inputs": (
        [node("a", TEXT_MODEL), node("c", TEXT_MODEL), node("b", TEXT_MODEL, "a", "c")],
        codes.WORKFLOW_INVALID_GRAPH,
        ["node 'b'"],
    ),
    "unknown model": (
        [node("a", "no-such-model")],
        codes.MODEL_DOES_NOT_EXIST,
        ["node 'a'", "no-such-model"],
    ),
    "unknown version": (
        [node("a", TEXT_MODEL, version_id="0" * 32)],
        codes.MODEL_DOES_NOT_EXIST,
        ["node 'a'", "0" * 32],
    ),
    "embeddings where an image is read": (
        [node("a", TEXT_MODEL), node("b", IMAGE_MODEL, "a")],
        codes.WORKFLOW_INVALID_GRAPH,
        ["node 'b'", "node 'a'", "embeddings"],
    ),
    "untrained model": (
        [node("a", "pets")],
        codes.WORKFLOW_REQUIRE_TRAINED_MODEL,
        ["node 'a'", "pets"],
    ),
    "duplicate node ids": (
        [node("a", TEXT_MODEL), node("a", IMAGE_MODEL)],
        codes.WORKFLOW_INVALID_ARGUMENT,
        ["'a'"],
    ),
    "no nodes": ([], codes.WORKFLOW_INVALID_ARGUMENT, ["nodes"]),
}


@pytest.mark.parametrize("case", BAD_GRAPHS)
def test_a_bad_graph_is_refused_naming_the_node_and_nothing_is_stored(api: Api, case: str) -> None:
    nodes, code, words = BAD_GRAPHS[case]
    assert_ok(api.PostModels(models=[pb.Model(id="pets", model_type_id="embedding-classifier")]))
    good = pb.Workflow(id="good", nodes=[node("embed", TEXT_MODEL)])
    reply = api.PostWorkflows(workflows=[good, pb.Workflow(id="bad", nodes=nodes)])

    assert_status(reply, code, *words)
    assert workflow_ids(api) == ["Universal"], "the good workflow of the batch was stored"


def test_a_workflow_id_is_taken_once(api: Api) -> None:
    assert_ok(api.PostWorkflows(workflows=[pb.Workflow(id="w", nodes=[node("e", TEXT_MODEL)])]))
    for workflow_id in ("w", "Universal"):
        again = pb.Workflow(id=workflow_id, nodes=[node("e", TEXT_MODEL)])
        assert_status(api.PostWorkflows(workflows=[again]), codes.WORKFLOW_DUPLICATE, workflow_id)
    assert_status(
        api.PatchWorkflows(
            workflows=[pb.Workflow(id="w", nodes=[node("x", TEXT_MODEL, "x")])], action="merge"
        ),
        codes.WORKFLOW_INVALID_GRAPH,
        "node 'x'",
    )
    assert [n.id for n in assert_ok(api.GetWorkflow(workflow_id="w")).workflow.nodes] == ["e"]


def test_workflow_results_per_input_and_bad_requests(api: Api) -> None:
    nodes = [node("e", TEXT_MODEL)]
    version = assert_ok(api.PostWorkflows(workflows=[pb.Workflow(id="w", nodes=nodes)]))
    version_id = version.workflows[0].version.id
    broken = pb.Input(id="broken", data=pb.Data(image=pb.Image(base64=b"not an image")))
    picture = pb.Input(id="picture", data=pb.Data(image=pb.Image(base64=png())))
    reply = api.PostWorkflowResults(
        workflow_id="w", version_id=version_id, inputs=[text_input("t", "hello"), broken, picture]
    )

    assert reply.status.code == codes.MIXED_STATUS, reply.status
    ok, bad, skipped = reply.results
    assert ok.status.code == codes.SUCCESS and len(ok.outputs[0].data.embeddings[0].vector) == 384
    assert bad.input.id == "broken" and bad.status.code not in (codes.SUCCESS, codes.MIXED_STATUS)
    assert bad.outputs[0].status.code == bad.status.code
    assert skipped.status.code == codes.SUCCESS, "an input no node reads is skipped, not a failure"
    assert skipped.outputs[0].status.code == codes.WORKFLOW_NO_MATCHING_INPUT

    assert_status(
        api.PostWorkflowResults(workflow_id="nope", inputs=[text_input("t", "x")]),
        codes.WORKFLOW_DOES_NOT_EXIST,
        "nope",
    )
    assert_status(
        api.PostWorkflowResults(workflow_id="w", version_id="old", inputs=[text_input("t", "x")]),
        codes.WORKFLOW_DOES_NOT_EXIST,
        "old",
    )
    many = [text_input(f"t{i}", "x") for i in range(33)]
    assert_status(
        api.PostWorkflowResults(workflow_id="w", inputs=many), codes.WORKFLOW_INVALID_REQUEST, "32"
    )

"""Relabelling through the `clarifai` SDK: Inputs.patch_inputs (metadata and concepts with merge,
overwrite and remove), upload_annotations then patch_annotations / delete_annotations; dataset
versions keep the labels they were made with. Bad requests through clarifai-grpc on both
transports change nothing."""

from __future__ import annotations

from typing import Any

import pytest
from clarifai.client.app import App
from clarifai.client.input import Inputs
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import struct_pb2

from api.helpers import assert_ok, assert_status, image_input, jpeg, text_input
from api.sdk_support import new_sdk_app
from conftest import Account, Api, Server


@pytest.fixture
def sdk_app(server: Server, owner: Account) -> App:
    return new_sdk_app(server, owner, "relabel")


def metadata(**values: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def patch(input_id: str, concepts: Any = (), **meta: Any) -> pb.Input:
    data = pb.Data(concepts=[pb.Concept(id=c, value=v) for c, v in concepts])
    if meta:
        data.metadata.CopyFrom(metadata(**meta))
    return pb.Input(id=input_id, data=data)


def stored(app: App, input_id: str) -> pb.Input:
    return app.inputs().get_input(input_id)


def labels(message: pb.Input) -> dict[str, float]:
    return {c.id: c.value for c in message.data.concepts}


def test_sdk_patch_inputs_metadata_merge_overwrite_remove(sdk_app: App) -> None:
    inputs = sdk_app.inputs()
    inputs.upload_inputs(
        [Inputs.get_text_input("note", "hello", metadata=metadata(source="web", stars=3))]
    )

    inputs.patch_inputs([patch("note", lang="en", stars=5)], action="merge")
    assert dict(stored(sdk_app, "note").data.metadata) == {
        "source": "web",
        "stars": 5.0,
        "lang": "en",
    }

    inputs.patch_inputs([patch("note", lang="")], action="remove")
    assert dict(stored(sdk_app, "note").data.metadata) == {"source": "web", "stars": 5.0}

    inputs.patch_inputs([patch("note", only="this")], action="overwrite")
    assert dict(stored(sdk_app, "note").data.metadata) == {"only": "this"}


def test_sdk_patch_inputs_concepts_merge_overwrite_remove(sdk_app: App) -> None:
    inputs = sdk_app.inputs()
    inputs.upload_inputs([Inputs.get_text_input("note", "my cat", labels=["cat"])])

    inputs.patch_inputs([patch("note", [("pet", 1.0), ("cat", 0.0)])], action="merge")
    assert labels(stored(sdk_app, "note")) == {"cat": 0.0, "pet": 1.0}
    assert {c.id for c in sdk_app.list_concepts()} == {"cat", "pet"}  # new concepts exist

    inputs.patch_inputs([patch("note", [("pet", 1.0)])], action="remove")
    assert labels(stored(sdk_app, "note")) == {"cat": 0.0}

    inputs.patch_inputs([patch("note", [("dog", 1.0)])], action="overwrite")
    assert labels(stored(sdk_app, "note")) == {"dog": 1.0}


def test_sdk_fixes_uploaded_boxes_with_patch_and_delete_annotations(sdk_app: App) -> None:
    inputs = sdk_app.inputs()
    inputs.upload_inputs([Inputs.get_input_from_bytes("photo", image_bytes=jpeg(64, 64))])
    wrong = Inputs.get_bbox_proto("photo", "dog", [0.1, 0.1, 0.5, 0.5], annot_id="box-1")
    extra = Inputs.get_bbox_proto("photo", "cat", [0.5, 0.5, 0.9, 0.9], annot_id="box-2")
    assert inputs.upload_annotations([wrong, extra]) == []

    # Relabel the first box: overwrite its data with the right concept.
    right = Inputs.get_bbox_proto("photo", "cat", [0.1, 0.1, 0.5, 0.6], annot_id="box-1")
    inputs.patch_annotations([right], action="overwrite")
    by_id = {a.id: a for a in inputs.list_annotations()}
    fixed = by_id["box-1"].data.regions
    assert len(fixed) == 1 and fixed[0].data.concepts[0].id == "cat"
    assert fixed[0].region_info.bounding_box.bottom_row == pytest.approx(0.6)

    # Merge adds a concept to the annotation; remove takes it away again.
    note = pb.Annotation(id="box-2", data=pb.Data(concepts=[pb.Concept(id="blurry", value=1)]))
    inputs.patch_annotations([note], action="merge")
    merged = {a.id: a for a in inputs.list_annotations()}["box-2"]
    assert [c.id for c in merged.data.concepts] == ["blurry"] and len(merged.data.regions) == 1
    inputs.patch_annotations([note], action="remove")
    merged = {a.id: a for a in inputs.list_annotations()}["box-2"]
    assert not merged.data.concepts and len(merged.data.regions) == 1

    inputs.delete_annotations(["photo"], ["box-2"])
    assert [a.id for a in inputs.list_annotations()] == ["box-1"]
    regions = stored(sdk_app, "photo").data.regions
    assert [r.data.concepts[0].id for r in regions] == ["cat"]

    inputs.delete_annotations(["photo"])  # every annotation of the input
    assert list(inputs.list_annotations()) == []
    assert not stored(sdk_app, "photo").data.regions


def test_dataset_versions_keep_the_labels_they_were_made_with(
    sdk_app: App, server: Server, owner: Account
) -> None:
    dataset = sdk_app.create_dataset(dataset_id="notes")
    inputs = sdk_app.inputs()
    inputs.upload_inputs(
        [Inputs.get_text_input(f"n{i}", f"note {i}", "notes", labels=["cat"]) for i in range(3)]
    )
    version = dataset.create_version().version

    inputs.patch_inputs([patch(f"n{i}", [("dog", 1.0)]) for i in range(3)], action="overwrite")

    api = Api(server, "grpc", owner.key, owner.user_id, sdk_app.id)
    groups = assert_ok(
        api.ListDatasetVersionMetricsGroups(dataset_id="notes", dataset_version_id=version.id)
    ).dataset_version_metrics_groups
    concepts = {g.value.string_value for g in groups if g.type == pb.CONCEPT_ID}
    assert concepts == {"cat"}
    assert all(labels(stored(sdk_app, f"n{i}")) == {"dog": 1.0} for i in range(3))


# ---- bad requests ----------------------------------------------------------------------------


def test_patching_a_missing_input_changes_nothing(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("a", concepts=["cat"])]))
    reply = api.PatchInputs(
        inputs=[patch("a", [("dog", 1.0)]), patch("ghost", [("dog", 1.0)])], action="merge"
    )
    assert_status(reply, codes.INPUT_DOES_NOT_EXIST, "ghost", "nothing")
    assert labels(assert_ok(api.GetInput(input_id="a")).input) == {"cat": 1.0}


def test_patch_inputs_refuses_unknown_actions_and_content_changes(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("a")]))
    assert_status(
        api.PatchInputs(inputs=[patch("a", [("dog", 1.0)])], action="replace"),
        codes.INPUT_INVALID_ARGUMENT,
        "replace",
        "merge",
    )
    assert_status(
        api.PatchInputs(inputs=[image_input("a")], action="merge"),
        codes.INPUT_INVALID_ARGUMENT,
        "image",
    )
    moved = patch("a", [("dog", 1.0)])
    moved.dataset_ids.append("elsewhere")
    assert_status(
        api.PatchInputs(inputs=[moved], action="merge"),
        codes.INPUT_INVALID_ARGUMENT,
        "PostDatasetInputs",
    )
    assert_status(
        api.PatchInputs(inputs=[patch("a", [("dog", 0.5)])], action="merge"),
        codes.INPUT_INVALID_ARGUMENT,
        "0.5",
    )


def test_patch_and_delete_annotations_name_what_is_wrong(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("a"), text_input("b")]))
    cat = pb.Data(concepts=[pb.Concept(id="cat", value=1)])
    assert_ok(api.PostAnnotations(annotations=[pb.Annotation(id="x", input_id="a", data=cat)]))

    assert_status(
        api.PatchAnnotations(annotations=[pb.Annotation(id="nope", data=cat)], action="merge"),
        codes.ANNOTATION_INVALID_ARGUMENT,
        "nope",
    )
    assert_status(
        api.PatchAnnotations(
            annotations=[pb.Annotation(id="x", input_id="b", data=cat)], action="merge"
        ),
        codes.ANNOTATION_INVALID_ARGUMENT,
        "input 'a'",
    )
    assert_status(
        api.DeleteAnnotations(ids=["x"], input_ids=["b"]),
        codes.ANNOTATION_INVALID_ARGUMENT,
        "not on input 'b'",
    )
    assert_status(
        api.DeleteAnnotations(ids=["x", "y"], input_ids=["a"]),
        codes.ANNOTATION_INVALID_ARGUMENT,
        "one input id per annotation",
    )
    assert [a.id for a in assert_ok(api.ListAnnotations()).annotations] == ["x"]
    assert_ok(api.DeleteAnnotation(input_id="a", annotation_id="x"))
    assert list(assert_ok(api.ListAnnotations()).annotations) == []


def test_merge_updates_a_label_in_every_annotation_that_holds_it(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("a", concepts=["cat"])]))
    cat = pb.Data(concepts=[pb.Concept(id="cat", value=1)])
    assert_ok(api.PostAnnotations(annotations=[pb.Annotation(id="x", input_id="a", data=cat)]))

    assert_ok(api.PatchInputs(inputs=[patch("a", [("cat", 0.0)])], action="merge"))
    values = [
        c.value for a in assert_ok(api.ListAnnotations()).annotations for c in a.data.concepts
    ]
    assert values == [0.0, 0.0]

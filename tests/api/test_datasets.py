"""Datasets, their inputs and versions over gRPC and REST: a version is a frozen snapshot whose
metrics groups count inputs and labels the way the SDK reads them."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import struct_pb2

from api.helpers import assert_ok, assert_status, box, image_input, text_input
from conftest import Api


def dataset_ids(api: Api) -> list[str]:
    return [d.id for d in assert_ok(api.ListDatasets(per_page=1000)).datasets]


def dataset_input_ids(api: Api, dataset_id: str) -> list[str]:
    reply = assert_ok(api.ListDatasetInputs(dataset_id=dataset_id, per_page=1000))
    return [d.input.id for d in reply.dataset_inputs]


def struct(values: dict) -> struct_pb2.Struct:  # type: ignore[type-arg]
    message = struct_pb2.Struct()
    message.update(values)
    return message


def create_dataset(api: Api, dataset_id: str = "pets") -> str:
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id=dataset_id)]))
    return dataset_id


# ---- datasets --------------------------------------------------------------------------------


def test_post_datasets_then_get_list_patch_and_delete(api: Api) -> None:
    reply = api.PostDatasets(
        datasets=[
            pb.Dataset(id="pets", description="cats and dogs", metadata=struct({"owner": "ann"}))
        ]
    )
    assert [d.id for d in assert_ok(reply).datasets] == ["pets"]

    got = assert_ok(api.GetDataset(dataset_id="pets")).dataset
    assert (got.description, dict(got.metadata), got.app_id) == (
        "cats and dogs",
        {"owner": "ann"},
        api.app_id,
    )

    merged = api.PatchDatasets(
        datasets=[pb.Dataset(id="pets", description="just cats", metadata=struct({"year": 2024}))],
        action="merge",
    )
    assert dict(assert_ok(merged).datasets[0].metadata) == {"owner": "ann", "year": 2024.0}
    overwritten = api.PatchDatasets(
        datasets=[pb.Dataset(id="pets", metadata=struct({"v": 2}))], action="overwrite"
    )
    assert dict(assert_ok(overwritten).datasets[0].metadata) == {"v": 2.0}
    assert assert_ok(api.GetDataset(dataset_id="pets")).dataset.description == "just cats"

    assert dataset_ids(api) == ["pets"]
    assert_ok(api.DeleteDatasets(dataset_ids=["pets"]))
    assert dataset_ids(api) == []
    assert_status(api.GetDataset(dataset_id="pets"), codes.CONN_DOES_NOT_EXIST, "pets")


def test_dataset_without_id_gets_one(api: Api) -> None:
    reply = assert_ok(api.PostDatasets(datasets=[pb.Dataset(description="anonymous")]))

    assert len(reply.datasets[0].id) == 32
    assert dataset_ids(api) == [reply.datasets[0].id]


def test_post_datasets_with_a_taken_or_bad_id_creates_none(api: Api) -> None:
    create_dataset(api, "pets")

    taken = api.PostDatasets(datasets=[pb.Dataset(id="new"), pb.Dataset(id="pets")])
    bad = api.PostDatasets(datasets=[pb.Dataset(id="new"), pb.Dataset(id="no/slashes")])

    assert_status(taken, codes.CONN_INVALID_REQUEST, "already used", "pets")
    assert_status(bad, codes.CONN_INVALID_REQUEST, "no/slashes")
    assert dataset_ids(api) == ["pets"]


def test_unknown_dataset_is_reported_missing_everywhere(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("t", "x")]))
    missing = codes.CONN_DOES_NOT_EXIST

    assert_status(api.GetDataset(dataset_id="ghost"), missing, "ghost")
    assert_status(api.DeleteDatasets(dataset_ids=["ghost"]), missing, "ghost")
    assert_status(
        api.PatchDatasets(datasets=[pb.Dataset(id="ghost")], action="merge"), missing, "ghost"
    )
    assert_status(api.ListDatasetInputs(dataset_id="ghost"), missing, "ghost")
    adding = api.PostDatasetInputs(
        dataset_id="ghost", dataset_inputs=[pb.DatasetInput(input=pb.Input(id="t"))]
    )
    assert_status(adding, missing, "ghost")
    assert_status(api.PostDatasetVersions(dataset_id="ghost"), missing, "ghost")
    assert_status(api.ListDatasetVersions(dataset_id="ghost"), missing, "ghost")
    assert dataset_ids(api) == []


# ---- dataset inputs --------------------------------------------------------------------------


def test_inputs_join_datasets_at_upload_and_later(api: Api) -> None:
    create_dataset(api, "pets")
    assert_ok(
        api.PostInputs(
            inputs=[
                image_input("cat", concepts=["cat"], dataset_ids=["pets"]),
                text_input("note", "later"),
            ]
        )
    )
    assert dataset_input_ids(api, "pets") == ["cat"]

    reply = api.PostDatasetInputs(
        dataset_id="pets",
        dataset_inputs=[
            pb.DatasetInput(input=pb.Input(id="note")),
            pb.DatasetInput(input=pb.Input(id="cat")),
        ],
    )

    assert_ok(reply)
    assert dataset_input_ids(api, "pets") == ["cat", "note"]
    listed = assert_ok(api.ListDatasetInputs(dataset_id="pets")).dataset_inputs
    assert [c.id for c in listed[0].input.data.concepts] == ["cat"]  # labels come along


def test_post_dataset_inputs_with_a_missing_input_adds_none(api: Api) -> None:
    create_dataset(api, "pets")
    assert_ok(api.PostInputs(inputs=[text_input("real", "x")]))

    reply = api.PostDatasetInputs(
        dataset_id="pets",
        dataset_inputs=[
            pb.DatasetInput(input=pb.Input(id="real")),
            pb.DatasetInput(input=pb.Input(id="ghost")),
        ],
    )

    assert_status(reply, codes.INPUT_DOES_NOT_EXIST, "ghost")
    assert dataset_input_ids(api, "pets") == []


def test_delete_dataset_inputs_keeps_the_inputs(api: Api) -> None:
    create_dataset(api, "pets")
    assert_ok(api.PostInputs(inputs=[text_input(i, i, dataset_ids=["pets"]) for i in ("a", "b")]))

    assert_ok(api.DeleteDatasetInputs(dataset_id="pets", input_ids=["a"]))

    assert dataset_input_ids(api, "pets") == ["b"]
    assert_ok(api.GetInput(input_id="a"))


def test_deleting_an_input_removes_it_from_its_datasets(api: Api) -> None:
    create_dataset(api, "pets")
    assert_ok(api.PostInputs(inputs=[text_input(i, i, dataset_ids=["pets"]) for i in ("a", "b")]))

    assert_ok(api.DeleteInputs(ids=["a"]))

    assert dataset_input_ids(api, "pets") == ["b"]


# ---- dataset versions ------------------------------------------------------------------------


def upload_labelled(api: Api, dataset_id: str) -> None:
    detection = image_input("boxed", dataset_ids=[dataset_id])
    detection.data.regions.extend([box(0.1, 0.1, 0.4, 0.4, "cat"), box(0.5, 0.5, 0.9, 0.9, "cat")])
    assert_ok(
        api.PostInputs(
            inputs=[
                image_input("cat", concepts=["cat"], dataset_ids=[dataset_id]),
                image_input(
                    "dog",
                    concepts=["dog", pb.Concept(id="cat", value=0.0)],
                    dataset_ids=[dataset_id],
                ),
                text_input("plain", "no labels", dataset_ids=[dataset_id]),
                detection,
            ]
        )
    )


def test_dataset_version_is_a_frozen_snapshot_with_metrics(api: Api) -> None:
    create_dataset(api, "pets")
    upload_labelled(api, "pets")

    reply = api.PostDatasetVersions(
        dataset_id="pets", dataset_versions=[pb.DatasetVersion(id="v1", description="first")]
    )
    version = assert_ok(reply).dataset_versions[0]
    assert_ok(api.PostInputs(inputs=[text_input("after", "added later", dataset_ids=["pets"])]))

    assert (version.id, version.dataset_id, version.status.code) == (
        "v1",
        "pets",
        codes.DATASET_VERSION_READY,
    )
    got = assert_ok(
        api.GetDatasetVersion(dataset_id="pets", dataset_version_id="v1")
    ).dataset_version
    summary = got.metrics["/"]
    assert summary.inputs_count.value == 4  # "after" came later and is not in v1
    assert summary.unlabeled_inputs_count.value == 1
    assert summary.bounding_boxes_count.value == 2
    assert summary.positive_input_tags_count.value == 2
    assert got.description == "first"


def test_metrics_groups_count_inputs_per_type_and_labels_per_concept(api: Api) -> None:
    create_dataset(api, "pets")
    upload_labelled(api, "pets")
    assert_ok(
        api.PostDatasetVersions(dataset_id="pets", dataset_versions=[pb.DatasetVersion(id="v1")])
    )

    groups = assert_ok(
        api.ListDatasetVersionMetricsGroups(dataset_id="pets", dataset_version_id="v1")
    )
    by_value = {
        (g.type, g.value.string_value): g.metrics for g in groups.dataset_version_metrics_groups
    }

    assert by_value[(pb.INPUT_TYPE, "total")].inputs_count.value == 4
    assert by_value[(pb.INPUT_TYPE, "image")].inputs_count.value == 3
    assert by_value[(pb.INPUT_TYPE, "text")].inputs_count.value == 1
    cat = by_value[(pb.CONCEPT_ID, "cat")]
    dog = by_value[(pb.CONCEPT_ID, "dog")]
    assert (cat.positive_input_tags_count.value, cat.bounding_boxes_count.value) == (1, 2)
    assert (dog.positive_input_tags_count.value, dog.bounding_boxes_count.value) == (1, 0)
    assert cat.HasField("polygons_count")  # the SDK reads every count, zeros included
    only_concepts = api.ListDatasetVersionMetricsGroups(
        dataset_id="pets", dataset_version_id="v1", types=[pb.CONCEPT_ID]
    )
    assert {g.type for g in assert_ok(only_concepts).dataset_version_metrics_groups} == {
        pb.CONCEPT_ID
    }


def test_empty_dataset_version_still_answers_metrics_groups(api: Api) -> None:
    """The SDK's upload status waits while a version has no groups at all."""
    create_dataset(api, "empty")
    assert_ok(
        api.PostDatasetVersions(dataset_id="empty", dataset_versions=[pb.DatasetVersion(id="v0")])
    )

    groups = assert_ok(
        api.ListDatasetVersionMetricsGroups(dataset_id="empty", dataset_version_id="v0")
    )

    totals = [g for g in groups.dataset_version_metrics_groups if g.value.string_value == "total"]
    assert len(totals) == 1 and totals[0].metrics.inputs_count.value == 0


def test_list_versions_newest_first_and_delete_one(api: Api) -> None:
    create_dataset(api, "pets")
    for version_id in ("v1", "v2", "v3"):
        assert_ok(
            api.PostDatasetVersions(
                dataset_id="pets", dataset_versions=[pb.DatasetVersion(id=version_id)]
            )
        )

    listed = assert_ok(api.ListDatasetVersions(dataset_id="pets")).dataset_versions
    assert [v.id for v in listed] == ["v3", "v2", "v1"]

    assert_ok(api.DeleteDatasetVersions(dataset_id="pets", dataset_version_ids=["v2"]))
    listed = assert_ok(api.ListDatasetVersions(dataset_id="pets")).dataset_versions
    assert [v.id for v in listed] == ["v3", "v1"]


def test_version_without_id_gets_one(api: Api) -> None:
    create_dataset(api, "pets")

    reply = assert_ok(api.PostDatasetVersions(dataset_id="pets"))

    assert len(reply.dataset_versions[0].id) == 32


def test_duplicate_version_id_is_a_conflict(api: Api) -> None:
    create_dataset(api, "pets")
    assert_ok(
        api.PostDatasetVersions(dataset_id="pets", dataset_versions=[pb.DatasetVersion(id="v1")])
    )

    reply = api.PostDatasetVersions(
        dataset_id="pets", dataset_versions=[pb.DatasetVersion(id="v1")]
    )

    assert_status(reply, codes.DATASET_VERSION_CONFLICT, "v1")
    assert len(assert_ok(api.ListDatasetVersions(dataset_id="pets")).dataset_versions) == 1


def test_unknown_dataset_version_is_reported_missing(api: Api) -> None:
    create_dataset(api, "pets")
    missing = codes.CONN_DOES_NOT_EXIST

    assert_status(api.GetDatasetVersion(dataset_id="pets", dataset_version_id="v9"), missing, "v9")
    groups = api.ListDatasetVersionMetricsGroups(dataset_id="pets", dataset_version_id="v9")
    assert_status(groups, missing, "v9")
    assert_status(
        api.DeleteDatasetVersions(dataset_id="pets", dataset_version_ids=["v9"]), missing, "v9"
    )

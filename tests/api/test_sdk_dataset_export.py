"""Dataset.export of the `clarifai` SDK against modelmill: PutDatasetVersionExports writes the
Clarifai protobuf archive, the SDK downloads it and every input's content from its hosted URL,
and writes inputs/ and annotations/; the version's frozen labels are what comes out."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import requests
from clarifai.client.app import App
from clarifai.client.input import Inputs
from clarifai.datasets.export.inputs_annotations import DatasetExportReader
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import struct_pb2
from PIL import Image

from api.helpers import assert_ok, assert_status, jpeg
from api.sdk_support import new_sdk_app
from conftest import Account, Api, Server


@pytest.fixture
def sdk_app(server: Server, owner: Account) -> App:
    return new_sdk_app(server, owner, "export")


def tags(**values: str) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def test_sdk_exports_a_dataset_version_and_reads_it_back(sdk_app: App, tmp_path: Path) -> None:
    dataset = sdk_app.create_dataset(dataset_id="pets")
    inputs = sdk_app.inputs()
    inputs.upload_inputs(
        [
            Inputs.get_input_from_bytes(
                "cat-photo", image_bytes=jpeg(40, 30), dataset_id="pets", labels=["cat"]
            ),
            Inputs.get_text_input(
                "review", "Lovely dog, very calm.", "pets", labels=["dog"], metadata=tags(by="ann")
            ),
        ]
    )
    box = Inputs.get_bbox_proto("cat-photo", "cat", [0.1, 0.2, 0.6, 0.9], annot_id="cat-box")
    assert inputs.upload_annotations([box]) == []
    version = dataset.create_version().version
    # Relabelled after the version was made: the export keeps the version's labels.
    inputs.patch_inputs(
        [pb.Input(id="review", data=pb.Data(concepts=[pb.Concept(id="cat", value=1)]))],
        action="overwrite",
    )

    frozen = sdk_app.dataset(dataset_id="pets", dataset_version_id=version.id)
    out = tmp_path / "pets.zip"
    frozen.export(save_path=str(out))

    with zipfile.ZipFile(out) as archive:
        names = sorted(archive.namelist())
        assert names == [
            "all/annotations/cat-photo.json",
            "all/annotations/review.json",
            "all/inputs/cat-photo.png",
            "all/inputs/review.txt",
        ]
        assert Image.open(io.BytesIO(archive.read("all/inputs/cat-photo.png"))).size == (40, 30)
        assert archive.read("all/inputs/review.txt") == b"Lovely dog, very calm."
        review = json.loads(archive.read("all/annotations/review.json"))
        photo = json.loads(archive.read("all/annotations/cat-photo.json"))
    assert {"metadata": {"by": "ann"}} in review
    assert [a["id"] for a in review if "id" in a] == ["dog"]  # not the later "cat"
    boxes = [a["regionInfo"]["boundingBox"] for a in photo if "regionInfo" in a]
    assert boxes == [{"topRow": 0.2, "leftCol": 0.1, "bottomRow": 0.9, "rightCol": 0.6}]

    # The archive itself, read by the SDK's reader from the URL the API answers.
    url = frozen.archive_zip()
    with DatasetExportReader(session=requests.Session(), archive_url=url) as reader:
        assert len(reader) == 2
        read = {i.id: i for i in reader}
    assert [c.id for c in read["review"].data.concepts] == ["dog"]
    assert read["cat-photo"].data.image.image_info.width == 40
    assert list(read["cat-photo"].dataset_ids) == ["pets"]


def test_exporting_again_gives_the_same_archive(sdk_app: App) -> None:
    dataset = sdk_app.create_dataset(dataset_id="notes")
    sdk_app.inputs().upload_inputs(
        [Inputs.get_text_input(f"n{i}", f"note {i}", "notes", labels=["x"]) for i in range(3)]
    )
    version = dataset.create_version().version
    frozen = sdk_app.dataset(dataset_id="notes", dataset_version_id=version.id)
    first, second = frozen.archive_zip(), frozen.archive_zip()
    assert first == second


def test_bad_exports_name_what_to_change(api: Api) -> None:
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="d")]))
    assert_ok(
        api.PostDatasetVersions(dataset_id="d", dataset_versions=[pb.DatasetVersion(id="v1")])
    )
    coco = pb.DatasetVersionExport(format=pb.DatasetVersionExportFormat.COCO)
    assert_status(
        api.PutDatasetVersionExports(dataset_id="d", dataset_version_id="v1", exports=[coco]),
        codes.DATASET_VERSION_EXPORT_FAILED,
        "COCO",
        "CLARIFAI_DATA_PROTOBUF",
    )
    proto = pb.DatasetVersionExport(format=pb.DatasetVersionExportFormat.CLARIFAI_DATA_PROTOBUF)
    assert_status(
        api.PutDatasetVersionExports(dataset_id="d", dataset_version_id="v9", exports=[proto]),
        codes.CONN_DOES_NOT_EXIST,
        "v9",
    )
    assert_status(
        api.PutDatasetVersionExports(dataset_id="d", dataset_version_id="v1"),
        codes.DATASET_VERSION_EXPORT_FAILED,
        "exports",
    )


def test_hosted_links_need_their_signature(api: Api) -> None:
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="d")]))
    proto = pb.DatasetVersionExport(format=pb.DatasetVersionExportFormat.CLARIFAI_DATA_PROTOBUF)
    assert_ok(api.PostDatasetVersions(dataset_id="d", dataset_versions=[pb.DatasetVersion(id="v")]))
    url = (
        assert_ok(
            api.PutDatasetVersionExports(dataset_id="d", dataset_version_id="v", exports=[proto])
        )
        .exports[0]
        .url
    )
    assert requests.get(url, timeout=10).headers["content-type"] == "application/zip"
    assert requests.get(url.split("?")[0] + "?sig=forged", timeout=10).status_code == 403

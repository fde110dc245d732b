"""The `clarifai` SDK's data flows against a real server (the SDK speaks gRPC only; an
http:// base makes it use an insecure channel)."""

from __future__ import annotations

import csv
import secrets
from pathlib import Path
from typing import Any

import pytest
from clarifai.client.app import App
from clarifai.client.user import User
from clarifai.datasets.upload.base import ClarifaiDataLoader
from clarifai.datasets.upload.features import TextFeatures, VisualDetectionFeatures
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import jpeg
from conftest import Account, Server


@pytest.fixture
def sdk_app(server: Server, owner: Account) -> App:
    """A fresh app made by the SDK's User.create_app (PostApps)."""
    user = User(
        user_id=owner.user_id, pat=owner.key, base_url=f"http://127.0.0.1:{server.grpc_port}"
    )
    return user.create_app(app_id=f"sdk-{secrets.token_hex(4)}", base_workflow="Empty")


def image_folder(root: Path, label: str, count: int) -> Path:
    folder = root / label
    folder.mkdir()
    for i in range(count):
        (folder / f"{label}{i}.jpg").write_bytes(jpeg(16, 16, (i * 40, 80, 120)))
    return folder


def stored(app: App, **filters: Any) -> dict[str, Any]:
    return {i.id: i for i in app.inputs().list_inputs(**filters)}


def test_sdk_creates_dataset_and_lists_it(sdk_app: App) -> None:
    dataset = sdk_app.create_dataset(dataset_id="pets", description="my pets")

    assert dataset.id == "pets"
    assert [d.id for d in sdk_app.list_datasets()] == ["pets"]
    assert sdk_app.dataset(dataset_id="pets").id == "pets"


def test_sdk_upload_from_folder_labels_images_with_the_folder_name(
    sdk_app: App, tmp_path: Path
) -> None:
    dataset = sdk_app.create_dataset(dataset_id="images")

    dataset.upload_from_folder(
        str(image_folder(tmp_path, "cat", 3)), input_type="image", labels=True
    )

    inputs = stored(sdk_app)
    assert sorted(inputs) == ["cat0", "cat1", "cat2"]  # the file name is the input id
    assert all([c.id for c in i.data.concepts] == ["cat"] for i in inputs.values())
    assert all(i.data.image.image_info.width == 16 for i in inputs.values())
    assert sorted(stored(sdk_app, dataset_id="images")) == ["cat0", "cat1", "cat2"]
    assert [c.id for c in sdk_app.list_concepts()] == ["cat"]


def test_sdk_upload_from_csv_stores_texts_with_labels_and_metadata(
    sdk_app: App, tmp_path: Path
) -> None:
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["inputid", "input", "concepts", "metadata"])
        writer.writerow(["r1", "great food", "positive", "{'table': 4}"])
        writer.writerow(["r2", "cold soup", "negative", ""])
        writer.writerow(["r3", "fine I guess", "positive,neutral", ""])
    dataset = sdk_app.create_dataset(dataset_id="reviews")

    dataset.upload_from_csv(str(path), input_type="text", csv_type="raw", labels=True)

    inputs = stored(sdk_app)
    assert sorted(inputs) == ["r1", "r2", "r3"]
    assert inputs["r1"].data.text.raw == "great food"
    assert dict(inputs["r1"].data.metadata) == {"table": 4.0}
    assert sorted(c.id for c in inputs["r3"].data.concepts) == ["neutral", "positive"]
    assert sorted(c.id for c in sdk_app.list_concepts()) == ["negative", "neutral", "positive"]
    assert sorted(stored(sdk_app, dataset_id="reviews")) == ["r1", "r2", "r3"]


class ReviewsLoader(ClarifaiDataLoader):
    def __init__(self) -> None:
        self.items = [
            TextFeatures(text="loved it", labels=["positive"], id=1),
            TextFeatures(text="never again", labels=["negative"], id=2),
            TextFeatures(text="superb", labels=["positive"], id=3, metadata={"stars": 5}),
        ]

    @property
    def task(self) -> str:
        return "text_classification"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> TextFeatures:
        return self.items[index]


class BoxesLoader(ClarifaiDataLoader):
    def __init__(self) -> None:
        self.items = [
            VisualDetectionFeatures(
                image_path="",
                image_bytes=jpeg(20, 20),
                labels=["cat", "dog"],
                bboxes=[[0.1, 0.1, 0.5, 0.6], [0.5, 0.2, 0.9, 0.8]],
                id=1,
            ),
            VisualDetectionFeatures(
                image_path="",
                image_bytes=jpeg(20, 20, (0, 0, 0)),
                labels=["cat"],
                bboxes=[[0.0, 0.0, 1.0, 1.0]],
                id=2,
            ),
        ]

    @property
    def task(self) -> str:
        return "visual_detection"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> VisualDetectionFeatures:
        return self.items[index]


def test_sdk_upload_dataset_of_texts_with_upload_status(sdk_app: App) -> None:
    dataset = sdk_app.create_dataset(dataset_id="reviews")

    dataset.upload_dataset(ReviewsLoader(), get_upload_status=True)

    inputs = stored(sdk_app, dataset_id="reviews")
    assert sorted(inputs) == ["reviews-1", "reviews-2", "reviews-3"]
    assert [c.id for c in inputs["reviews-2"].data.concepts] == ["negative"]
    # get_upload_status made versions whose metrics groups count what was uploaded.
    versions = list(dataset.list_versions())
    assert len(versions) == 2  # one before the upload, one after


def test_sdk_upload_dataset_with_boxes_adds_annotations(sdk_app: App) -> None:
    dataset = sdk_app.create_dataset(dataset_id="boxes")

    dataset.upload_dataset(BoxesLoader(), get_upload_status=True)

    inputs = stored(sdk_app, dataset_id="boxes")
    assert sorted(inputs) == ["boxes-1", "boxes-2"]
    regions = {c.id for i in inputs.values() for r in i.data.regions for c in r.data.concepts}
    assert regions == {"cat", "dog"}
    annotations = list(sdk_app.inputs().list_annotations())
    assert sum(len(a.data.regions) for a in annotations) == 3


def test_sdk_dataset_version_is_a_frozen_snapshot(sdk_app: App, tmp_path: Path) -> None:
    dataset = sdk_app.create_dataset(dataset_id="images")
    dataset.upload_from_folder(
        str(image_folder(tmp_path, "cat", 2)), input_type="image", labels=True
    )

    version = dataset.create_version(description="first")
    dataset.upload_from_folder(
        str(image_folder(tmp_path, "dog", 1)), input_type="image", labels=True
    )

    assert version.version.status.code == codes.DATASET_VERSION_READY
    assert version.version.metrics["/"].inputs_count.value == 2
    assert [v.version.id for v in dataset.list_versions()] == [version.version.id]
    assert len(stored(sdk_app, dataset_id="images")) == 3

"""`modelmill import` of annotated layouts as a user runs it: COCO JSON, YOLO txt, Pascal VOC XML
and mask-PNG folders the tests draw, uploaded to a real server; the boxes and masks read back
through the API, bad annotations refused with their reasons, a second run skipping what is
stored; and `modelmill dataset export --format coco` read back by `modelmill import`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from PIL import Image
from pycocotools import mask as coco_mask  # a decoder the exporter does not use

from api.helpers import assert_ok, input_ids
from api.test_cli_client import modelmill, ok
from conftest import Account, Api, Server, create_app

WIDTH, HEIGHT = 40, 20


@pytest.fixture
def app_api(server: Server, owner: Account, app_id: str) -> Api:
    return Api(server, "grpc", owner.key, owner.user_id, app_id)


def draw(path: Path, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)
    return path


def boxes(api: Api, input_id: str) -> list[tuple[str, str, tuple[float, ...]]]:
    """(concept id, concept name, (top, left, bottom, right)) of each box, rounded."""
    found = []
    for region in assert_ok(api.GetInput(input_id=input_id)).input.data.regions:
        box = region.region_info.bounding_box
        sides = (box.top_row, box.left_col, box.bottom_row, box.right_col)
        concept = region.data.concepts[0]
        found.append((concept.id, concept.name, tuple(round(v, 4) for v in sides)))
    return sorted(found)


def import_(server: Server, owner: Account, api: Api, path: Path, *args: str) -> str:
    result = modelmill(server, owner.key, "import", str(path), "--app", api.app_id, *args)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.stdout


def test_import_coco_boxes_clipped_and_refused_then_resumed(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    root = tmp_path / "coco"
    draw(root / "images" / "street.jpg")
    draw(root / "images" / "empty.jpg")
    document = {
        "images": [
            {"id": 1, "file_name": "street.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 2, "file_name": "empty.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 3, "file_name": "gone.jpg", "width": WIDTH, "height": HEIGHT},
        ],
        "categories": [{"id": 1, "name": "traffic light"}, {"id": 2, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 2, 8, 10]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [30, 10, 20, 20]},  # sticks out
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [50, 0, 5, 5]},  # outside
            {"id": 13, "image_id": 1, "category_id": 9, "bbox": [0, 0, 5, 5]},  # no category
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances.json").write_text(json.dumps(document))

    out = import_(server, owner, app_api, root, "--dataset", "street")
    assert "2 uploaded, 0 already stored, 3 refused" in out, out
    assert "1 boxes stuck out of their image" in out
    assert "lies outside the image" in out and "category 9 is not listed" in out
    assert "image file not found" in out and "gone.jpg" in out
    assert boxes(app_api, "street") == [
        ("car", "car", (0.5, 0.75, 1.0, 1.0)),
        ("traffic-light", "traffic light", (0.1, 0.1, 0.6, 0.3)),
    ]
    assert boxes(app_api, "empty") == []
    in_dataset = assert_ok(app_api.ListDatasetInputs(dataset_id="street", per_page=10))
    assert len(in_dataset.dataset_inputs) == 2

    again = import_(server, owner, app_api, root / "annotations" / "instances.json")
    assert "0 uploaded, 2 already stored, 3 refused" in again, again


def test_import_yolo_labels_with_a_bad_line(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    root = tmp_path / "yolo"
    draw(root / "images" / "a.png")
    draw(root / "images" / "b.jpg")
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "labels" / "a.txt").write_text(
        "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n7 0.5 0.5 0.1 0.1\n"
    )
    (root / "labels" / "b.txt").write_text("")  # a negative: no boxes
    (root / "labels" / "c.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no image

    out = import_(server, owner, app_api, root)
    assert "2 uploaded, 0 already stored, 2 refused" in out, out
    assert "class 7 is not one of 0-1" in out and "no image named c.*" in out
    assert boxes(app_api, "a") == [
        ("cat", "cat", (0.25, 0.25, 0.75, 0.75)),
        ("dog", "dog", (0.15, 0.2, 0.35, 0.3)),
    ]
    assert sorted(input_ids(app_api)) == ["a", "b"]


def test_import_voc_xml_with_a_broken_file(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    root = tmp_path / "voc"
    draw(root / "JPEGImages" / "0001.jpg")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "0001.xml").write_text(
        "<annotation><filename>0001.jpg</filename>"
        f"<size><width>{WIDTH}</width><height>{HEIGHT}</height></size>"
        "<object><name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>20</xmax><ymax>10</ymax></bndbox></object>"
        "<object><name></name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>"
    )
    (root / "Annotations" / "0002.xml").write_text("<annotation><filename>")

    out = import_(server, owner, app_api, root, "--format", "voc")
    assert "1 uploaded, 0 already stored, 2 refused" in out, out
    assert "object has no name" in out and "not well-formed XML" in out
    assert boxes(app_api, "0001") == [("person", "person", (0.0, 0.0, 0.5, 0.5))]


def test_import_mask_folders(server: Server, owner: Account, app_api: Api, tmp_path: Path) -> None:
    root = tmp_path / "seg"
    indices = np.zeros((HEIGHT, WIDTH), np.uint8)
    indices[:10, :20] = 1
    indices[15:, 30:] = 2
    draw(root / "images" / "scene.jpg")
    (root / "masks").mkdir()
    Image.fromarray(indices, "L").save(root / "masks" / "scene.png")
    draw(root / "images" / "small.jpg", (8, 8))
    Image.fromarray(indices, "L").save(root / "masks" / "small.png")  # not the image's size
    (root / "classes.txt").write_text("background\nroad\nsky\n")

    out = import_(server, owner, app_api, root)
    assert "1 uploaded, 0 already stored, 1 refused" in out, out
    assert "a mask must be its image's size" in out
    regions = assert_ok(app_api.GetInput(input_id="scene")).input.data.regions
    masks = {
        r.data.concepts[0].id: np.asarray(Image.open(io.BytesIO(r.region_info.mask.image.base64)))
        for r in regions
    }
    assert sorted(masks) == ["road", "sky"]
    assert ((masks["road"] > 0) == (indices == 1)).all()
    assert ((masks["sky"] > 0) == (indices == 2)).all()


def test_bad_layouts_say_what_to_change(
    server: Server, owner: Account, app_api: Api, tmp_path: Path
) -> None:
    (tmp_path / "yolo" / "labels").mkdir(parents=True)
    (tmp_path / "yolo" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    no_names = modelmill(
        server, owner.key, "import", str(tmp_path / "yolo"), "--app", app_api.app_id,
        "--format", "yolo",
    )  # fmt: skip
    assert no_names.returncode == 2 and "classes.txt" in no_names.stdout
    (tmp_path / "bad.json").write_text("[1, 2]")
    not_coco = modelmill(server, owner.key, "import", str(tmp_path / "bad.json"), "--app", "a")
    assert not_coco.returncode == 2 and "no COCO 'images' list" in not_coco.stdout
    draw(tmp_path / "seg" / "images" / "a.jpg")
    draw(tmp_path / "seg" / "masks" / "a.png")
    no_classes = modelmill(server, owner.key, "import", str(tmp_path / "seg"), "--app", "a")
    assert no_classes.returncode == 2 and "classes.txt" in no_classes.stdout
    assert input_ids(app_api) == []


@pytest.mark.parametrize("frozen", [False, True], ids=["current", "version"])
def test_dataset_export_coco_then_import_round_trips(
    server: Server, owner: Account, tmp_path: Path, frozen: bool
) -> None:
    source = Api(server, "grpc", owner.key, owner.user_id, create_app(server, owner))
    root = tmp_path / "yolo"
    draw(root / "images" / "a.png")
    draw(root / "images" / "b.jpg")
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n")
    (root / "labels" / "b.txt").write_text("")
    ok(modelmill(server, owner.key, "import", str(root), "--app", source.app_id, "--dataset", "d"))
    seg = tmp_path / "seg"
    indices = np.zeros((HEIGHT, WIDTH), np.uint8)
    indices[2:9, 3:17] = 1
    draw(seg / "images" / "scene.jpg")
    (seg / "masks").mkdir()
    Image.fromarray(indices, "L").save(seg / "masks" / "scene.png")
    (seg / "classes.txt").write_text("background\ncat\n")
    ok(modelmill(server, owner.key, "import", str(seg), "--app", source.app_id, "--dataset", "d"))

    version: list[str] = []
    if frozen:
        frozen_version = pb.DatasetVersion(id="v1")
        assert_ok(source.PostDatasetVersions(dataset_id="d", dataset_versions=[frozen_version]))
        version = ["--version", "v1"]
    out = tmp_path / "copy"
    ok(
        modelmill(
            server, owner.key, "dataset", "export", "--app", source.app_id, "--dataset", "d",
            "--format", "coco", "--out", str(out), *version,
        )
    )  # fmt: skip
    document = json.loads((out / "annotations.json").read_text())
    assert sorted(c["name"] for c in document["categories"]) == ["cat", "dog"]
    scene = next(i for i in document["images"] if i["file_name"].startswith("scene"))
    (mask,) = [a for a in document["annotations"] if a["image_id"] == scene["id"]]
    assert mask["bbox"] == [3, 2, 14, 7] and mask["area"] == 14 * 7
    assert (coco_mask.decode(mask["segmentation"]) > 0).tolist() == (indices == 1).tolist()

    # The importer takes COCO's boxes: the mask comes back as its box.
    target = Api(server, "grpc", owner.key, owner.user_id, create_app(server, owner))
    ok(modelmill(server, owner.key, "import", str(out), "--app", target.app_id))
    assert sorted(input_ids(target)) == ["a", "b", "scene"]
    for input_id in ("a", "b"):
        assert boxes(target, input_id) == boxes(source, input_id)
    assert boxes(target, "scene") == [("cat", "cat", (0.1, 0.075, 0.45, 0.425))]

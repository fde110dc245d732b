"""The COCO writer without a server: a box, a polygon and a mask region of an image, and a text
it leaves out, written as COCO that pycocotools reads back."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from clarifai_grpc.grpc.api import resources_pb2 as pb
from PIL import Image
from pycocotools.coco import COCO

from modelmill.client.exporters import ExportedInput, write_coco

WIDTH, HEIGHT = 40, 20


def png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def region(concept: str, **info: object) -> pb.Region:
    message = pb.Region(region_info=pb.RegionInfo(**info))  # type: ignore[arg-type]
    message.data.concepts.add(id=concept, name=concept, value=1.0)
    return message


def test_coco_holds_boxes_polygons_and_masks_and_leaves_texts_out(tmp_path: Path) -> None:
    image = png(np.full((HEIGHT, WIDTH, 3), 90, np.uint8), "RGB")
    inside = np.zeros((HEIGHT, WIDTH), np.uint8)
    inside[10:20, 0:8] = 255
    triangle = [pb.Point(row=0.0, col=0.5), pb.Point(row=0.5, col=1.0), pb.Point(row=0.5, col=0.5)]
    box = pb.BoundingBox(top_row=0.1, left_col=0.25, bottom_row=0.6, right_col=0.5)
    regions = [
        region("car", bounding_box=box),
        region("sign", polygon=pb.Polygon(points=triangle)),
        region("road", mask=pb.Mask(image=pb.Image(base64=png(inside)))),
    ]
    inputs = [
        ExportedInput("street", "image", lambda: image, suffix=".png", regions=regions),
        ExportedInput("note", "text", lambda: b"hello"),
    ]

    notes = write_coco(iter(inputs), tmp_path)

    assert notes == ["note: a text input; COCO holds images only"]
    assert (tmp_path / "images" / "street.png").read_bytes() == image
    coco = COCO(str(tmp_path / "annotations.json"))
    assert coco.imgs[1] == {"id": 1, "file_name": "street.png", "width": WIDTH, "height": HEIGHT}
    by_name = {coco.cats[a["category_id"]]["name"]: a for a in coco.anns.values()}
    assert by_name["car"]["bbox"] == [10.0, 2.0, 10.0, 10.0]
    assert "segmentation" not in by_name["car"]
    assert by_name["sign"]["segmentation"] == [[20.0, 0.0, 40.0, 10.0, 20.0, 10.0]]
    assert (coco.annToMask(by_name["road"]) == (inside > 0)).all()
    assert by_name["road"]["bbox"] == [0.0, 10.0, 8.0, 10.0] and by_name["road"]["area"] == 80
    assert json.loads((tmp_path / "annotations.json").read_text())["categories"] == [
        {"id": 1, "name": "car"},
        {"id": 2, "name": "sign"},
        {"id": 3, "name": "road"},
    ]

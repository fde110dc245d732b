"""Importing box annotations (COCO JSON, YOLO txt, Pascal VOC XML) from files the tests write:
boxes become fractions of their image, boxes sticking out are clipped, boxes outside or empty
and bad files are reported with a reason, never half-taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from modelmill.formats.detection import (
    ImportFormatError,
    read_coco,
    read_voc,
    read_yolo,
)

WIDTH, HEIGHT = 200, 100


def _image(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90)).save(path)
    return path


def test_coco_boxes_become_fractions_clipped_or_refused(tmp_path):
    images = tmp_path / "images"
    _image(images, "cat 1.jpg")
    _image(images, "empty.jpg")
    document = {
        "images": [
            {"id": 7, "file_name": "cat 1.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 8, "file_name": "empty.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 9, "file_name": "missing.jpg", "width": WIDTH, "height": HEIGHT},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [20, 10, 100, 50]},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [150, 50, 100, 100]},  # sticks out
            {"id": 3, "image_id": 7, "category_id": 2, "bbox": [300, 10, 10, 10]},  # outside
            {"id": 4, "image_id": 7, "category_id": 5, "bbox": [0, 0, 10, 10]},  # no category
            {"id": 5, "image_id": 7, "category_id": 1, "bbox": [10, 10, 0, 10]},  # no area
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(document))
    result = read_coco(tmp_path / "instances.json", images)
    by_id = {r.input_id: r for r in result.records}
    assert set(by_id) == {"cat-1", "empty"}
    cat = by_id["cat-1"]
    assert cat.image_path == images / "cat 1.jpg"
    assert [(b.concept, b.box) for b in cat.boxes] == [
        ("cat", (0.1, 0.1, 0.6, 0.6)),
        ("dog", (0.5, 0.75, 1.0, 1.0)),
    ]
    assert by_id["empty"].boxes == ()  # a negative image
    assert result.clipped == 1
    reasons = {r.source: r.reason for r in result.invalid}
    assert "outside the image" in reasons["cat 1.jpg annotation 3"]
    assert "category 5" in reasons["cat 1.jpg annotation 4"]
    assert "no area" in reasons["cat 1.jpg annotation 5"]
    assert "not found" in reasons["missing.jpg"]
    assert result.concepts == ["cat", "dog"]


def test_coco_that_is_not_coco_is_refused_with_the_reason(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ImportFormatError, match="not readable JSON"):
        read_coco(tmp_path / "bad.json", tmp_path)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ImportFormatError, match="no COCO 'images'"):
        read_coco(tmp_path / "list.json", tmp_path)


def test_yolo_lines_are_centre_and_size_fractions(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _image(images, "a.png")
    _image(images, "b.jpg")
    labels.mkdir()
    (labels / "classes.txt").write_text("cat\ndog\n")
    (labels / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"
        "1 0.95 0.5 0.2 0.2\n"  # sticks out on the right: clipped
        "3 0.5 0.5 0.1 0.1\n"  # no such class
        "0 0.5 0.5\n"  # too few numbers
        "1 1.5 1.5 0.1 0.1\n"  # outside
    )
    (labels / "b.txt").write_text("")  # a negative image
    (labels / "c.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no image
    result = read_yolo(labels, images)
    by_id = {r.input_id: r for r in result.records}
    assert set(by_id) == {"a", "b"}
    boxes = [(b.concept, tuple(round(v, 6) for v in b.box)) for b in by_id["a"].boxes]
    assert boxes == [("cat", (0.3, 0.4, 0.7, 0.6)), ("dog", (0.4, 0.85, 0.6, 1.0))]
    assert by_id["b"].boxes == ()
    assert result.clipped == 1
    reasons = {r.source: r.reason for r in result.invalid}
    assert "not one of 0-1" in reasons["a.txt line 3"]
    assert "class cx cy" in reasons["a.txt line 4"]
    assert "outside" in reasons["a.txt line 5"]
    assert "no image" in reasons["c.txt"]


def test_yolo_without_class_names_says_how_to_give_them(tmp_path):
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ImportFormatError, match="classes.txt"):
        read_yolo(tmp_path, tmp_path)
    result = read_yolo(tmp_path, tmp_path, class_names=["cat"])
    assert result.records == [] and "no image" in result.invalid[0].reason


VOC = """<annotation>
  <filename>{name}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
VOC_OBJECT = (
    "<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
    "<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
)


def test_voc_corners_are_one_based_inclusive_pixels(tmp_path):
    images = tmp_path / "JPEGImages"
    _image(images, "p.jpg")
    objects = "".join(
        [
            VOC_OBJECT.format(name="person", x1=1, y1=1, x2=100, y2=50),
            VOC_OBJECT.format(name="dog", x1=181, y1=51, x2=260, y2=100),  # sticks out
            VOC_OBJECT.format(name="dog", x1="a", y1=1, x2=10, y2=10),  # not a number
            "<object><bndbox><xmin>1</xmin></bndbox></object>",  # no name
        ]
    )
    (tmp_path / "p.xml").write_text(VOC.format(name="p.jpg", w=WIDTH, h=HEIGHT, objects=objects))
    (tmp_path / "broken.xml").write_text("<annotation><filename>")
    (tmp_path / "bomb.xml").write_text(
        '<!DOCTYPE a [<!ENTITY x "xx">]><annotation>&x;</annotation>'
    )
    result = read_voc(tmp_path.glob("*.xml"), images)
    assert [r.input_id for r in result.records] == ["p"]
    assert [(b.concept, b.box) for b in result.records[0].boxes] == [
        ("person", (0.0, 0.0, 0.5, 0.5)),
        ("dog", (0.5, 0.9, 1.0, 1.0)),
    ]
    assert result.clipped == 1
    reasons = {r.source: r.reason for r in result.invalid}
    assert "not finite" in reasons["p.xml object 3"]
    assert "no name" in reasons["p.xml object 4"]
    assert "not well-formed" in reasons["broken.xml"]
    assert "entities" in reasons["bomb.xml"]

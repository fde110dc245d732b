"""Box annotations people already have, read into records a detector trains on: COCO JSON,
YOLO txt folders and Pascal VOC XML files. Each parser returns `DetectionImport`: one record
per image (input id, image path, boxes as fractions of the image with their concept) and the
boxes it could not take, each with a reason a person can act on.

Boxes that stick out of the image are clipped to it (and counted); boxes wholly outside it, of
no area, or with numbers that are not numbers are left out and listed in `invalid`. An image
whose file is missing is listed too, with no record. Pure: no database, no blob store.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
YOLO_CLASS_FILES = ("classes.txt", "obj.names")
YOLO_DATA_FILES = ("data.yaml", "data.yml", "dataset.yaml")  # Ultralytics, Roboflow: `names`
YOLO_FIELDS = 5  # class cx cy w h
MIN_SIDE = 1e-6  # a clipped box thinner than this share of the image has no area
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ImportedBox:
    concept: str
    box: tuple[float, float, float, float]  # top, left, bottom, right fractions of the image


@dataclass(frozen=True)
class ImportedImage:
    input_id: str
    image_path: Path
    boxes: tuple[ImportedBox, ...]
    clipped: int = 0  # of its boxes, how many stuck out of the image and were clipped

    @property
    def concepts(self) -> list[str]:
        return sorted({b.concept for b in self.boxes})


@dataclass(frozen=True)
class Rejected:
    """Something the import left out: `source` names the file (and annotation) it came from."""

    source: str
    reason: str


@dataclass
class DetectionImport:
    records: list[ImportedImage] = field(default_factory=list)
    invalid: list[Rejected] = field(default_factory=list)
    clipped: int = 0  # boxes partly outside their image, clipped to it

    @property
    def concepts(self) -> list[str]:
        return sorted({c for record in self.records for c in record.concepts})


class ImportFormatError(ValueError):
    """The file is not in the format it was given as; the message says what is wrong."""


def input_id_of(name: str, taken: set[str]) -> str:
    """An input id from a file name (its stem, with characters ids may not hold replaced),
    made unique among `taken` (which it joins)."""
    base = _ID_UNSAFE.sub("-", Path(name).stem).strip("-") or "image"
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        candidate = f"{base}-{number}"
    taken.add(candidate)
    return candidate


def fraction_box(
    left: float, top: float, right: float, bottom: float, result: DetectionImport, source: str
) -> tuple[float, float, float, float] | None:
    """(top, left, bottom, right) fractions clipped to the image, or None (recorded in
    `result.invalid`) when the box is not finite, inverted, outside the image or empty."""
    values = (left, top, right, bottom)
    if not all(math.isfinite(v) for v in values):
        result.invalid.append(Rejected(source, "box coordinates are not finite numbers"))
        return None
    if right <= left or bottom <= top:
        result.invalid.append(Rejected(source, f"box has no area or is inverted: {values}"))
        return None
    clipped = tuple(min(1.0, max(0.0, v)) for v in values)
    c_left, c_top, c_right, c_bottom = clipped
    if c_right - c_left < MIN_SIDE or c_bottom - c_top < MIN_SIDE:
        result.invalid.append(Rejected(source, f"box lies outside the image: {values}"))
        return None
    if clipped != values:
        result.clipped += 1
    return c_top, c_left, c_bottom, c_right


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---- COCO -------------------------------------------------------------------------------------


def read_coco(annotation_file: Path, images_dir: Path) -> DetectionImport:
    """COCO detection JSON: images (id, file_name, width, height), categories (id, name) and
    annotations (image_id, category_id, bbox [x, y, width, height] in pixels). Crowd
    annotations are taken as boxes too. Images are looked up under `images_dir`."""
    try:
        document = json.loads(annotation_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImportFormatError(f"{annotation_file.name} is not readable JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise ImportFormatError(f"{annotation_file.name} has no COCO 'images' list")
    categories = {
        c.get("id"): str(c.get("name", c.get("id")))
        for c in document.get("categories", [])
        if isinstance(c, dict)
    }
    boxes: dict[Any, list[Mapping[str, Any]]] = {}
    for annotation in document.get("annotations", []):
        if isinstance(annotation, dict):
            boxes.setdefault(annotation.get("image_id"), []).append(annotation)
    result = DetectionImport()
    taken: set[str] = set()
    for image in document["images"]:
        if not isinstance(image, dict) or "file_name" not in image:
            result.invalid.append(Rejected(annotation_file.name, "an image entry has no file_name"))
            continue
        name = str(image["file_name"])
        path = images_dir / name
        width, height = _number(image.get("width")), _number(image.get("height"))
        if not path.is_file():
            result.invalid.append(Rejected(name, f"image file not found under {images_dir}"))
            continue
        if not (width > 0 and height > 0):
            result.invalid.append(Rejected(name, "image entry has no positive width and height"))
            continue
        found, clipped_before = [], result.clipped
        for annotation in boxes.get(image.get("id"), []):
            source = f"{name} annotation {annotation.get('id', '?')}"
            concept = categories.get(annotation.get("category_id"))
            bbox = annotation.get("bbox")
            if concept is None:
                result.invalid.append(
                    Rejected(source, f"category {annotation.get('category_id')} is not listed")
                )
                continue
            if not isinstance(bbox, list) or len(bbox) != 4:
                result.invalid.append(Rejected(source, "bbox is not [x, y, width, height]"))
                continue
            x, y, w, h = (_number(v) for v in bbox)
            box = fraction_box(
                x / width, y / height, (x + w) / width, (y + h) / height, result, source
            )
            if box is not None:
                found.append(ImportedBox(concept, box))
        result.records.append(
            ImportedImage(
                input_id_of(name, taken), path, tuple(found), result.clipped - clipped_before
            )
        )
    return result


# ---- YOLO -------------------------------------------------------------------------------------


def yolo_class_names(folder: Path) -> list[str] | None:
    """Class names in `folder`: classes.txt or obj.names (one a line), or an Ultralytics
    data.yaml's `names` (a list, or a map from class number to name); None when it has none."""
    for name in YOLO_CLASS_FILES:
        path = folder / name
        if path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for name in YOLO_DATA_FILES:
        path = folder / name
        if path.is_file():
            return _yaml_names(path)
    return None


def _yaml_names(path: Path) -> list[str]:
    try:
        document = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ImportFormatError(f"{path.name} is not readable YAML: {error}") from error
    names = document.get("names") if isinstance(document, dict) else None
    if isinstance(names, dict) and set(names) == set(range(len(names))):
        names = [names[number] for number in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ImportFormatError(
            f"{path.name} has no 'names': a list of class names, or a map from class number "
            "(0, 1, ...) to name"
        )
    return [str(name) for name in names]


def _image_for(stem: str, images_dir: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images_dir / f"{stem}{suffix}", images_dir / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_yolo(
    labels_dir: Path,
    images_dir: Path,
    class_names: Sequence[str] | None = None,
    taken: set[str] | None = None,
) -> DetectionImport:
    """YOLO txt: one file per image (same stem, same folder under `images_dir` as the label
    file's under `labels_dir`: labels/train/a.txt is images/train/a.jpg), lines of
    `class cx cy width height` as fractions of the image. Class names from `class_names`, else
    classes.txt / obj.names / data.yaml in `labels_dir`. An image with an empty label file is a
    negative (a record with no boxes). Input ids are unique among `taken` (which they join)."""
    names = list(class_names) if class_names is not None else yolo_class_names(labels_dir)
    if not names:
        raise ImportFormatError(
            f"No class names for the YOLO labels in {labels_dir.name}: add classes.txt (one "
            "name per line, in class-number order) or a data.yaml with 'names'."
        )
    result = DetectionImport()
    taken = set() if taken is None else taken
    label_files = sorted(p for p in labels_dir.rglob("*.txt") if p.name not in YOLO_CLASS_FILES)
    for label_file in label_files:
        relative = label_file.relative_to(labels_dir)
        folder = images_dir / relative.parent
        image = _image_for(label_file.stem, folder)
        if image is None:
            result.invalid.append(
                Rejected(str(relative), f"no image named {label_file.stem}.* in {folder}")
            )
            continue
        found, clipped_before = [], result.clipped
        for number, line in enumerate(label_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            source = f"{relative} line {number}"
            fields = line.split()
            if len(fields) < YOLO_FIELDS:
                result.invalid.append(Rejected(source, "expected: class cx cy width height"))
                continue
            klass = _number(fields[0])
            if not klass.is_integer() or not 0 <= klass < len(names):
                result.invalid.append(
                    Rejected(source, f"class {fields[0]} is not one of 0-{len(names) - 1}")
                )
                continue
            cx, cy, w, h = (_number(v) for v in fields[1:YOLO_FIELDS])
            box = fraction_box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, result, source)
            if box is not None:
                found.append(ImportedBox(names[int(klass)], box))
        result.records.append(
            ImportedImage(
                input_id_of(image.name, taken), image, tuple(found), result.clipped - clipped_before
            )
        )
    return result


# ---- Pascal VOC -------------------------------------------------------------------------------


def _parse_xml(path: Path) -> ElementTree.Element:
    text = path.read_text(errors="replace")
    # Entity declarations are how XML bombs work; VOC files never need them.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ImportFormatError(f"{path.name} declares a DOCTYPE or entities; VOC files have none")
    try:
        return ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ImportFormatError(f"{path.name} is not well-formed XML: {error}") from error


def read_voc(xml_files: Iterable[Path], images_dir: Path) -> DetectionImport:
    """Pascal VOC XML, one file per image: filename, size (width, height) and objects with a
    name and a bndbox of 1-based inclusive pixel corners (xmin, ymin, xmax, ymax)."""
    result = DetectionImport()
    taken: set[str] = set()
    for xml_file in sorted(xml_files):
        try:
            root = _parse_xml(xml_file)
        except ImportFormatError as error:
            result.invalid.append(Rejected(xml_file.name, str(error)))
            continue
        name = (root.findtext("filename") or "").strip() or f"{xml_file.stem}.jpg"
        image = images_dir / name
        if not image.is_file():
            result.invalid.append(
                Rejected(xml_file.name, f"image {name} not found in {images_dir}")
            )
            continue
        width = _number(root.findtext("size/width"))
        height = _number(root.findtext("size/height"))
        if not (width > 0 and height > 0):
            result.invalid.append(Rejected(xml_file.name, "no positive size/width and size/height"))
            continue
        found, clipped_before = [], result.clipped
        for number, obj in enumerate(root.findall("object"), start=1):
            source = f"{xml_file.name} object {number}"
            concept = (obj.findtext("name") or "").strip()
            if not concept:
                result.invalid.append(Rejected(source, "object has no name"))
                continue
            xmin, ymin, xmax, ymax = (
                _number(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")
            )
            # 1-based inclusive pixels: pixel xmin starts at xmin - 1, pixel xmax ends at xmax.
            box = fraction_box(
                (xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height, result, source
            )
            if box is not None:
                found.append(ImportedBox(concept, box))
        result.records.append(
            ImportedImage(
                input_id_of(name, taken), image, tuple(found), result.clipped - clipped_before
            )
        )
    return result

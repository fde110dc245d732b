"""Dataset folders as annotation tools write them (COCO, YOLO, Pascal VOC, mask PNGs): which
layout a folder holds, and its images with their regions in the Clarifai Data shape (what
PostInputs takes), so the command line and the web upload import them alike.

Layouts (ROOT is the folder; a COCO import may also name its JSON file):
- coco: ROOT/*.json or ROOT/annotations/*.json (one file), images in ROOT/images or ROOT
- yolo: ROOT/labels/**.txt with images at the same place in ROOT/images (Ultralytics:
  labels/train/a.txt is images/train/a.jpg), or SPLIT/labels and SPLIT/images (Roboflow), or
  ROOT/*.txt beside the images; names from classes.txt, obj.names or data.yaml
- voc: ROOT/Annotations/*.xml (or ROOT/*.xml), images in ROOT/JPEGImages, ROOT/images or ROOT
- masks: ROOT/images + ROOT/masks (or VOC's JPEGImages + SegmentationClass) and ROOT/classes.txt
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from modelmill.formats.detection import (
    YOLO_CLASS_FILES,
    YOLO_DATA_FILES,
    DetectionImport,
    ImportedBox,
    ImportFormatError,
    input_id_of,
    read_coco,
    read_voc,
    read_yolo,
    yolo_class_names,
)
from modelmill.formats.segmentation import MaskRegion, parse_mask_folders, read_classes

MASK_FOLDERS = ("masks", "SegmentationClass")
MASK_IMAGE_FOLDERS = ("images", "JPEGImages")
CLASSES_FILE = "classes.txt"
_NOT_ID = re.compile(r"[^A-Za-z0-9_.\-]+")
_NOT_LEADING = re.compile(r"^[^A-Za-z0-9]+")  # ids start with a letter or a digit


@dataclass(frozen=True)
class LabelledImage:
    input_id: str
    path: Path
    regions: list[dict[str, Any]]  # Clarifai Region dicts: a bounding_box or a mask, a concept
    clipped: int = 0  # boxes that stuck out of the image and were clipped to it


@dataclass
class LabelledImport:
    images: list[LabelledImage] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file or annotation, why)


def concept_label(name: str) -> dict[str, Any]:
    """A concept label from a class name: the id keeps only the characters ids may hold
    ('traffic light' → 'traffic-light'), the name stays as written."""
    concept_id = _NOT_LEADING.sub("", _NOT_ID.sub("-", name.strip())).rstrip("-.") or "concept"
    return {"id": concept_id, "name": name.strip(), "value": 1.0}


def box_region(box: ImportedBox) -> dict[str, Any]:
    top, left, bottom, right = box.box
    sides = {"top_row": top, "left_col": left, "bottom_row": bottom, "right_col": right}
    return {
        "region_info": {"bounding_box": sides},
        "data": {"concepts": [concept_label(box.concept)]},
    }


def mask_region(region: MaskRegion) -> dict[str, Any]:
    encoded = base64.b64encode(region.mask_png).decode()
    return {
        "region_info": {"mask": {"image": {"base64": encoded}}},
        "data": {"concepts": [concept_label(region.concept)]},
    }


def detect_layout(paths: Iterable[PurePath]) -> str | None:
    """The layout of a folder from its files' paths relative to it; None when it holds no
    annotations where a layout keeps them (plain images, e.g. an ImageFolder tree)."""
    files = list(paths)
    folders = {p.parts[0] for p in files if len(p.parts) > 1}

    def annotated(suffix: str, folder: str) -> bool:
        """A file with `suffix` at the top or in `folder`/, where the readers look for it."""
        return any(p.suffix.lower() == suffix and p.parts[:-1] in ((), (folder,)) for p in files)

    if folders & set(MASK_FOLDERS):
        return "masks"
    if annotated(".json", "annotations"):
        return "coco"
    if annotated(".xml", "Annotations"):
        return "voc"
    names = YOLO_CLASS_FILES + YOLO_DATA_FILES
    if any(p.name in names and p.parts[:-1] in ((), ("labels",)) for p in files):
        return "yolo"
    return None


def _folder(root: Path, *names: str) -> Path:
    """The first of ROOT/NAME that exists, else ROOT itself."""
    return next((root / name for name in names if (root / name).is_dir()), root)


def _boxes(result: DetectionImport) -> LabelledImport:
    return LabelledImport(
        [
            LabelledImage(r.input_id, r.image_path, [box_region(b) for b in r.boxes], r.clipped)
            for r in result.records
        ],
        [(r.source, r.reason) for r in result.invalid],
    )


def read_coco_layout(path: Path) -> LabelledImport:
    if path.is_file():
        annotation = path
        root = path.parent.parent if path.parent.name == "annotations" else path.parent
    else:
        found = sorted(path.glob("*.json")) + sorted(path.glob("annotations/*.json"))
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) or "none"
            raise ImportFormatError(
                f"A COCO folder holds one JSON file (at its top or in annotations/); {path.name} "
                f"holds {listed}. Name the file to import instead of the folder."
            )
        annotation, root = found[0], path
    return _boxes(read_coco(annotation, _folder(root, "images")))


def read_yolo_layout(root: Path) -> LabelledImport:
    if (root / "labels").is_dir():
        pairs = [(root / "labels", _folder(root, "images"))]
    else:
        splits = sorted(p for p in root.glob("*/labels") if p.is_dir())
        pairs = [(labels, labels.parent / "images") for labels in splits] or [(root, root)]
    names = yolo_class_names(root / "labels") or yolo_class_names(root)
    result, taken = DetectionImport(), set[str]()
    for labels, images in pairs:
        part = read_yolo(labels, images, names, taken)
        result.records += part.records
        result.invalid += part.invalid
    return _boxes(result)


def read_voc_layout(root: Path) -> LabelledImport:
    annotations = _folder(root, "Annotations")
    return _boxes(read_voc(annotations.glob("*.xml"), _folder(root, "JPEGImages", "images")))


def read_mask_layout(root: Path) -> LabelledImport:
    images, masks = _folder(root, *MASK_IMAGE_FOLDERS), _folder(root, *MASK_FOLDERS)
    if images == root or masks == root or not (root / CLASSES_FILE).is_file():
        raise ImportFormatError(
            f"A mask folder holds images/ and masks/ (or JPEGImages/ and SegmentationClass/) and "
            f"{CLASSES_FILE} (line 1 names pixel value 0, the background); {root.name} lacks some."
        )
    result = parse_mask_folders(images, masks, read_classes(root / CLASSES_FILE))
    taken: set[str] = set()
    return LabelledImport(
        [
            LabelledImage(
                input_id_of(image.name.replace("/", "-"), taken),
                image.path,
                [mask_region(region) for region in image.regions],
            )
            for image in result.images
        ],
        [(refusal.name, refusal.reason) for refusal in result.refused],
    )


LAYOUTS: dict[str, Callable[[Path], LabelledImport]] = {
    "coco": read_coco_layout,
    "yolo": read_yolo_layout,
    "voc": read_voc_layout,
    "masks": read_mask_layout,
}

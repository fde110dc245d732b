"""Writing a dataset out of the API as files the importers read back: one function per format
(EXPORTERS), fed with the dataset's current inputs (ListDatasetInputs) or a frozen version's
(the Clarifai archive PutDatasetVersionExports writes). COCO holds the regions: boxes as bbox,
masks as RLE and polygons as polygons (each with its bbox)."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from clarifai_grpc.grpc.api import resources_pb2 as pb
from google.protobuf import json_format
from PIL import Image

from modelmill.client.connection import Connection
from modelmill.client.importers import UNLABELLED_FOLDER
from modelmill.formats.layouts import concept_label

DOWNLOAD_TIMEOUT_S = 60.0
ARCHIVE_MIMETYPE = b"application/x.clarifai-data+protobuf"
IMAGE_SUFFIXES = {"png": ".png", "gif": ".gif", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}
FILES_FOLDER = "files"  # where csv and jsonl exports keep their images, beside the file
COCO_FILE = "annotations.json"
COCO_IMAGES = "images"
PIXEL_DIGITS = 2  # COCO coordinates are pixels; hundredths keep float32 fractions' precision


@dataclass
class ExportedInput:
    id: str
    kind: str  # "image" or "text"
    content: Callable[[], bytes]
    concepts: list[str] = field(default_factory=list)  # positive labels, in order
    metadata: dict[str, Any] = field(default_factory=dict)
    suffix: str = ".jpg"
    regions: list[pb.Region] = field(default_factory=list)


def download(url: str, key: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Key {key}"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
        return bytes(response.read())


def _exported(message: pb.Input, key: str) -> ExportedInput:
    data = message.data
    concepts = [c.id for c in data.concepts if c.value > 0]
    metadata = json_format.MessageToDict(data.metadata) if data.HasField("metadata") else {}
    if data.HasField("image"):
        hosted = data.image.hosted
        url = f"{hosted.prefix}/orig/{hosted.suffix}" if hosted.prefix else data.image.url
        suffix = IMAGE_SUFFIXES.get((data.image.image_info.format or "").lower(), ".jpg")
        return ExportedInput(
            message.id,
            "image",
            lambda: download(url, key),
            concepts,
            metadata,
            suffix,
            list(data.regions),
        )
    if data.text.raw or not data.text.hosted.prefix:
        raw = data.text.raw.encode()
        return ExportedInput(message.id, "text", lambda: raw, concepts, metadata, ".txt")
    hosted = data.text.hosted
    url = f"{hosted.prefix}/orig/{hosted.suffix}"
    return ExportedInput(message.id, "text", lambda: download(url, key), concepts, metadata)


def dataset_inputs(
    connection: Connection, dataset_id: str, version_id: str = ""
) -> Iterator[ExportedInput]:
    """The inputs of a dataset now, or of one of its versions as it was frozen."""
    if not version_id:
        for item in connection.pages("ListDatasetInputs", "dataset_inputs", dataset_id=dataset_id):
            yield _exported(item.input, connection.key)
        return
    export = pb.DatasetVersionExport(format=pb.DatasetVersionExportFormat.CLARIFAI_DATA_PROTOBUF)
    reply = connection.call(
        "PutDatasetVersionExports",
        dataset_id=dataset_id,
        dataset_version_id=version_id,
        exports=[export],
    )
    archive = zipfile.ZipFile(io.BytesIO(download(reply.exports[0].url, connection.key)))
    if archive.read("mimetype") != ARCHIVE_MIMETYPE:
        raise ValueError("The server's export archive is not a Clarifai protobuf archive.")
    for name in archive.namelist():
        if name != "mimetype":
            for message in pb.InputBatch.FromString(archive.read(name)).inputs:
                yield _exported(message, connection.key)


# ---- formats -------------------------------------------------------------------------------------


def write_image_folder(inputs: Iterator[ExportedInput], out: Path) -> list[str]:
    """OUT/CONCEPT/ID.jpg (the first positive concept); unlabelled images in OUT/_unlabelled.
    Texts have no place in an image folder and are left out (listed in the notes)."""
    notes = []
    for item in inputs:
        if item.kind != "image":
            notes.append(f"{item.id}: a text input; imagefolder holds images only")
            continue
        if len(item.concepts) > 1:
            notes.append(f"{item.id}: kept under '{item.concepts[0]}' of {item.concepts}")
        folder = out / (item.concepts[0] if item.concepts else UNLABELLED_FOLDER)
        folder.mkdir(parents=True, exist_ok=True)
        # The id keeps its folder prefix from an earlier import (cat-img1); a fresh import of
        # this tree names it CONCEPT-ID, so strip a leading "CONCEPT-" to keep ids stable.
        name = item.id.removeprefix(f"{item.concepts[0]}-") if item.concepts else item.id
        (folder / f"{name}{item.suffix}").write_bytes(item.content())
    return notes


def _records(inputs: Iterator[ExportedInput], out: Path) -> Iterator[dict[str, Any]]:
    files = out.parent / FILES_FOLDER
    for item in inputs:
        record: dict[str, Any] = {"id": item.id}
        metadata = dict(item.metadata)
        if item.kind == "image":
            files.mkdir(parents=True, exist_ok=True)
            (files / f"{item.id}{item.suffix}").write_bytes(item.content())
            record["image"] = f"{FILES_FOLDER}/{item.id}{item.suffix}"
        elif {"prompt", "completion"} <= set(metadata):
            record["prompt"] = metadata.pop("prompt")
            record["completion"] = metadata.pop("completion")
        else:
            record["text"] = item.content().decode()
        record["concepts"] = item.concepts
        record["metadata"] = metadata
        yield record


def write_jsonl(inputs: Iterator[ExportedInput], out: Path) -> list[str]:
    """One JSON object a line (read_jsonl's shape); images beside it in files/."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for record in _records(inputs, out):
            if not record["metadata"]:
                del record["metadata"]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return []


def write_csv(inputs: Iterator[ExportedInput], out: Path) -> list[str]:
    """id,input,concepts,metadata (read_csv's shape); images beside it in files/. Prompt and
    completion pairs go in as the prompt text with both in metadata."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "input", "concepts", "metadata"])
        for record in _records(inputs, out):
            metadata = record["metadata"]
            if "prompt" in record:
                metadata = {
                    **metadata,
                    "prompt": record["prompt"],
                    "completion": record["completion"],
                }
            value = record.get("image") or record.get("text") or record.get("prompt") or ""
            writer.writerow(
                [
                    record["id"],
                    value,
                    ",".join(record["concepts"]),
                    json.dumps(metadata) if metadata else "",
                ]
            )
    return []


def _category_name(concept: pb.Concept) -> str:
    """The concept's name when `modelmill import` turns it back into the same id, else the id."""
    name = concept.name or concept.id
    return name if concept_label(name)["id"] == concept.id else concept.id


def _segment(region: pb.Region, width: int, height: int) -> tuple[Any, dict[str, Any]] | None:
    """A mask or polygon region as COCO segmentation (RLE or a pixel polygon) and its RLE."""
    from faster_coco_eval.core import mask as coco_mask  # only COCO exports pay for its import

    info = region.region_info
    if info.mask.image.base64:
        with Image.open(io.BytesIO(info.mask.image.base64)) as picture:
            inside = (
                np.asarray(picture.convert("L").resize((width, height), Image.Resampling.NEAREST))
                > 0
            )
        rle = coco_mask.encode(np.asfortranarray(inside.astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode()}, rle
    if len(info.polygon.points) >= 3:
        outline = [
            round(v, PIXEL_DIGITS)
            for point in info.polygon.points
            for v in (point.col * width, point.row * height)
        ]
        return [outline], coco_mask.merge(coco_mask.frPyObjects([outline], height, width))
    return None


def _annotation(region: pb.Region, width: int, height: int) -> dict[str, Any] | None:
    """bbox [x, y, width, height] and area in pixels, with segmentation for masks and
    polygons; None for a region with neither a box nor a shape."""
    shape = _segment(region, width, height)
    if shape is not None:
        from faster_coco_eval.core import mask as coco_mask

        segmentation, rle = shape
        x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
        return {
            "bbox": [x, y, w, h],
            "area": int(coco_mask.area(rle)),
            "segmentation": segmentation,
        }
    if region.region_info.HasField("bounding_box"):
        box = region.region_info.bounding_box
        x, y = box.left_col * width, box.top_row * height
        w, h = (box.right_col - box.left_col) * width, (box.bottom_row - box.top_row) * height
        bbox = [round(v, PIXEL_DIGITS) for v in (x, y, w, h)]
        return {"bbox": bbox, "area": round(bbox[2] * bbox[3], PIXEL_DIGITS)}
    return None


def write_coco(inputs: Iterator[ExportedInput], out: Path) -> list[str]:
    """OUT/annotations.json (COCO: images, categories, one annotation per region and positive
    concept) and OUT/images/ID.jpg; the folder `modelmill import` reads back. Texts and
    image-level concepts have no place in COCO and are listed in the notes."""
    notes: list[str] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: dict[str, dict[str, Any]] = {}
    (out / COCO_IMAGES).mkdir(parents=True, exist_ok=True)
    for item in inputs:
        if item.kind != "image":
            notes.append(f"{item.id}: a text input; COCO holds images only")
            continue
        content = item.content()
        file_name = f"{item.id}{item.suffix}"
        (out / COCO_IMAGES / file_name).write_bytes(content)
        with Image.open(io.BytesIO(content)) as picture:
            width, height = picture.size
        if item.concepts:
            notes.append(f"{item.id}: image-level concepts {item.concepts}; COCO holds regions")
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for region in item.regions:
            shape = _annotation(region, width, height)
            if shape is None:
                notes.append(f"{item.id}: a region with no box, mask or polygon")
                continue
            for concept in (c for c in region.data.concepts if c.value > 0):
                category = categories.setdefault(
                    concept.id, {"id": len(categories) + 1, "name": _category_name(concept)}
                )
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category["id"],
                        "iscrowd": 0,
                        **shape,
                    }
                )
    document = {
        "images": images,
        "categories": list(categories.values()),
        "annotations": annotations,
    }
    (out / COCO_FILE).write_text(json.dumps(document))
    return notes


EXPORTERS: dict[str, Callable[[Iterator[ExportedInput], Path], list[str]]] = {
    "imagefolder": write_image_folder,
    "jsonl": write_jsonl,
    "csv": write_csv,
    "coco": write_coco,
}

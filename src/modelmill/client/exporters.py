"""Writing a dataset out of the API as files the importers read back: one function per format
(EXPORTERS), fed with the dataset's current inputs (ListDatasetInputs) or a frozen version's
(the Clarifai archive PutDatasetVersionExports writes)."""

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

from clarifai_grpc.grpc.api import resources_pb2 as pb
from google.protobuf import json_format

from modelmill.client.connection import Connection
from modelmill.client.importers import UNLABELLED_FOLDER

DOWNLOAD_TIMEOUT_S = 60.0
ARCHIVE_MIMETYPE = b"application/x.clarifai-data+protobuf"
IMAGE_SUFFIXES = {"png": ".png", "gif": ".gif", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}
FILES_FOLDER = "files"  # where csv and jsonl exports keep their images, beside the file


@dataclass
class ExportedInput:
    id: str
    kind: str  # "image" or "text"
    content: Callable[[], bytes]
    concepts: list[str] = field(default_factory=list)  # positive labels, in order
    metadata: dict[str, Any] = field(default_factory=dict)
    suffix: str = ".jpg"


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


EXPORTERS: dict[str, Callable[[Iterator[ExportedInput], Path], list[str]]] = {
    "imagefolder": write_image_folder,
    "jsonl": write_jsonl,
    "csv": write_csv,
}

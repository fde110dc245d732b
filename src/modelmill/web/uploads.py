"""Uploaded files → inputs: images and .txt files (labelled with the chosen concept), a zip of
folders named by concept, a zip of an annotated dataset (COCO, YOLO, Pascal VOC or mask PNGs,
read by modelmill.formats: inputs with their boxes or masks), or a CSV of texts and labels
(columns text,concepts). Inputs are stored through services.inputs in batches; every file, row
or annotation that fails gets its own message. Files are read from the parser's disk spool one
at a time, and a batch is stored once it holds MAX_BATCH_BYTES, so an upload never sits in
memory whole.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.ids import check_id
from modelmill.formats.layouts import LAYOUTS, detect_layout
from modelmill.services import AppScope, Env
from modelmill.services.inputs import MAX_BATCH, NewInput, post_inputs
from modelmill.settings import Settings

CSV_CONCEPT_SEPARATORS = re.compile(r"[|;,]")
MAX_ARCHIVE_MEMBERS = 50_000
# A batch is stored when it holds this many bytes of content, even before MAX_BATCH inputs:
# 128 inputs of 20 MB each would otherwise sit in memory together.
MAX_BATCH_BYTES = 64 * 1024 * 1024


@dataclass
class Item:
    """One input to be, named for messages ('cats.zip: dogs/3.png', 'texts.csv row 4')."""

    name: str
    spec: NewInput | None = None
    error: str = ""


@dataclass
class UploadReport:
    added: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)  # {"file", "error"}

    @property
    def failed(self) -> int:
        return len(self.errors)

    def as_json(self) -> dict[str, Any]:
        return {"added": self.added, "failed": self.failed, "errors": self.errors}


def _labels(concepts: list[str]) -> dict[str, Any]:
    unique = list(dict.fromkeys(c for c in concepts if c))
    return {"concepts": [{"id": c, "name": c, "value": 1.0} for c in unique]} if unique else {}


def _image(name: str, data: bytes, concept: str, settings: Settings) -> Iterator[Item]:
    yield Item(name, NewInput(image_bytes=data, labels=_labels([concept])))


def _text(name: str, data: bytes, concept: str, settings: Settings) -> Iterator[Item]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        yield Item(name, error="The text file is not UTF-8.")
        return
    yield Item(name, NewInput(text=text, labels=_labels([concept])))


def _csv(name: str, data: bytes, concept: str, settings: Settings) -> Iterator[Item]:
    """Rows of `text,concepts`; concepts separated by | ; or , (quote the cell for commas)."""
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    except (UnicodeDecodeError, csv.Error) as error:
        yield Item(name, error=f"The CSV file could not be read ({error}).")
        return
    if "text" not in columns:
        yield Item(
            name,
            error="The CSV file needs a header row with a 'text' column "
            "(and optionally 'concepts').",
        )
        return
    try:
        for number, row in enumerate(reader, start=2):
            cell = row.get(columns.get("concepts", ""), "") or ""
            concepts = [c.strip() for c in CSV_CONCEPT_SEPARATORS.split(cell) if c.strip()]
            text = row.get(columns["text"]) or ""
            yield Item(
                f"{name} row {number}", NewInput(text=text, labels=_labels(concepts or [concept]))
            )
    except csv.Error as error:
        yield Item(
            name, error=f"The CSV file could not be read after row {reader.line_num} ({error})."
        )


def _annotation_file(name: str, data: bytes, concept: str, settings: Settings) -> Iterator[Item]:
    yield Item(
        name,
        error="Annotation files are read with their images: upload one .zip holding the "
        "annotations and the images (a COCO, YOLO, Pascal VOC or mask-PNG folder).",
    )


def _too_big(label: str, size: int, settings: Settings) -> Item | None:
    if size <= settings.max_input_bytes:
        return None
    return Item(
        label,
        error=f"The file is {size} bytes; the limit for one input is {settings.max_input_bytes}.",
    )


def _annotated(
    name: str, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], layout: str, top: str
) -> Iterator[Item]:
    """A zipped dataset layout: extracted to a temporary folder (removed once every input is
    read), parsed, and each image yielded with its regions; each refusal with its reason."""
    with tempfile.TemporaryDirectory(prefix="modelmill-upload-") as folder:
        for member in members:
            archive.extract(member, folder)
        try:
            result = LAYOUTS[layout](Path(folder, top))
        except (ValueError, OSError) as error:
            yield Item(name, error=f"The {layout} dataset could not be read: {error}")
            return
        for image in result.images:
            spec = NewInput(
                id=image.input_id,
                image_bytes=image.path.read_bytes(),
                labels={"regions": image.regions} if image.regions else {},
            )
            yield Item(f"{name}: {image.path.relative_to(folder)}", spec)
        for source, reason in result.refused:
            yield Item(f"{name}: {source}", error=reason)


def _zip(name: str, data: bytes | IO[bytes], concept: str, settings: Settings) -> Iterator[Item]:
    """Each file's folder names its concept ('cats/1.jpg' is a cat); files at the top level get
    the chosen concept. Hidden files and macOS resource folders are skipped. Members are
    extracted one at a time, as they are stored. A zip of an annotated dataset layout (under
    one top folder or none) is read as that layout instead."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except zipfile.BadZipFile:
        yield Item(name, error="The file is not a readable zip archive.")
        return
    members = [
        m
        for m in archive.infolist()
        if not m.is_dir()
        and not any(
            part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(m.filename).parts
        )
    ]
    if len(members) > MAX_ARCHIVE_MEMBERS:
        yield Item(
            name,
            error=f"The archive holds {len(members)} files; the limit is "
            f"{MAX_ARCHIVE_MEMBERS} per upload.",
        )
        return
    paths = [PurePosixPath(m.filename) for m in members]
    tops = {p.parts[0] for p in paths}
    top = tops.pop() if len(tops) == 1 and all(len(p.parts) > 1 for p in paths) else ""
    layout = detect_layout(p.relative_to(top) if top else p for p in paths)
    if layout is not None:
        oversized = [
            item
            for m in members
            if (item := _too_big(f"{name}: {m.filename}", m.file_size, settings))
        ]
        yield from oversized or _annotated(name, archive, members, layout, top)
        return
    for member in members:
        path = PurePosixPath(member.filename)
        label = f"{name}: {member.filename}"
        reader = READERS.get(path.suffix.lower(), _image)
        if reader in (_zip, _csv):
            yield Item(
                label,
                error="Archives and CSV files inside a zip are not read; upload them on their own.",
            )
            continue
        if too_big := _too_big(label, member.file_size, settings):
            yield too_big
            continue
        folder_concept = path.parent.name if len(path.parts) > 1 else concept
        try:
            content = archive.read(member)
        except (zipfile.BadZipFile, OSError, NotImplementedError) as error:
            yield Item(label, error=f"The file could not be extracted ({error}).")
            continue
        yield from reader(label, content, folder_concept, settings)


READERS: dict[str, Callable[[str, Any, str, Settings], Iterator[Item]]] = {
    ".zip": _zip,
    ".csv": _csv,
    ".txt": _text,
    ".json": _annotation_file,
    ".xml": _annotation_file,
}


def check_concept(concept: str) -> str:
    """The chosen concept id, checked; empty means 'no concept'."""
    concept = concept.strip()
    return check_id(concept, "concept", codes.INPUT_INVALID_ARGUMENT) if concept else ""


def _size(file: IO[bytes]) -> int:
    file.seek(0, io.SEEK_END)
    size = file.tell()
    file.seek(0)
    return size


def read_files(
    files: list[tuple[str, bytes | IO[bytes]]], concept: str, settings: Settings
) -> Iterator[Item]:
    """The inputs in uploaded files: (file name, content or open file) pairs; other files are
    read as images. Open files are read only when their turn comes, zips member by member."""
    for name, content in files:
        size = len(content) if isinstance(content, bytes) else _size(content)
        if not size:
            yield Item(name, error="The file is empty (0 bytes).")
            continue
        reader = READERS.get(PurePosixPath(name).suffix.lower(), _image)
        if reader is _zip:
            yield from _zip(name, content, concept, settings)
            continue
        if too_big := _too_big(name, size, settings):
            yield too_big
            continue
        data = content if isinstance(content, bytes) else content.read()
        yield from reader(name, data, concept, settings)


def _content_bytes(spec: NewInput) -> int:
    return len(spec.image_bytes or b"") + len((spec.text or "").encode())


def store(env: Env, app: AppScope, items: Iterator[Item]) -> UploadReport:
    """Store the items' inputs in batches of the API's batch size; collects every failure."""
    report = UploadReport()
    batch: list[Item] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch_bytes
        batch_bytes = 0
        if not batch:
            return
        results, _ = post_inputs(env, app, [item.spec for item in batch if item.spec is not None])
        for item, result in zip(batch, results, strict=True):
            if result.code == codes.INPUT_DOWNLOAD_SUCCESS:
                report.added += 1
            else:
                report.errors.append({"file": item.name, "error": result.description})
        batch.clear()

    for item in items:
        if item.spec is None:
            report.errors.append({"file": item.name, "error": item.error})
            continue
        batch.append(item)
        batch_bytes += _content_bytes(item.spec)
        if len(batch) == MAX_BATCH or batch_bytes >= MAX_BATCH_BYTES:
            flush()
    flush()
    return report

"""Reading datasets from files: one function per format, each turning a path into ImportItems
(content loaded lazily, labels in the Clarifai Data shape). IMPORTERS maps a format name to its
function; adding a format is one function and one entry. The annotated layouts (COCO, YOLO,
VOC, mask folders) are read by modelmill.formats, which the web upload shares.

Ids are derived from the files (relative paths, row numbers, an `id` column), so importing the
same source again names the same inputs and the upload can skip those already stored.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelmill.formats.layouts import LAYOUTS, detect_layout

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
UNLABELLED_FOLDER = "_unlabelled"  # images at a tree's root, or in this folder, have no concept
_NOT_ID = re.compile(r"[^A-Za-z0-9_.\-]+")
_NOT_LEADING = re.compile(r"^[^A-Za-z0-9]+")  # ids start with a letter or a digit
MAX_ID_LENGTH = 128  # the server's limit for input ids


@dataclass
class ImportItem:
    """One input to upload. `problem` is set when the source itself is unusable (then nothing
    is sent for it and the summary says why)."""

    id: str
    kind: str  # "image" or "text"
    load: Callable[[], bytes | str]
    concepts: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    regions: list[dict[str, Any]] = field(default_factory=list)  # Clarifai Region dicts
    problem: str = ""
    clipped: int = 0  # boxes that stuck out of the image, clipped to it


def input_id(text: str) -> str:
    """A valid input id from a path or a name: other characters become '-'."""
    cleaned = _NOT_ID.sub("-", text)[-MAX_ID_LENGTH:]
    return _NOT_LEADING.sub("", cleaned).rstrip("-.") or "input"


def _file_loader(path: Path) -> Callable[[], bytes]:
    return lambda: path.read_bytes()


def _text_loader(text: str) -> Callable[[], str]:
    return lambda: text


def _concepts(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


# ---- formats -------------------------------------------------------------------------------------


def read_image_folder(root: Path) -> Iterator[ImportItem]:
    """ImageFolder: ROOT/CONCEPT/IMAGE; images at the root or in `_unlabelled/` have no concept.
    The id is the image's path under ROOT without its suffix (cat/img1.jpg → cat-img1)."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        concepts = [] if folder in ("", UNLABELLED_FOLDER) else [folder]
        if folder == UNLABELLED_FOLDER:
            relative = relative.relative_to(UNLABELLED_FOLDER)
        yield ImportItem(
            input_id(str(relative.with_suffix(""))), "image", _file_loader(path), concepts
        )


def read_csv(path: Path) -> Iterator[ImportItem]:
    """CSV with a header: `input` (an image path, relative to the CSV's folder, or the text
    itself), optional `id` (or `inputid`), `concepts` (comma-separated) and `metadata` (JSON)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "input" not in columns:
            raise ValueError(
                f"{path} has no 'input' column; its header is {', '.join(columns) or 'empty'}. "
                "Name the column holding image paths or texts 'input'."
            )

        def cell(row: dict[str, Any], name: str) -> str:
            return (row.get(columns.get(name, ""), "") or "").strip()

        for number, row in enumerate(reader, start=1):
            item_id = input_id(cell(row, "id") or cell(row, "inputid") or f"{path.stem}-{number}")
            value = row.get(columns["input"]) or ""
            candidate = (path.parent / value.strip()) if value.strip() else None
            if candidate is not None and candidate.suffix.lower() in IMAGE_SUFFIXES:
                item = ImportItem(item_id, "image", _file_loader(candidate))
                if not candidate.is_file():
                    item.problem = f"row {number}: image file '{value.strip()}' does not exist"
            else:
                item = ImportItem(item_id, "text", _text_loader(value))
            item.concepts = _concepts(cell(row, "concepts"))
            raw_metadata = cell(row, "metadata")
            if raw_metadata:
                try:
                    item.metadata = json.loads(raw_metadata)
                except ValueError:
                    item.problem = f"row {number}: metadata is not JSON: {raw_metadata[:60]}"
            yield item


def read_jsonl(path: Path) -> Iterator[ImportItem]:
    """JSON lines: {"prompt", "completion"} pairs (a text input whose raw text is the prompt and
    whose metadata carries both, as text-to-text training reads them), or {"text"} or
    {"image": path}; each may have "id", "concepts" and "metadata"."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            item_id = input_id(f"{path.stem}-{number}")
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError as error:
                yield ImportItem(
                    item_id, "text", _text_loader(""), problem=f"line {number}: {error}"
                )
                continue
            item_id = input_id(str(record.get("id") or item_id))
            metadata = dict(record.get("metadata") or {})
            if "prompt" in record:
                if "completion" not in record:
                    item = ImportItem(item_id, "text", _text_loader(str(record["prompt"])))
                    item.problem = f"line {number}: a prompt without a completion"
                else:
                    metadata.update(prompt=record["prompt"], completion=record["completion"])
                    item = ImportItem(item_id, "text", _text_loader(str(record["prompt"])))
            elif "image" in record:
                image = path.parent / str(record["image"])
                item = ImportItem(item_id, "image", _file_loader(image))
                if not image.is_file():
                    item.problem = f"line {number}: image file '{record['image']}' does not exist"
            elif "text" in record:
                item = ImportItem(item_id, "text", _text_loader(str(record["text"])))
            else:
                item = ImportItem(item_id, "text", _text_loader(""))
                item.problem = f"line {number}: needs 'prompt' and 'completion', 'text' or 'image'"
            item.concepts = _concepts(record.get("concepts"))
            item.metadata = metadata
            yield item


def layout_reader(name: str) -> Callable[[Path], Iterator[ImportItem]]:
    """The reader of an annotated layout (modelmill.formats.layouts): its images with their
    regions, then each file or annotation it refused, as an item with the reason."""

    def read(path: Path) -> Iterator[ImportItem]:
        result = LAYOUTS[name](path)
        for image in result.images:
            yield ImportItem(
                image.input_id,
                "image",
                _file_loader(image.path),
                regions=image.regions,
                clipped=image.clipped,
            )
        for source, reason in result.refused:
            yield ImportItem(source, "image", _text_loader(""), problem=reason)

    return read


IMPORTERS: dict[str, Callable[[Path], Iterator[ImportItem]]] = {
    "imagefolder": read_image_folder,
    "csv": read_csv,
    "jsonl": read_jsonl,
    **{name: layout_reader(name) for name in LAYOUTS},
}


def detect_format(path: Path) -> str:
    """The format of PATH when none is named: a folder's layout (COCO, YOLO, VOC, masks) or
    else an ImageFolder tree; a file's suffix (.json is COCO)."""
    if path.is_dir():
        files = (p.relative_to(path) for p in path.rglob("*") if p.is_file())
        return detect_layout(files) or "imagefolder"
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "json":
        return "coco"
    if suffix in IMPORTERS:
        return suffix
    raise ValueError(
        f"Cannot tell the format of {path}; name it with --format ({', '.join(IMPORTERS)})."
    )


def read_items(path: Path, format_name: str | None = None) -> list[ImportItem]:
    """Every item of PATH (content not loaded yet)."""
    if not path.exists():
        raise ValueError(f"{path} does not exist.")
    name = format_name or detect_format(path)
    if name not in IMPORTERS:
        raise ValueError(f"Unknown format '{name}'; choose one of {', '.join(IMPORTERS)}.")
    return list(IMPORTERS[name](path))

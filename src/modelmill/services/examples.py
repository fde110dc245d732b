"""Frozen inputs (dataset version snapshots, request inputs) → the Examples templates train on,
with every label a task may read."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

from PIL import Image

from modelmill.services import Env
from modelmill.training.contract import Example, Region


def content_key(item: dict[str, Any]) -> str:
    """What identifies an input's content: its blob key, or the SHA-256 of its text."""
    if item.get("blob_key"):
        return str(item["blob_key"])
    return hashlib.sha256((item.get("text") or "").encode()).hexdigest()


def _image_loader(env: Env, key: str):  # type: ignore[no-untyped-def]
    def load() -> Image.Image:
        return Image.open(io.BytesIO(env.blobs.get(key))).convert("RGB")

    return load


def image_example(input_id: str, data: bytes) -> Example:
    return Example(input_id, "image", lambda: Image.open(io.BytesIO(data)).convert("RGB"))


def text_example(input_id: str, text: str) -> Example:
    return Example(input_id, "text", lambda: text)


def target_text(item: dict[str, Any]) -> str | None:
    """The wanted output of a text-to-text input: an annotation's data.text, else the input's
    metadata "completion"; None when neither is given (the raw text is then one sample)."""
    labels = item.get("labels") or {}
    annotated = (labels.get("text") or {}).get("raw")
    if annotated:
        return str(annotated)
    completion = (item.get("metadata") or {}).get("completion")
    return str(completion) if completion else None


def chat_messages(item: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Input metadata "messages" ([{"role", "content"}, ...]) as (role, content) turns."""
    raw = (item.get("metadata") or {}).get("messages")
    if not isinstance(raw, list):
        return ()
    return tuple(
        (str(m.get("role", "")), str(m.get("content", ""))) for m in raw if isinstance(m, dict)
    )


def _mask_png(info: dict[str, Any]) -> bytes | None:
    encoded = ((info.get("mask") or {}).get("image") or {}).get("base64")
    return base64.b64decode(encoded) if encoded else None


def from_snapshot(env: Env, item: dict[str, Any], concepts: list[str]) -> Example:
    """One snapshot entry as an Example, keeping only labels for `concepts`: concepts, regions
    (boxes, polygons, masks), and the target text with its prompt (input metadata "prompt"
    replaces the raw text as what the model reads, as clients send prompt/completion pairs)."""
    wanted = set(concepts)
    labels = item.get("labels") or {}
    tags = {c["id"]: float(c["value"]) for c in labels.get("concepts", []) if c["id"] in wanted}
    regions = []
    for region in labels.get("regions", []):
        region_concepts = {
            c["id"]: float(c["value"]) for c in region["data"]["concepts"] if c["id"] in wanted
        }
        if not region_concepts:
            continue
        info = region["region_info"]
        box = info.get("bounding_box")
        regions.append(
            Region(
                concepts=region_concepts,
                box=(box["top_row"], box["left_col"], box["bottom_row"], box["right_col"])
                if box
                else None,
                polygon=tuple(
                    (p.get("row", 0.0), p.get("col", 0.0))
                    for p in (info.get("polygon") or {}).get("points", [])
                ),
                mask_png=_mask_png(info),
            )
        )
    if item["kind"] == "image":
        load = _image_loader(env, item["blob_key"])
    else:
        text = str((item.get("metadata") or {}).get("prompt") or item.get("text") or "")
        load = lambda: text  # noqa: E731
    return Example(
        item["id"], item["kind"], load, tags, tuple(regions), target_text(item), chat_messages(item)
    )

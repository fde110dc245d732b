"""Frozen inputs (dataset version snapshots, request inputs) → the Examples templates train on."""

from __future__ import annotations

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


def from_snapshot(env: Env, item: dict[str, Any], concepts: list[str]) -> Example:
    """One snapshot entry as an Example, keeping only labels for `concepts`."""
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
                    (p["row"], p["col"]) for p in (info.get("polygon") or {}).get("points", [])
                ),
            )
        )
    if item["kind"] == "image":
        load = _image_loader(env, item["blob_key"])
    else:
        text = item.get("text") or ""
        load = lambda: text  # noqa: E731
    return Example(item["id"], item["kind"], load, tags, tuple(regions))

"""Checks on labels, shared by inputs and annotations: concepts with values and image regions.

Labels are kept in the Clarifai `Data` JSON shape: {"concepts": [...], "regions": [...]}, and for
an annotation {"text": {"raw": ...}}: the wanted output of its input (text-to-text training).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id
from modelmill.services.images import ImageCodes, decode_image


def check_concepts(concepts: list[dict[str, Any]], code: int) -> list[dict[str, Any]]:
    """Concept labels as [{id, name, value}], values 1 (positive) or 0 (negative)."""
    checked = []
    for concept in concepts:
        concept_id = concept.get("id") or concept.get("name") or ""
        check_id(concept_id, "concept", code)
        value = float(concept.get("value", 1.0))
        if value not in (0.0, 1.0):
            raise ApiError(
                code,
                f"Concept '{concept_id}' has value {value}; a label is 1 (present) or 0 (absent).",
            )
        checked.append(
            {"id": concept_id, "name": concept.get("name") or concept_id, "value": value}
        )
    return checked


def _check_unit(name: str, value: float, code: int) -> None:
    if not 0.0 <= value <= 1.0:
        raise ApiError(
            code,
            f"{name} is {value}; region coordinates are fractions of the image size, from 0 to 1.",
        )


def check_region(region: dict[str, Any], code: int, max_image_pixels: int) -> dict[str, Any]:
    """One region: a bounding box, a polygon or a mask (an image of at most `max_image_pixels`),
    with its concepts."""
    info = region.get("region_info") or {}
    box, polygon, mask = info.get("bounding_box"), info.get("polygon"), info.get("mask")
    if box is not None:
        sides = {
            k: float(box.get(k, 0.0)) for k in ("top_row", "left_col", "bottom_row", "right_col")
        }
        for name, value in sides.items():
            _check_unit(f"bounding_box.{name}", value, code)
        if sides["top_row"] >= sides["bottom_row"] or sides["left_col"] >= sides["right_col"]:
            raise ApiError(
                code,
                f"The bounding box {sides} is empty or inverted: top_row must be below "
                "bottom_row and left_col below right_col.",
            )
        info = {"bounding_box": sides}
    elif polygon is not None:
        points = polygon.get("points") or []
        if len(points) < 3:
            raise ApiError(code, f"A polygon needs at least 3 points; this one has {len(points)}.")
        for point in points:
            _check_unit("polygon point row", float(point.get("row", 0.0)), code)
            _check_unit("polygon point col", float(point.get("col", 0.0)), code)
        info = {
            "polygon": {
                "points": [{"row": p.get("row", 0.0), "col": p.get("col", 0.0)} for p in points]
            }
        }
    elif mask is not None:
        encoded = ((mask.get("image") or {}).get("base64")) or ""
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(code, "A region mask is not valid base64 (send a PNG).") from None
        decode_image(data, max_image_pixels, ImageCodes(code, code), what="A region mask")
        info = {"mask": {"image": {"base64": encoded}}}
    else:
        raise ApiError(code, "A region needs a bounding_box, a polygon or a mask.")
    concepts = check_concepts(((region.get("data") or {}).get("concepts")) or [], code)
    checked: dict[str, Any] = {"region_info": info, "data": {"concepts": concepts}}
    if region.get("id"):
        checked["id"] = region["id"]
    return checked


def check_labels(data: dict[str, Any], code: int, max_image_pixels: int) -> dict[str, Any]:
    """The labels of a Data dict, checked and normalised; empty dict when there are none.
    Region masks are decoded within `max_image_pixels` (MODELMILL_MAX_IMAGE_PIXELS)."""
    labels: dict[str, Any] = {}
    if data.get("concepts"):
        labels["concepts"] = check_concepts(data["concepts"], code)
    if data.get("regions"):
        labels["regions"] = [
            check_region(region, code, max_image_pixels) for region in data["regions"]
        ]
    if "text" in data:
        raw = (data["text"] or {}).get("raw")
        if not isinstance(raw, str) or not raw.strip():
            raise ApiError(code, "An annotation's text (the wanted output) is empty.")
        labels["text"] = {"raw": raw}
    return labels


def concept_names(labels: dict[str, Any]) -> dict[str, str]:
    """Every concept id a label set mentions, with its name."""
    found = {c["id"]: c["name"] for c in labels.get("concepts", [])}
    for region in labels.get("regions", []):
        found.update({c["id"]: c["name"] for c in region["data"]["concepts"]})
    return found

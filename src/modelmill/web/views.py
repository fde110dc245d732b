"""Inputs as cards for the grids: thumbnail link or text snippet, concepts, and regions to draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelmill.services.links import Links
from modelmill.services.rows import Input

SNIPPET_CHARS = 160


@dataclass(frozen=True)
class Shape:
    """A region drawn over a thumbnail, in image pixels: a box (x, y, w, h) or polygon points."""

    label: str
    box: tuple[float, float, float, float] | None = None
    points: str = ""


@dataclass
class InputCard:
    id: str
    kind: str
    image_url: str = ""
    width: int = 0
    height: int = 0
    snippet: str = ""
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)

    @property
    def label_size(self) -> float:
        """Font size for region labels, in image pixels, readable at thumbnail size."""
        return max(self.width, self.height) * 0.07


def _shapes(labels: dict[str, Any], width: int, height: int) -> list[Shape]:
    shapes = []
    for region in labels.get("regions", []):
        info = region.get("region_info") or {}
        names = ", ".join(
            c.get("name") or c["id"]
            for c in (region.get("data") or {}).get("concepts", [])
            if c.get("value", 1) > 0
        )
        box = info.get("bounding_box")
        if box:
            x, y = box["left_col"] * width, box["top_row"] * height
            shapes.append(
                Shape(
                    names, box=(x, y, box["right_col"] * width - x, box["bottom_row"] * height - y)
                )
            )
        elif info.get("polygon"):
            points = " ".join(
                f"{p['col'] * width:.1f},{p['row'] * height:.1f}" for p in info["polygon"]["points"]
            )
            shapes.append(Shape(names, points=points))
    return shapes


def input_card(row: Input, labels: dict[str, Any], links: Links) -> InputCard:
    card = InputCard(id=row.id, kind=row.kind, width=row.width, height=row.height)
    if row.kind == "image" and row.blob_key:
        card.image_url = links.blob(row.blob_key)
        if row.width and row.height:
            card.shapes = _shapes(labels, row.width, row.height)
    else:
        text = row.text or ""
        card.snippet = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
    for concept in labels.get("concepts", []):
        name = concept.get("name") or concept["id"]
        (card.positive if concept.get("value", 1) > 0 else card.negative).append(name)
    return card

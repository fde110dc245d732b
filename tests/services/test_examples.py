"""Snapshot entries become Examples with every label a task reads: concepts, boxes, polygons,
masks, and the target text of text-to-text pairs with its prompt."""

from __future__ import annotations

import base64

from modelmill.services.examples import from_snapshot

MASK = b"\x89PNG fake bytes"


def entry(**overrides):
    item = {"id": "i", "kind": "text", "text": "raw text", "metadata": {}, "labels": {}}
    return {**item, **overrides}


def test_an_annotation_text_is_the_target():
    example = from_snapshot(None, entry(labels={"text": {"raw": "wanted"}}), [])
    assert example.target_text == "wanted" and example.load() == "raw text"


def test_metadata_prompt_and_completion_are_a_pair():
    metadata = {"prompt": "2 + 2 =", "completion": "4"}
    example = from_snapshot(None, entry(metadata=metadata), [])
    assert example.load() == "2 + 2 =" and example.target_text == "4"


def test_without_a_target_the_raw_text_is_one_sample():
    example = from_snapshot(None, entry(), [])
    assert example.target_text is None and example.load() == "raw text"


def test_regions_keep_boxes_polygons_and_masks_of_the_wanted_concepts():
    def region(info, concept):
        return {"region_info": info, "data": {"concepts": [{"id": concept, "value": 1.0}]}}

    labels = {
        "regions": [
            region(
                {
                    "bounding_box": {
                        "top_row": 0.1,
                        "left_col": 0.2,
                        "bottom_row": 0.5,
                        "right_col": 0.6,
                    }
                },
                "cat",
            ),  # fmt: skip
            region(
                {"polygon": {"points": [{"row": 0.1, "col": 0.1}, {"row": 0.9}, {"col": 0.5}]}},
                "dog",
            ),  # fmt: skip
            region({"mask": {"image": {"base64": base64.b64encode(MASK).decode()}}}, "cat"),
            region({"bounding_box": {"top_row": 0.0}}, "other"),
        ]
    }
    example = from_snapshot(None, entry(kind="text", labels=labels), ["cat", "dog"])
    box, polygon, mask = example.regions
    assert box.box == (0.1, 0.2, 0.5, 0.6) and box.concepts == {"cat": 1.0}
    assert polygon.polygon == ((0.1, 0.1), (0.9, 0.0), (0.0, 0.5))
    assert mask.mask_png == MASK

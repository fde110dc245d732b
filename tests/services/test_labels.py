"""Label checks shared by inputs and annotations: concept values and region shapes."""

from __future__ import annotations

import base64
import io

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image

from modelmill.domain.errors import ApiError
from modelmill.services.labels import check_labels, concept_names

CODE = codes.ANNOTATION_INVALID_ARGUMENT


def mask_png() -> str:
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_labels_are_normalised_and_named() -> None:
    labels = check_labels(
        {
            "concepts": [{"id": "cat"}, {"name": "dog", "value": 0}],
            "regions": [
                {
                    "region_info": {
                        "bounding_box": {
                            "top_row": 0.1,
                            "left_col": 0.2,
                            "bottom_row": 0.5,
                            "right_col": 0.6,
                        }
                    },
                    "data": {"concepts": [{"id": "nose", "name": "Nose"}]},
                },
                {"region_info": {"mask": {"image": {"base64": mask_png()}}}},
            ],
        },
        CODE,
    )

    assert labels["concepts"] == [
        {"id": "cat", "name": "cat", "value": 1.0},
        {"id": "dog", "name": "dog", "value": 0.0},
    ]
    assert labels["regions"][0]["region_info"]["bounding_box"]["right_col"] == 0.6
    assert concept_names(labels) == {"cat": "cat", "dog": "dog", "nose": "Nose"}


def test_no_labels_is_an_empty_dict() -> None:
    assert check_labels({}, CODE) == {}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"concepts": [{"id": "cat", "value": 0.3}]}, "0.3"),
        ({"concepts": [{"value": 1}]}, "empty"),
        (
            {
                "regions": [
                    {
                        "region_info": {
                            "bounding_box": {
                                "top_row": 0.5,
                                "left_col": 0,
                                "bottom_row": 0.5,
                                "right_col": 1,
                            }
                        }
                    }
                ]
            },
            "empty or inverted",
        ),
        (
            {
                "regions": [
                    {
                        "region_info": {
                            "bounding_box": {
                                "top_row": 0,
                                "left_col": 0,
                                "bottom_row": 1.01,
                                "right_col": 1,
                            }
                        }
                    }
                ]
            },
            "from 0 to 1",
        ),
        (
            {"regions": [{"region_info": {"polygon": {"points": [{"row": 0.1, "col": 0.1}] * 2}}}]},
            "at least 3",
        ),
        (
            {"regions": [{"region_info": {"polygon": {"points": [{"row": 2, "col": 0.1}] * 3}}}]},
            "from 0 to 1",
        ),
        (
            {"regions": [{"region_info": {"mask": {"image": {"base64": "bm90IGEgcG5n"}}}}]},
            "not a readable image",
        ),
        ({"regions": [{"region_info": {}}]}, "needs a bounding_box"),
    ],
    ids=[
        "value",
        "no-id",
        "empty-box",
        "box-outside",
        "polygon-2",
        "polygon-outside",
        "mask",
        "no-shape",
    ],
)
def test_bad_labels_raise_with_the_given_code(data: dict, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ApiError) as raised:
        check_labels(data, CODE)

    assert raised.value.code == CODE
    assert words in raised.value.description

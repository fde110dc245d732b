"""Label checks shared by inputs and annotations: concept values and region shapes."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image

from modelmill.domain.errors import ApiError
from modelmill.services.labels import check_labels, concept_names

CODE = codes.ANNOTATION_INVALID_ARGUMENT
MAX_PIXELS = 10_000


def mask_png(width: int = 4, height: int = 4) -> str:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels but holds one row of data: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    pixels = zlib.compress(b"\0" * (width + 1))
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def mask_region(encoded: str) -> dict:  # type: ignore[type-arg]
    return {"regions": [{"region_info": {"mask": {"image": {"base64": encoded}}}}]}


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
        MAX_PIXELS,
    )

    assert labels["concepts"] == [
        {"id": "cat", "name": "cat", "value": 1.0},
        {"id": "dog", "name": "dog", "value": 0.0},
    ]
    assert labels["regions"][0]["region_info"]["bounding_box"]["right_col"] == 0.6
    assert concept_names(labels) == {"cat": "cat", "dog": "dog", "nose": "Nose"}


def test_no_labels_is_an_empty_dict() -> None:
    assert check_labels({}, CODE, MAX_PIXELS) == {}


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
            "not an image modelmill can read",
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
        check_labels(data, CODE, MAX_PIXELS)

    assert raised.value.code == CODE
    assert words in raised.value.description


def test_a_mask_over_the_pixel_limit_is_refused_before_decoding() -> None:
    with pytest.raises(ApiError) as raised:
        check_labels(mask_region(mask_png(101, 100)), CODE, MAX_PIXELS)

    assert raised.value.code == CODE
    assert "101x100" in raised.value.description
    assert f"{MAX_PIXELS} pixels" in raised.value.description


def test_a_mask_bomb_far_above_pillows_own_limit_answers_the_callers_code() -> None:
    """20,000 x 20,000 is over twice Pillow's limit: Pillow raises DecompressionBombError while
    opening, which used to escape as INTERNAL_SERVER_ISSUE."""
    bomb = base64.b64encode(png_header(20_000, 20_000)).decode()

    with pytest.raises(ApiError) as raised:
        check_labels(mask_region(bomb), CODE, 89_478_485)

    assert raised.value.code == CODE
    assert "too many pixels" in raised.value.description or "400000000" in raised.value.description


def test_a_mask_that_is_not_base64_says_so() -> None:
    with pytest.raises(ApiError) as raised:
        check_labels(mask_region("not base64!"), CODE, MAX_PIXELS)

    assert "not valid base64" in raised.value.description

"""What the API tests send and check: small images, bad images, inputs, and status assertions."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image


def image_bytes(
    width: int = 32, height: int = 24, fmt: str = "JPEG", color: Any = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def jpeg(width: int = 32, height: int = 24, color: Any = (200, 30, 30)) -> bytes:
    return image_bytes(width, height, "JPEG", color)


def png(width: int = 32, height: int = 24, color: Any = (30, 200, 30)) -> bytes:
    return image_bytes(width, height, "PNG", color)


def truncated_jpeg() -> bytes:
    """A real JPEG cut off in the middle of its scan data."""
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, format="JPEG", quality=90)
    whole = buffer.getvalue()
    return whole[: len(whole) // 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A complete, valid 1-bit PNG of width × height pixels that is only a few tens of KB:
    it would take gigabytes once decoded."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    scan = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", scan)
        + _png_chunk(b"IEND", b"")
    )


def image_input(
    input_id: str = "", data: bytes | None = None, concepts: Any = (), **extra: Any
) -> pb.Input:
    return pb.Input(
        id=input_id,
        data=pb.Data(
            image=pb.Image(base64=jpeg() if data is None else data),
            concepts=[pb.Concept(id=c, value=1.0) if isinstance(c, str) else c for c in concepts],
        ),
        **extra,
    )


def text_input(
    input_id: str = "", text: str = "a short text", concepts: Any = (), **extra: Any
) -> pb.Input:
    return pb.Input(
        id=input_id,
        data=pb.Data(
            text=pb.Text(raw=text),
            concepts=[pb.Concept(id=c, value=1.0) if isinstance(c, str) else c for c in concepts],
        ),
        **extra,
    )


def box(top: float, left: float, bottom: float, right: float, concept: str = "cat") -> pb.Region:
    return pb.Region(
        region_info=pb.RegionInfo(
            bounding_box=pb.BoundingBox(
                top_row=top, left_col=left, bottom_row=bottom, right_col=right
            )
        ),
        data=pb.Data(concepts=[pb.Concept(id=concept, value=1.0)]),
    )


def name(code: int) -> str:
    return codes.StatusCode.Name(code)


def assert_ok(response: Any) -> Any:
    assert response.status.code == codes.SUCCESS, (
        f"expected SUCCESS, got {name(response.status.code)}: {response.status.description} "
        f"{response.status.details}"
    )
    return response


def assert_status(status: Any, code: int, *words: str) -> None:
    """`status` has `code` and a description that mentions each of `words` (case-insensitive)."""
    status = getattr(status, "status", status)
    assert status.code == code, (
        f"expected {name(code)}, got {name(status.code)}: {status.description} {status.details}"
    )
    text = f"{status.description} {status.details}".lower()
    assert status.description and status.description != name(code), "the description says nothing"
    for word in words:
        assert word.lower() in text, f"{word!r} not in {status.description!r} / {status.details!r}"


def input_ids(api: Any, **fields: Any) -> list[str]:
    """Every input id stored in the client's app (all pages)."""
    ids: list[str] = []
    page = 1
    while True:
        reply = assert_ok(api.ListInputs(page=page, per_page=500, **fields))
        if not reply.inputs:
            return ids
        ids += [i.id for i in reply.inputs]
        page += 1


def input_count(api: Any) -> int:
    return assert_ok(api.GetInputCount()).counts.processed

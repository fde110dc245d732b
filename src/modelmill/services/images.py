"""The one guarded image decoder: every image a client sends (inputs, region masks, web uploads,
zip members) is opened here, refused before decoding when it has more pixels than
MODELMILL_MAX_IMAGE_PIXELS, and any decoding failure becomes an ApiError with the caller's codes.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image, UnidentifiedImageError

from modelmill.domain.errors import ApiError

# Raw bytes that look like base64 text: a client that encoded the image twice.
_BASE64_TEXT = re.compile(rb"^[A-Za-z0-9+/=\r\n]+$")
_SNIFFED_BYTES = 4096


@dataclass(frozen=True)
class ImageCodes:
    """The statuses one caller answers: inputs and annotations each have their own codes."""

    too_large: int
    unreadable: int


INPUT_CODES = ImageCodes(codes.INPUT_OVER_LIMIT, codes.INPUT_UNSUPPORTED_FORMAT)


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # fully loaded
    mime: str
    width: int
    height: int


def decode_image(
    data: bytes, max_pixels: int, status: ImageCodes = INPUT_CODES, what: str = "The image"
) -> DecodedImage:
    """Open and fully decode image bytes within `max_pixels`, else raise ApiError.

    The size is read from the header and checked before any pixel is decoded, so a small
    compressed file that would expand to gigabytes (a decompression bomb) costs nothing.

    >>> decode_image(png_bytes, 10_000, what="A region mask").width
    """
    if not data:
        raise ApiError(status.unreadable, f"{what} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            # Our own limit decides; Pillow's warning between its limit and twice it is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ApiError(
                    status.too_large,
                    f"{what} is {width}x{height} = {width * height} pixels; the limit is "
                    f"{max_pixels} pixels.",
                )
            image.load()
    except Image.DecompressionBombError as error:
        # Pillow refuses above twice its own limit while opening, before we see the size.
        raise ApiError(
            status.too_large,
            f"{what} has too many pixels ({error}); the limit is {max_pixels} pixels.",
        ) from None
    except UnidentifiedImageError:
        hint = ""
        if _BASE64_TEXT.match(data[:_SNIFFED_BYTES]):
            hint = (
                " The bytes look like base64 text: base64-encode the image once (JSON) or "
                "send raw bytes (gRPC), not both."
            )
        raise ApiError(
            status.unreadable,
            f"{what} is not an image modelmill can read (JPEG, PNG, GIF, WebP, BMP, TIFF)." + hint,
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ApiError(
            status.unreadable,
            f"{what} could not be decoded ({error}); it may be truncated or corrupt.",
        ) from None
    mime = Image.MIME.get(image.format or "", "application/octet-stream")
    return DecodedImage(image, mime, width, height)

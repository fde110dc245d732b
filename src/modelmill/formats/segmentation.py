"""Mask-PNG folders (Pascal VOC SegmentationClass, Cityscapes-style label ids, most
segmentation exports): an image folder, a mask folder with one PNG per image (same relative
path and stem) whose pixel values are class indices, and a classes list (index i names the
class of pixel value i; index 0 is background). Parsed into images with one mask region per
class present, or refusals that say what to fix. Pure: reads files, writes nothing.

Pixel values in `void_values` (VOC's 255 outlines) are unlabelled borders: no class's mask has
them. Any other value with no class in the list refuses the image, since guessing would label
pixels wrongly.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MASK_SUFFIX = ".png"
BACKGROUND_INDEX = 0
VOID_VALUES = (255,)  # Pascal VOC marks object outlines "void" with 255
MASK_ON = 255
CLASS_INDEX_MODES = ("P", "L", "I;16", "I")  # palette or single-channel: values are indices
MAX_LISTED_VALUES = 5


@dataclass(frozen=True)
class MaskRegion:
    """The pixels of one class in one image: a single-channel PNG of the image's size, 255
    inside (what PostAnnotations takes as region_info.mask.image)."""

    concept: str
    mask_png: bytes
    pixels: int


@dataclass(frozen=True)
class MaskedImage:
    name: str  # the image's path relative to the image folder
    path: Path
    size: tuple[int, int]  # width, height
    regions: tuple[MaskRegion, ...]  # empty: an image of background only


@dataclass(frozen=True)
class Refusal:
    name: str
    reason: str


@dataclass(frozen=True)
class MaskFolderImport:
    images: list[MaskedImage] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    concepts: list[str] = field(default_factory=list)  # the classes that label some pixel


class ClassesError(ValueError):
    """The classes list cannot name mask values (empty, blank or repeated names)."""


def read_classes(path: Path) -> list[str]:
    """A classes file: one class name per line, line 1 for pixel value 0 (background), line 2
    for value 1 and so on. Blank lines at the end are ignored; blank lines inside are refused,
    since they would shift every later class by one."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return check_classes([line.strip() for line in lines])


def check_classes(classes: Sequence[str]) -> list[str]:
    names = [name.strip() for name in classes]
    if len(names) < 2:
        raise ClassesError(
            "The classes list needs the background (pixel value 0) and at least one class."
        )
    blank = [str(i + 1) for i, name in enumerate(names) if not name]
    if blank:
        raise ClassesError(f"Classes list line(s) {', '.join(blank)} are blank; name every value.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ClassesError(
            f"Classes listed twice: {', '.join(repeated)}; each value needs its own."
        )
    return names


def _mask_png(inside: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.where(inside, MASK_ON, 0).astype(np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def _images(folder: Path) -> Iterable[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_indices(mask_path: Path) -> np.ndarray:
    """The mask's pixel values as class indices; ValueError saying why it cannot be read so."""
    try:
        with Image.open(mask_path) as mask:
            mask.load()
            if mask.mode not in CLASS_INDEX_MODES:
                raise ValueError(
                    f"its mask {mask_path.name} is a {mask.mode} image; class-index masks are "
                    "single-channel or palette PNGs whose pixel values are class indices"
                )
            return np.asarray(mask).astype(np.int64)
    except ValueError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt or truncated files
        raise ValueError(f"its mask {mask_path.name} is not a decodable PNG: {error}") from error


def parse_image(
    image_path: Path,
    mask_path: Path,
    name: str,
    classes: Sequence[str],
    void_values: Sequence[int] = VOID_VALUES,
) -> MaskedImage:
    """One image and its mask; ValueError with a reason a person can act on."""
    try:
        with Image.open(image_path) as image:
            size = image.size  # the header is enough: the pixels are not needed here
    except Exception as error:  # Pillow raises many types for unreadable files
        raise ValueError(f"is not a readable image: {error}") from error
    indices = _class_indices(mask_path)
    if (indices.shape[1], indices.shape[0]) != size:
        raise ValueError(
            f"its mask is {indices.shape[1]}×{indices.shape[0]} pixels and the image "
            f"{size[0]}×{size[1]}; a mask must be its image's size"
        )
    values = [int(v) for v in np.unique(indices)]
    unknown = [v for v in values if v >= len(classes) and v not in void_values]
    if unknown:
        listed = ", ".join(map(str, unknown[:MAX_LISTED_VALUES]))
        raise ValueError(
            f"its mask has pixel values {listed} but the classes list names values 0 to "
            f"{len(classes) - 1}; add those classes or fix the mask"
        )
    regions = tuple(
        MaskRegion(classes[v], _mask_png(indices == v), int((indices == v).sum()))
        for v in values
        if v != BACKGROUND_INDEX and v not in void_values and v < len(classes)
    )
    return MaskedImage(name, image_path, size, regions)


def parse_mask_folders(
    image_dir: Path,
    mask_dir: Path,
    classes: Sequence[str],
    void_values: Sequence[int] = VOID_VALUES,
) -> MaskFolderImport:
    """Every image under `image_dir` with the mask at the same relative path under `mask_dir`
    (stem + .png). Images without a mask, with a mask that does not fit, and masks without an
    image are refused, each with its reason; the rest come back with their regions."""
    names = check_classes(classes)
    result = MaskFolderImport()
    matched: set[Path] = set()
    for image_path in _images(image_dir):
        relative = image_path.relative_to(image_dir)
        mask_path = mask_dir / relative.with_suffix(MASK_SUFFIX)
        if not mask_path.is_file():
            result.refused.append(
                Refusal(str(relative), f"has no mask: expected {mask_path.relative_to(mask_dir)}")
            )
            continue
        matched.add(mask_path.resolve())
        try:
            result.images.append(
                parse_image(image_path, mask_path, str(relative), names, void_values)
            )
        except ValueError as error:
            result.refused.append(Refusal(str(relative), str(error)))
    for mask_path in sorted(mask_dir.rglob(f"*{MASK_SUFFIX}")):
        if mask_path.resolve() not in matched:
            relative = mask_path.relative_to(mask_dir)
            result.refused.append(Refusal(str(relative), "is a mask with no image of that name"))
    present = {region.concept for image in result.images for region in image.regions}
    result.concepts.extend(name for name in names[1:] if name in present)
    return result

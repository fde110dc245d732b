"""Importing mask-PNG folders: images and class-index masks the test writes (palette and
grey PNGs, nested folders), regions per class, void borders, and every refusal with its reason.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelmill.formats.segmentation import (
    ClassesError,
    parse_mask_folders,
    read_classes,
)

CLASSES = ["background", "cat", "dog"]


def write_pair(root: Path, name: str, indices: np.ndarray, mode: str = "P") -> None:
    image_path = root / "images" / f"{name}.jpg"
    mask_path = root / "masks" / f"{name}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    height, width = indices.shape
    Image.new("RGB", (width, height), (90, 120, 30)).save(image_path)
    mask = Image.fromarray(indices.astype(np.uint8), "L")
    if mode == "P":
        mask = mask.convert("P")  # a palette PNG, as VOC ships: the palette indices are classes
    elif mode == "RGB":
        mask = mask.convert("RGB")
    mask.save(mask_path)


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_each_class_present_becomes_a_mask_region_of_the_image_size(tmp_path):
    two = np.zeros((6, 8), np.uint8)
    two[:3, :4] = 1
    two[4:, 5:] = 2
    two[3, :] = 255  # a VOC void outline: nobody's pixels
    write_pair(tmp_path, "a", two)
    write_pair(tmp_path, "nested/b", np.zeros((5, 5), np.uint8), mode="L")  # background only
    result = parse_mask_folders(tmp_path / "images", tmp_path / "masks", CLASSES)
    assert result.refused == []
    by_name = {image.name: image for image in result.images}
    assert set(by_name) == {"a.jpg", "nested/b.jpg"}
    a = by_name["a.jpg"]
    assert a.size == (8, 6) and [r.concept for r in a.regions] == ["cat", "dog"]
    cat = decoded(a.regions[0].mask_png)
    assert cat.shape == (6, 8) and (cat[:3, :4] == 255).all() and cat.sum() == 255 * 12
    assert a.regions[0].pixels == 12 and a.regions[1].pixels == 6
    assert by_name["nested/b.jpg"].regions == ()
    assert result.concepts == ["cat", "dog"]


def test_refusals_say_what_to_fix(tmp_path):
    write_pair(tmp_path, "unknown-value", np.full((4, 4), 7, np.uint8))
    write_pair(tmp_path, "rgb", np.ones((4, 4), np.uint8), mode="RGB")
    write_pair(tmp_path, "ok", np.ones((4, 4), np.uint8))
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "no-mask.jpg")
    Image.new("L", (4, 4)).save(tmp_path / "masks" / "orphan.png")
    Image.new("L", (3, 4)).save(tmp_path / "masks" / "wrong-size.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "wrong-size.jpg")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "masks" / "broken.png").write_bytes(b"\x89PNG broken")
    result = parse_mask_folders(tmp_path / "images", tmp_path / "masks", CLASSES)
    reasons = {refusal.name: refusal.reason for refusal in result.refused}
    assert [image.name for image in result.images] == ["ok.jpg"]
    assert "pixel values 7" in reasons["unknown-value.jpg"]
    assert "single-channel or palette" in reasons["rgb.jpg"]
    assert "expected no-mask.png" in reasons["no-mask.jpg"]
    assert "no image" in reasons["orphan.png"]
    assert "its image's size" in reasons["wrong-size.jpg"]
    assert "not a readable image" in reasons["broken.jpg"]


def test_classes_file_is_checked(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\ncat\ndog\n\n")
    assert read_classes(path) == CLASSES
    path.write_text("background\n\ndog\n")
    with pytest.raises(ClassesError, match="line"):
        read_classes(path)
    with pytest.raises(ClassesError, match="twice"):
        parse_mask_folders(tmp_path, tmp_path, ["background", "cat", "cat"])
    with pytest.raises(ClassesError, match="at least one"):
        parse_mask_folders(tmp_path, tmp_path, ["background"])

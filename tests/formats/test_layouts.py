"""Dataset folders as YOLO tools write them (Ultralytics splits with data.yaml, Roboflow's split
folders), read into images with Clarifai box regions; a data.yaml without names is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from modelmill.formats.detection import ImportFormatError
from modelmill.formats.layouts import LAYOUTS


def write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.new("RGB", (40, 20), (90, 90, 90)).save(path)
    else:
        path.write_text(text)


def concepts(image_regions: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [region["data"]["concepts"][0]["id"] for region in image_regions]


def test_ultralytics_splits_with_names_in_data_yaml(tmp_path: Path) -> None:
    write(
        tmp_path / "data.yaml",
        "path: .\ntrain: images/train\nnames:\n  0: traffic light\n  1: car\n",
    )
    for split in ("train", "val"):
        write(tmp_path / "images" / split / f"{split}-1.jpg")
        write(
            tmp_path / "labels" / split / f"{split}-1.txt", "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.4 0.4\n"
        )
    write(tmp_path / "labels" / "val" / "gone.txt", "0 0.5 0.5 0.2 0.2\n")

    result = LAYOUTS["yolo"](tmp_path)

    assert {i.input_id: concepts(i.regions) for i in result.images} == {
        "train-1": ["traffic-light", "car"],
        "val-1": ["traffic-light", "car"],
    }
    assert result.images[0].regions[0]["data"]["concepts"][0]["name"] == "traffic light"
    assert [source for source, _ in result.refused] == ["val/gone.txt"]


def test_roboflow_split_folders_share_one_set_of_ids(tmp_path: Path) -> None:
    write(tmp_path / "data.yaml", "names: ['cat', 'dog']\nnc: 2\n")
    write(tmp_path / "README.roboflow.txt", "not a label file")
    for split in ("train", "valid"):
        write(tmp_path / split / "images" / "a.jpg")
        write(tmp_path / split / "labels" / "a.txt", "1 0.5 0.5 0.2 0.2\n")

    result = LAYOUTS["yolo"](tmp_path)

    assert [(i.input_id, concepts(i.regions)) for i in result.images] == [
        ("a", ["dog"]),
        ("a-2", ["dog"]),
    ]
    assert result.refused == []


@pytest.mark.parametrize("text", ["nc: 2\n", "names: {1: cat, 2: dog}\n", "names: [unclosed\n"])
def test_a_data_yaml_without_usable_names_says_what_it_needs(tmp_path: Path, text: str) -> None:
    write(tmp_path / "data.yaml", text)
    write(tmp_path / "labels" / "a.txt", "0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ImportFormatError, match="data.yaml"):
        LAYOUTS["yolo"](tmp_path)

"""The command line's file readers and progress display, without a server: ids derived from
files, labels, and the problems reported per item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb

from modelmill.client.commands import progress_fields
from modelmill.client.importers import IMPORTERS, detect_format, input_id, read_items


def test_ids_are_valid_and_stable() -> None:
    assert input_id("cat/img 1") == "cat-img-1"
    assert input_id("_unlabelled/x") == "unlabelled-x"
    assert input_id("...") == "input"
    assert input_id("a" * 300) == "a" * 128


def test_image_folder_labels_by_folder_and_skips_other_files(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.JPG").write_bytes(b"x")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "_unlabelled").mkdir()
    (tmp_path / "_unlabelled" / "b.png").write_bytes(b"y")
    (tmp_path / "c.png").write_bytes(b"z")
    items = {i.id: i for i in read_items(tmp_path)}
    assert {k: v.concepts for k, v in items.items()} == {"cat-a": ["cat"], "b": [], "c": []}
    assert items["cat-a"].load() == b"x"


def test_csv_needs_an_input_column(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("text,label\nhello,greeting\n")
    with pytest.raises(ValueError, match="no 'input' column"):
        read_items(path)


def test_csv_rows_get_ids_from_their_number(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text('input,concepts\n"one, two",a\nthree," b , c "\n')
    items = read_items(path)
    assert [(i.id, i.kind, i.load(), i.concepts) for i in items] == [
        ("notes-1", "text", "one, two", ["a"]),
        ("notes-2", "text", "three", ["b", "c"]),
    ]


def test_jsonl_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"text": "hi", "concepts": ["x"], "metadata": {"k": 1}}),
                json.dumps({"image": "missing.png"}),
                json.dumps({"other": 1}),
            ]
        )
    )
    first, second, third = read_items(path)
    assert (first.id, first.load(), first.concepts, first.metadata) == (
        "d-1",
        "hi",
        ["x"],
        {"k": 1},
    )
    assert "does not exist" in second.problem
    assert "needs 'prompt'" in third.problem


def test_formats_are_told_by_the_path(tmp_path: Path) -> None:
    assert detect_format(tmp_path) == "imagefolder"
    assert detect_format(tmp_path / "a.JSONL") == "jsonl"
    with pytest.raises(ValueError, match="--format"):
        detect_format(tmp_path / "a.txt")
    assert detect_format(tmp_path / "instances.json") == "coco"
    assert set(IMPORTERS) == {"imagefolder", "csv", "jsonl", "coco", "yolo", "voc", "masks"}


@pytest.mark.parametrize(
    ("files", "layout"),
    [
        (["cat/a.jpg", "b.png"], "imagefolder"),
        (["cat/a.jpg", "cat/notes.json", "cat/a.xml", "cat/classes.txt"], "imagefolder"),
        (["annotations/instances.json", "images/a.jpg"], "coco"),
        (["labels/a.txt", "classes.txt", "images/a.jpg"], "yolo"),
        (["data.yaml", "train/labels/a.txt", "train/images/a.jpg"], "yolo"),
        (["Annotations/a.xml", "JPEGImages/a.jpg"], "voc"),
        (["images/a.jpg", "masks/a.png", "classes.txt"], "masks"),
        (["JPEGImages/a.jpg", "SegmentationClass/a.png", "classes.txt"], "masks"),
    ],
)
def test_folder_layouts_are_told_by_their_files(
    tmp_path: Path, files: list[str], layout: str
) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert detect_format(tmp_path) == layout


def test_progress_shows_percent_epoch_loss_and_eta() -> None:
    version = pb.ModelVersion()
    version.metadata.update(
        {
            "progress": {
                "percent": 42.5,
                "epoch": 3.0,
                "num_epochs": 10.0,
                "train_loss": 0.12345,
                "eta_s": 61.2,
            }
        }
    )
    assert progress_fields(version) == {
        "percent": 42.5,
        "epoch": "epoch 3/10",
        "loss": "loss 0.1235",
        "eta": "ETA 61 s",
    }
    assert progress_fields(pb.ModelVersion())["eta"] == ""

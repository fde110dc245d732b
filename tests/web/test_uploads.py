"""Reading uploads: concept folders in a zip, annotated datasets in a zip, CSV rows of texts and
labels, per-file errors."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError
from modelmill.services.inputs import InputResult, NewInput
from modelmill.settings import Settings
from modelmill.web import uploads
from web.helpers import concept_zip, png, texts_csv, yolo_zip

SETTINGS = Settings()


def concepts_of(item: uploads.Item) -> list[str]:
    assert item.spec is not None, item.error
    return [c["id"] for c in item.spec.labels.get("concepts", [])]


def test_zip_folders_name_the_concepts_and_macos_files_are_skipped() -> None:
    items = list(uploads.read_files([("set.zip", concept_zip(per_concept=2))], "", SETTINGS))
    names = [item.name for item in items]
    assert "set.zip: colours/red/0.png" in names and not any("__MACOSX" in n for n in names)
    assert {tuple(concepts_of(i)) for i in items if i.spec} == {("red",), ("blue",)}


def test_a_zipped_yolo_dataset_becomes_inputs_with_boxes_and_refusals() -> None:
    items = list(uploads.read_files([("shapes.zip", yolo_zip())], "ignored", SETTINGS))
    stored = {i.spec.id: i.spec.labels for i in items if i.spec is not None}
    assert stored == {
        "a": {
            "regions": [
                {
                    "region_info": {
                        "bounding_box": {
                            "top_row": 0.25,
                            "left_col": 0.25,
                            "bottom_row": 0.75,
                            "right_col": 0.75,
                        }
                    },
                    "data": {"concepts": [{"id": "red", "name": "red", "value": 1.0}]},
                }
            ]
        },
        "b": {},
    }
    refused = {i.name: i.error for i in items if i.spec is None}
    assert set(refused) == {"shapes.zip: a.txt line 2", "shapes.zip: c.txt"}
    assert refused["shapes.zip: a.txt line 2"] == "class 5 is not one of 0-1"
    assert "no image named c.*" in refused["shapes.zip: c.txt"]


def test_a_zipped_dataset_with_a_file_over_the_limit_is_not_read() -> None:
    settings = Settings(max_input_bytes=100)
    items = list(uploads.read_files([("shapes.zip", yolo_zip())], "", settings))
    assert all(i.spec is None for i in items)
    assert {i.name for i in items} == {
        "shapes.zip: shapes/images/a.png",
        "shapes.zip: shapes/images/b.png",
    }
    assert "the limit for one input is 100" in items[0].error


def test_annotation_files_alone_ask_for_a_zip_with_their_images() -> None:
    (item,) = uploads.read_files([("instances.json", b"{}")], "", SETTINGS)
    assert item.spec is None and "upload one .zip" in item.error


def test_csv_rows_are_texts_with_their_concepts() -> None:
    data = texts_csv([("great", "good|happy"), ("meh", ""), ("awful", "bad; sad")])
    items = list(uploads.read_files([("t.csv", data)], "review", SETTINGS))
    assert [i.name for i in items] == ["t.csv row 2", "t.csv row 3", "t.csv row 4"]
    assert [concepts_of(i) for i in items] == [["good", "happy"], ["review"], ["bad", "sad"]]
    assert items[0].spec is not None and items[0].spec.text == "great"


def test_csv_without_a_text_column_says_what_it_needs() -> None:
    (item,) = uploads.read_files([("t.csv", b"body,labels\nhi,x\n")], "", SETTINGS)
    assert item.spec is None and "'text' column" in item.error


def test_images_get_the_chosen_concept_and_empty_files_an_error() -> None:
    image, empty = uploads.read_files([("a.png", png((1, 2, 3))), ("b.png", b"")], "dots", SETTINGS)
    assert concepts_of(image) == ["dots"]
    assert empty.error == "The file is empty (0 bytes)."


def test_a_concept_id_people_cannot_use_is_refused() -> None:
    with pytest.raises(ApiError, match="has characters ids cannot hold"):
        uploads.check_concept("two words")


def test_uploaded_files_are_read_from_their_spool_one_at_a_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "set.zip"
    archive.write_bytes(concept_zip(per_concept=2))
    too_big = tmp_path / "huge.png"
    too_big.write_bytes(b"\0" * 100_000)
    settings = Settings(max_input_bytes=50_000)

    with archive.open("rb") as zipped, too_big.open("rb") as huge:
        items = list(uploads.read_files([("set.zip", zipped), ("huge.png", huge)], "", settings))

    names = [i.name for i in items if i.spec]
    assert names == [f"set.zip: colours/{c}/{n}.png" for c in ("red", "blue") for n in (0, 1)] + [
        "set.zip: colours/red/broken.png"
    ]
    assert items[-1].name == "huge.png" and "100000 bytes" in items[-1].error


def test_a_batch_is_stored_once_it_holds_the_byte_budget(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Many large files are stored in several small batches, not held 128 at a time."""
    stored: list[int] = []

    def post_inputs(env, app, specs):  # type: ignore[no-untyped-def]
        stored.append(sum(len(s.image_bytes) for s in specs))
        return [InputResult(s.id, codes.INPUT_DOWNLOAD_SUCCESS) for s in specs], "job"

    monkeypatch.setattr(uploads, "post_inputs", post_inputs)
    monkeypatch.setattr(uploads, "MAX_BATCH_BYTES", 3_000)
    items = (uploads.Item(f"{n}.png", NewInput(image_bytes=b"x" * 1_000)) for n in range(10))

    report = uploads.store(None, None, items)  # type: ignore[arg-type]

    assert report.added == 10
    assert stored == [3_000, 3_000, 3_000, 1_000]

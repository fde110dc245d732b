"""Reading uploads: concept folders in a zip, CSV rows of texts and labels, per-file errors."""

from __future__ import annotations

import pytest

from modelmill.domain.errors import ApiError
from modelmill.settings import Settings
from modelmill.web import uploads
from web.helpers import concept_zip, png, texts_csv

SETTINGS = Settings()


def concepts_of(item: uploads.Item) -> list[str]:
    assert item.spec is not None, item.error
    return [c["id"] for c in item.spec.labels.get("concepts", [])]


def test_zip_folders_name_the_concepts_and_macos_files_are_skipped() -> None:
    items = list(uploads.read_files([("set.zip", concept_zip(per_concept=2))], "", SETTINGS))
    names = [item.name for item in items]
    assert "set.zip: colours/red/0.png" in names and not any("__MACOSX" in n for n in names)
    assert {tuple(concepts_of(i)) for i in items if i.spec} == {("red",), ("blue",)}


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

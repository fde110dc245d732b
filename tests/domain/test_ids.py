"""Resource ids: what a user-chosen id may look like, and generated ids."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError, not_found
from modelmill.domain.ids import MAX_ID_LENGTH, check_id, new_id


@pytest.mark.parametrize("good", ["cat", "Cat_2", "a.b-c", "0start", "x" * MAX_ID_LENGTH])
def test_valid_ids_are_returned_unchanged(good: str) -> None:
    assert check_id(good, "input") == good


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("", "empty"),
        ("x" * (MAX_ID_LENGTH + 1), f"limit is {MAX_ID_LENGTH}"),
        ("has space", "characters"),
        ("slash/", "characters"),
        ("-dash-first", "starting with a letter or digit"),
        ("_underscore-first", "starting with a letter or digit"),
        ("ünïcode", "characters"),
        ("semi;colon", "characters"),
    ],
)
def test_invalid_ids_say_what_is_wrong(bad: str, words: str) -> None:
    with pytest.raises(ApiError) as raised:
        check_id(bad, "dataset")

    assert raised.value.code == codes.CONN_INVALID_REQUEST
    assert words in raised.value.description
    assert "dataset" in raised.value.description


def test_the_caller_chooses_the_status_code() -> None:
    with pytest.raises(ApiError) as raised:
        check_id("bad id", "input", codes.INPUT_INVALID_ARGUMENT)

    assert raised.value.code == codes.INPUT_INVALID_ARGUMENT


def test_new_ids_are_32_hex_characters_and_distinct() -> None:
    ids = {new_id() for _ in range(1000)}

    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert all(check_id(i, "input") == i for i in ids)


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("model", codes.MODEL_DOES_NOT_EXIST),
        ("model version", codes.MODEL_DOES_NOT_EXIST),
        ("input", codes.INPUT_DOES_NOT_EXIST),
        ("dataset", codes.CONN_DOES_NOT_EXIST),
    ],
)
def test_not_found_uses_the_code_of_the_kind(kind: str, code: int) -> None:
    error = not_found(kind, "x1", "app 'pets'")

    assert error.code == code
    assert error.description == f"{kind.capitalize()} 'x1' does not exist in app 'pets'."

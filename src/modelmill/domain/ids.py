"""Resource ids: what a user-chosen id may look like, and fresh ids when none is given."""

from __future__ import annotations

import re
import uuid

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError

MAX_ID_LENGTH = 255
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def new_id() -> str:
    """A fresh 32-character hex id, the shape Clarifai gives generated ids."""
    return uuid.uuid4().hex


def check_id(resource_id: str, kind: str, code: int = codes.CONN_INVALID_REQUEST) -> str:
    """Return `resource_id` if it is a valid id, else raise with `code`.

    Ids start with a letter or digit and use letters, digits, '_', '-' and '.' only.
    """
    if not resource_id:
        raise ApiError(code, f"The {kind} id is empty; give an id or leave it out to get one.")
    if len(resource_id) > MAX_ID_LENGTH:
        raise ApiError(
            code, f"The {kind} id is {len(resource_id)} characters; the limit is {MAX_ID_LENGTH}."
        )
    if not _ID_PATTERN.match(resource_id):
        raise ApiError(
            code,
            f"The {kind} id {resource_id!r} has characters ids cannot hold: use letters, digits, "
            "'_', '-' and '.', starting with a letter or digit.",
        )
    return resource_id

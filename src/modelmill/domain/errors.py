"""The one error type every layer raises: a Clarifai status code plus words a person can act on."""

from __future__ import annotations

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes


class ApiError(Exception):
    """A request that cannot be done, with the status code the API answers.

    >>> raise ApiError(codes.MODEL_DOES_NOT_EXIST, "Model 'cats' does not exist in app 'pets'.")
    """

    def __init__(self, code: int, description: str, details: str = "") -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.details = details

    def __repr__(self) -> str:
        return f"ApiError({codes.StatusCode.Name(self.code)}, {self.description!r})"


def not_found(kind: str, resource_id: str, where: str = "") -> ApiError:
    """The error for a missing resource of any kind, with the code that kind uses."""
    code = {
        "model": codes.MODEL_DOES_NOT_EXIST,
        "model version": codes.MODEL_DOES_NOT_EXIST,
        "input": codes.INPUT_DOES_NOT_EXIST,
    }.get(kind, codes.CONN_DOES_NOT_EXIST)
    suffix = f" in {where}" if where else ""
    return ApiError(code, f"{kind.capitalize()} '{resource_id}' does not exist{suffix}.")

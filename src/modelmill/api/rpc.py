"""The decorator every servicer method wears: authenticate, run, and turn errors into statuses.

Clients read errors from `status` in a normal reply; gRPC errors are for transport problems only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import message_factory
from sqlalchemy import exc as sql_errors

from modelmill.api.convert import status
from modelmill.domain.errors import ApiError

log = logging.getLogger("modelmill.api")
# Errors that mean "the database cannot be reached", not "this call is wrong".
DATABASE_UNAVAILABLE = (
    sql_errors.OperationalError,
    sql_errors.InterfaceError,
    sql_errors.TimeoutError,
)


class CallContext(Protocol):
    """What a method reads from its transport: gRPC's ServicerContext or the REST shim."""

    def invocation_metadata(self) -> Any: ...


def response_class(method_name: str) -> type:
    descriptor = service_pb2._V2.methods_by_name[method_name].output_type
    return message_factory.GetMessageClass(descriptor)


def authorization(context: CallContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value
    return None


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `method(self, request, principal)` as a V2 method `(self, request, context)`."""
    name = method.__name__
    reply = response_class(name)

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: CallContext) -> Any:
        try:
            principal = self.authenticate(authorization(context))
            response = method(self, request, principal)
            if not response.status.code:
                response.status.CopyFrom(status(codes.SUCCESS, "Ok"))
            return response
        except ApiError as error:
            return reply(status=status(error.code, error.description, error.details))
        except DATABASE_UNAVAILABLE:
            # The database is down or unreachable: the call's transaction did not commit, and
            # the client should try again rather than report a bug.
            log.warning("%s: the database is unavailable", name, exc_info=True)
            return reply(
                status=status(
                    codes.DATABASE_FAIL_TO_GET_CONNECTIONS,
                    "The server's database is unavailable just now; nothing of this call was "
                    "saved. Try again shortly.",
                )
            )
        except Exception:
            log.exception("%s failed", name)
            return reply(
                status=status(
                    codes.INTERNAL_SERVER_ISSUE,
                    "modelmill hit an unexpected error; the server log has the details.",
                )
            )

    handler.is_modelmill_rpc = True  # type: ignore[attr-defined]
    return handler


def batch_status(codes_: list[int], success: int, first_error: str = "") -> Any:
    """The top-level status of a batch: SUCCESS, MIXED_STATUS, or the shared failure."""
    failures = [c for c in codes_ if c != success]
    if not failures:
        return status(codes.SUCCESS, "Ok")
    if len(failures) < len(codes_):
        return status(
            codes.MIXED_STATUS,
            f"{len(codes_) - len(failures)} of {len(codes_)} succeeded; "
            "each item's status says what went wrong with it.",
        )
    if len(set(failures)) == 1:
        return status(failures[0], first_error)
    return status(codes.FAILURE, "Every item failed; each item's status says why.")

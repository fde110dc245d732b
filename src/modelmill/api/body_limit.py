"""The request body limit of the HTTP server (REST gateway and web uploads): a body declared or
streamed beyond MODELMILL_MAX_REQUEST_BYTES is refused with 413 and a Clarifai status, before
it is held in memory or spooled to disk."""

from __future__ import annotations

import json
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError

Scope = dict[str, Any]
Message = dict[str, Any]
HTTP_PAYLOAD_TOO_LARGE = 413


class BodyTooLarge(ApiError):
    """Raised by `receive` once a streamed body passes the limit; pages show its description."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            codes.RPC_MAX_MESSAGE_SIZE_EXCEEDED,
            f"The request body is larger than this server's limit of {limit} bytes; send "
            "fewer or smaller inputs per request (an administrator sets "
            "MODELMILL_MAX_REQUEST_BYTES).",
        )


class BodyLimit:
    """ASGI middleware: refuses a too-large Content-Length at once and stops a chunked body as
    soon as it passes the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, BodyTooLarge(self.max_bytes))
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as error:
            if started:
                raise
            await _refuse(send, error)


async def _refuse(send: Any, error: ApiError) -> None:
    body = json.dumps({"status": {"code": error.code, "description": error.description}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": HTTP_PAYLOAD_TOO_LARGE,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

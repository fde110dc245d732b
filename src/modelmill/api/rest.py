"""REST/JSON for the same servicer, at the paths in each method's google.api.http annotation.

Routes are read from `service_pb2._V2` at start-up. Literal path segments win over variables
(`models/types` before `models/{model_id}`), trailing slashes are ignored, DELETE bodies are
read whatever their content type, unknown JSON fields are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clarifai_grpc.channel.custom_converters.custom_message_to_dict import protobuf_to_dict
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.utils import extensions_pb2
from google.protobuf import descriptor, json_format, message_factory
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from modelmill.api.convert import status
from modelmill.api.rpc import response_class

_HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_VARIABLE = re.compile(r"^\{([^}=]+)\}$")

# HTTP status for a reply's status code; any other failure is 400.
_HTTP_STATUS = {
    codes.SUCCESS: 200,
    codes.MIXED_STATUS: 207,
    codes.CONN_KEY_INVALID: 401,
    codes.CONN_INSUFFICIENT_SCOPES: 403,
    codes.CONN_DOES_NOT_EXIST: 404,
    codes.MODEL_DOES_NOT_EXIST: 404,
    codes.INPUT_DOES_NOT_EXIST: 404,
    codes.WORKFLOW_DOES_NOT_EXIST: 404,
    codes.INTERNAL_SERVER_ISSUE: 500,
}


@dataclass(frozen=True)
class Route:
    rpc_name: str
    segments: tuple[str, ...]  # literal text, or the field path of a {variable}
    variables: tuple[bool, ...]
    input_descriptor: descriptor.Descriptor

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        fields = {}
        for part, segment, variable in zip(parts, self.segments, self.variables, strict=True):
            if variable:
                if not part:
                    return None
                fields[segment] = part
            elif part != segment:
                return None
        return fields


def _routes(implemented: set[str]) -> dict[str, list[Route]]:
    table: dict[str, list[Route]] = {m.upper(): [] for m in _HTTP_METHODS}
    for method in service_pb2._V2.methods:
        if method.name not in implemented:
            continue
        rule = method.GetOptions().Extensions[_http_extension()]
        for binding in [rule, *rule.additional_bindings]:
            verb = binding.WhichOneof("pattern")
            if verb not in _HTTP_METHODS:
                continue
            parts = getattr(binding, verb).strip("/").split("/")
            matches = [_VARIABLE.match(p) for p in parts]
            table[verb.upper()].append(
                Route(
                    method.name,
                    tuple(m.group(1) if m else p for m, p in zip(matches, parts, strict=True)),
                    tuple(m is not None for m in matches),
                    method.input_type,
                )
            )
    for routes in table.values():
        # Literal segments before variables, position by position.
        routes.sort(key=lambda r: r.variables)
    return table


def _http_extension() -> Any:
    from google.api import annotations_pb2

    return annotations_pb2.http


def _set_path(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        target = target.setdefault(name, {})
    target[leaf] = value


def _query_to_dict(request: Request, message: descriptor.Descriptor) -> dict[str, Any]:
    """GET query parameters (dotted names, repeated keys) as a JSON dict for `message`."""
    result: dict[str, Any] = {}
    for key in dict.fromkeys(request.query_params.keys()):
        values = request.query_params.getlist(key)
        field = _field_at(message, key)
        if field is None:
            continue  # unknown parameters are ignored, like unknown JSON fields
        if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
            values = [v.lower() in ("true", "1") for v in values]  # type: ignore[misc]
        _set_path(result, key, values if field.label == field.LABEL_REPEATED else values[-1])
    return result


def _field_at(message: descriptor.Descriptor, path: str) -> descriptor.FieldDescriptor | None:
    field = None
    for name in path.split("."):
        if message is None:
            return None
        field = message.fields_by_name.get(name)
        if field is None:
            return None
        message = field.message_type
    return field


def _apply_default_floats(value: Any, message: descriptor.Descriptor) -> None:
    """Clarifai's `cl_default_float`: a field left out of the JSON takes that default (a concept
    without "value" is a positive label, value 1)."""
    if not isinstance(value, dict):
        return
    for field in message.fields:
        options = field.GetOptions()
        if options.HasExtension(extensions_pb2.cl_default_float) and field.name not in value:
            value[field.name] = options.Extensions[extensions_pb2.cl_default_float]
        child = value.get(field.name)
        if field.message_type is None or child is None or field.message_type.GetOptions().map_entry:
            continue
        for item in child if isinstance(child, list) else [child]:
            _apply_default_floats(item, field.message_type)


_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


def _check_base64(value: Any, message: descriptor.Descriptor, path: str = "") -> None:
    """Reject bytes fields that are not base64. json_format decodes leniently (it drops
    characters outside the alphabet), so broken base64 would otherwise reach the services as
    debris and be answered with a misleading "not an image"."""
    if not isinstance(value, dict):
        return
    for field in message.fields:
        name = field.name if field.name in value else field.json_name
        child = value.get(name)
        if child is None:
            continue
        items = child if isinstance(child, list) else [child]
        for index, item in enumerate(items):
            where = f"{path}{name}" + (f"[{index}]" if isinstance(child, list) else "")
            if field.type == descriptor.FieldDescriptor.TYPE_BYTES and isinstance(item, str):
                if not _BASE64.match(item) or len(item.rstrip("=")) % 4 == 1:
                    raise ValueError(
                        f"{where} is not valid base64 (it has characters outside A-Z, a-z, 0-9, "
                        "'+', '/', '-', '_' and '=' padding, or a length base64 cannot have)"
                    )
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                _check_base64(item, field.message_type, f"{where}.")


class RestGateway:
    """Turns an HTTP request into a V2 request message, calls the servicer, answers JSON."""

    def __init__(self, servicer: Any, implemented: set[str]) -> None:
        self.servicer = servicer
        self.routes = _routes(implemented)

    def find(self, verb: str, path: str) -> tuple[Route, dict[str, str]] | None:
        parts = path.strip("/").split("/")
        for route in self.routes.get(verb, []):
            fields = route.match(parts)
            if fields is not None:
                return route, fields
        return None

    async def __call__(self, request: Request) -> JSONResponse:
        found = self.find(request.method, request.url.path)
        if found is None:
            return JSONResponse(
                {
                    "status": {
                        "code": codes.CONN_DOES_NOT_EXIST,
                        "description": "No such API path",
                        "details": f"{request.method} {request.url.path}",
                    }
                },
                status_code=404,
            )
        route, fields = found
        reply = response_class(route.rpc_name)
        try:
            body = await request.body()
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("the JSON body must be an object")
            payload.update(_query_to_dict(request, route.input_descriptor))
            for path, value in fields.items():
                _set_path(payload, path, value)
            _check_base64(payload, route.input_descriptor)
            _apply_default_floats(payload, route.input_descriptor)
            message_class = message_factory.GetMessageClass(route.input_descriptor)
            message = json_format.ParseDict(payload, message_class(), ignore_unknown_fields=True)
        except RecursionError:
            # JSON nested deeper than Python's recursion limit: no Clarifai message is that deep.
            response = reply(
                status=status(
                    codes.CONN_BAD_REQUEST_FORMAT,
                    "The request body is nested too deeply to be a Clarifai request.",
                )
            )
        except (ValueError, TypeError, AttributeError, json_format.ParseError) as error:
            response = reply(
                status=status(
                    codes.CONN_BAD_REQUEST_FORMAT,
                    f"The request body could not be read: {error}",
                    "Send a JSON object whose fields follow the Clarifai API "
                    "(bytes fields such as image.base64 as base64 text).",
                )
            )
        else:
            method: Callable[..., Any] = getattr(self.servicer, route.rpc_name)
            response = await run_in_threadpool(method, message, HeadersContext(request))
        code = response.status.code
        # Clarifai's printer, not MessageToDict: it keeps fields marked cl_show_if_empty, such as
        # a concept's value 0. Left out, the client fills in cl_default_float (1): a negative label
        # would read back as positive.
        return JSONResponse(
            protobuf_to_dict(response, use_integers_for_enums=True),
            status_code=_HTTP_STATUS.get(code, 400),
        )


class HeadersContext:
    """Stands in for a gRPC ServicerContext: header names in any case."""

    def __init__(self, request: Request) -> None:
        self._headers = request.headers

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [(key.lower(), value) for key, value in self._headers.items()]

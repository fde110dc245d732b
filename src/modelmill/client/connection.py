"""A connection to a modelmill (or Clarifai) server through clarifai-grpc: the channel from a
base URL, the key, and calls that raise ApiFailure with the server's words on a bad status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import message_factory

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
ME = "me"  # the key's own user on Clarifai and modelmill
GRPC_SCHEMES = {"grpc": False, "grpcs": True}  # scheme → TLS


class ApiFailure(Exception):
    """A reply whose status is not what the call expects."""

    def __init__(self, method: str, status: Any) -> None:
        self.code = status.code
        self.description = status.description
        self.details = status.details
        name = codes.StatusCode.Name(status.code) if status.code else "no status"
        super().__init__(
            f"{method}: {name}: {status.description}"
            + (f" ({status.details})" if status.details else "")
        )


def make_stub(base_url: str) -> service_pb2_grpc.V2Stub:
    """http(s)://HOST:PORT → REST through clarifai-grpc's JSON channel; grpc(s)://HOST:PORT →
    gRPC. The stub must be built right after its channel: clarifai-grpc picks the response
    decoder from the channel created last."""
    parsed = urlparse(base_url)
    if parsed.scheme in GRPC_SCHEMES:
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 18080
        if GRPC_SCHEMES[parsed.scheme]:
            channel = ClarifaiChannel.get_grpc_channel(base=f"{host}:{port}")
        else:
            channel = ClarifaiChannel.get_insecure_grpc_channel(base=host, port=port)
    elif parsed.scheme in ("http", "https"):
        channel = ClarifaiChannel.get_json_channel(base_url=base_url.rstrip("/"))
    else:
        raise ValueError(
            f"--base-url '{base_url}' must start with http://, https://, grpc:// or grpcs://"
        )
    return service_pb2_grpc.V2Stub(channel)


@dataclass
class Connection:
    """`connection.call("ListInputs", page=1)` fills in the app and the key, and raises
    ApiFailure unless the reply's status is SUCCESS (or one of `ok`)."""

    base_url: str
    key: str
    app_id: str = ""
    user_id: str = ME

    def __post_init__(self) -> None:
        self.stub = make_stub(self.base_url)

    @property
    def user_app_id(self) -> pb.UserAppIDSet:
        return pb.UserAppIDSet(user_id=self.user_id, app_id=self.app_id)

    def for_app(self, app_id: str) -> Connection:
        return Connection(self.base_url, self.key, app_id, self.user_id)

    def request(self, method: str, **fields: Any) -> Any:
        descriptor = service_pb2._V2.methods_by_name[method].input_type
        request = message_factory.GetMessageClass(descriptor)(**fields)
        if "user_app_id" in descriptor.fields_by_name and not request.HasField("user_app_id"):
            request.user_app_id.CopyFrom(self.user_app_id)
        return request

    def call(self, method: str, ok: tuple[int, ...] = (), **fields: Any) -> Any:
        return self.send(method, self.request(method, **fields), ok)

    def send(self, method: str, request: Any, ok: tuple[int, ...] = ()) -> Any:
        reply = getattr(self.stub, method)(
            request, metadata=(("authorization", f"Key {self.key}"),)
        )
        if reply.status.code not in (codes.SUCCESS, *ok):
            raise ApiFailure(method, reply.status)
        return reply

    def ensure_app(self) -> bool:
        """Create the app unless it exists; True when it was created."""
        try:
            self.call("GetApp")
            return False
        except ApiFailure as failure:
            if failure.code != codes.CONN_DOES_NOT_EXIST:
                raise
        self.call(
            "PostApps",
            user_app_id=pb.UserAppIDSet(user_id=self.user_id),
            apps=[pb.App(id=self.app_id)],
        )
        return True

    def ensure_dataset(self, dataset_id: str) -> bool:
        """Create the dataset unless it exists; True when it was created."""
        try:
            self.call("GetDataset", dataset_id=dataset_id)
            return False
        except ApiFailure as failure:
            if failure.code != codes.CONN_DOES_NOT_EXIST:
                raise
        self.call("PostDatasets", datasets=[pb.Dataset(id=dataset_id)])
        return True

    def pages(self, method: str, field: str, per_page: int = 500, **fields: Any) -> Any:
        """Every item of a listing, page after page until an empty one."""
        page = 1
        while True:
            items = getattr(self.call(method, page=page, per_page=per_page, **fields), field)
            if not items:
                return
            yield from items
            page += 1


def pagination(page: int, per_page: int) -> service_pb2.Pagination:
    return service_pb2.Pagination(page=page, per_page=per_page)

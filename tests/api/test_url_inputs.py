"""URL inputs through the API: a URL on the server's own network is refused with a status that
says why; the allow-list setting lets an administrator name such hosts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_status, png
from conftest import Account, Api, Server, create_app

IMAGE = png(16, 12)


class ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def client(server: Server, transport: str) -> Api:
    owner = Account("alice", server.token("alice"))
    return Api(server, transport, owner.key, owner.user_id, create_app(server, owner))


def url_input(input_id: str, url: str) -> pb.Input:
    return pb.Input(id=input_id, data=pb.Data(image=pb.Image(url=url)))


@pytest.fixture(scope="module")
def guarded_server(start_server: Any) -> Server:
    return start_server({"MODELMILL_ALLOW_URL_INPUTS": "true"})  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def allowing_server(start_server: Any) -> Server:
    settings = {"MODELMILL_ALLOW_URL_INPUTS": "true", "MODELMILL_URL_ALLOWED_HOSTS": "127.0.0.1"}
    return start_server(settings)  # type: ignore[no-any-return]


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_url_on_the_servers_network_is_refused_unless_allowed(
    guarded_server: Server, allowing_server: Server, image_port: int, transport: str
) -> None:
    guarded, allowing = client(guarded_server, transport), client(allowing_server, transport)
    url = f"http://127.0.0.1:{image_port}/cat.png"

    refused = guarded.PostInputs(inputs=[url_input("local", url)])
    stored = allowing.PostInputs(inputs=[url_input("local", url)])

    assert_status(refused.inputs[0].status, codes.INPUT_INVALID_URL, "loopback", "private")
    assert not guarded.ListInputs().inputs
    assert stored.status.code == codes.SUCCESS, stored.status
    assert [i.id for i in allowing.ListInputs().inputs] == ["local"]

"""URL inputs are fetched from public addresses only, checked after DNS resolution and on every
redirect; private ones need the allow-list; errors do not echo the server's network details."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError
from modelmill.services.url_fetch import AllowList, fetch, is_public

BODY = b"hello from a local server"
TIMEOUT_S = 5.0
MAX_BYTES = 1000


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.end_headers()
            return
        if self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.100.100.200",  # shared address space (Alibaba's metadata)
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "::ffff:127.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_reached(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_the_allow_list_takes_names_and_networks() -> None:
    allowed = AllowList.parse(" files.internal , 10.0.0.0/8,, ::1")

    assert allowed.allows("FILES.internal.", ipaddress.ip_address("192.168.0.1"))
    assert allowed.allows("other", ipaddress.ip_address("10.9.9.9"))
    assert allowed.allows("other", ipaddress.ip_address("::1"))
    assert not allowed.allows("other", ipaddress.ip_address("192.168.0.1"))


def refused(url: str, allowed: str = "") -> ApiError:
    with pytest.raises(ApiError) as raised:
        fetch(url, allowed, TIMEOUT_S, MAX_BYTES)
    assert raised.value.code == codes.INPUT_INVALID_URL
    return raised.value


def test_a_url_on_loopback_is_refused_after_resolving_its_name(port: int) -> None:
    for url in (f"http://127.0.0.1:{port}/a.png", f"http://localhost:{port}/a.png"):
        error = refused(url)
        assert "loopback, private, link-local or metadata" in error.description
        assert "MODELMILL_URL_ALLOWED_HOSTS" in error.details


def test_an_allowed_host_is_fetched(port: int) -> None:
    assert fetch(f"http://127.0.0.1:{port}/a", "127.0.0.1", TIMEOUT_S, MAX_BYTES) == BODY
    assert fetch(f"http://localhost:{port}/a", "localhost", TIMEOUT_S, MAX_BYTES) == BODY


def test_every_redirect_is_checked(port: int) -> None:
    """localhost is allowed by name, 127.0.0.1 is not: a redirect there is refused."""
    hop = f"http://127.0.0.1:{port}/a"
    error = refused(f"http://localhost:{port}/redirect?to={hop}", "localhost")
    assert "loopback" in error.description
    assert (
        fetch(
            f"http://localhost:{port}/redirect?to={hop}",
            "localhost,127.0.0.1",
            TIMEOUT_S,
            MAX_BYTES,
        )
        == BODY
    )


def test_a_redirect_to_another_scheme_is_refused(port: int) -> None:
    refused(f"http://127.0.0.1:{port}/redirect?to=file:///etc/passwd", "127.0.0.1")


def test_errors_say_what_happened_without_internals(port: int) -> None:
    missing = refused(f"http://127.0.0.1:{port}/missing", "127.0.0.1")
    assert "HTTP 404" in missing.description
    closed = refused("http://127.0.0.1:1/a", "127.0.0.1")
    assert "Errno" not in closed.description and "refused" not in closed.description
    assert "Only http and https" in refused("file:///etc/passwd").description

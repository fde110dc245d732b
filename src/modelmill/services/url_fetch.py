"""Fetching URL inputs without becoming a proxy into the server's network (SSRF): every address a
host resolves to is checked before connecting, on the first request and on every redirect, and
only public addresses are reached unless MODELMILL_URL_ALLOWED_HOSTS names the host or network.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_REDIRECTS = 5


class AddressRefused(OSError):
    """The host resolved to an address this server does not reach for clients."""


@dataclass(frozen=True)
class AllowList:
    """Hosts (by name) and networks that may be fetched although they are not public."""

    names: frozenset[str]
    networks: tuple[IpNetwork, ...]

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """'files.internal, 10.0.0.0/8, 127.0.0.1' → names and networks."""
        names, networks = set(), []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str, address: IpAddress) -> bool:
        return host.lower().rstrip(".") in self.names or any(address in n for n in self.networks)


def is_public(address: IpAddress) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local (cloud
    metadata at 169.254.169.254), shared, reserved or multicast, nor such an IPv4 address
    wrapped in IPv6."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _guarded_connect(allowed: AllowList) -> Callable[..., socket.socket]:
    """A replacement for socket.create_connection that resolves the host itself, refuses any
    non-public address, and connects to the address it checked (no second lookup to rebind)."""

    def connect(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        host, port = address
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in resolved]
        refused = [a for a in addresses if not (is_public(a) or allowed.allows(host, a))]
        if refused or not addresses:
            raise AddressRefused(host)
        family, kind, protocol, _, target = resolved[0]
        sock = socket.socket(family, kind, protocol)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def _opener(allowed: AllowList) -> urllib.request.OpenerDirector:
    """http and https only (no file:, ftp:, data:, no proxies), each connection guarded."""
    connect = _guarded_connect(allowed)

    def guarded(connection_class: type[http.client.HTTPConnection]) -> Callable[..., Any]:
        def make(host: str, **options: Any) -> http.client.HTTPConnection:
            connection = connection_class(host, **options)
            connection._create_connection = connect  # type: ignore[attr-defined]
            return connection

        return make

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(guarded(http.client.HTTPConnection), req)  # type: ignore[arg-type]

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(guarded(http.client.HTTPSConnection), req)  # type: ignore[arg-type]

    class Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = MAX_REDIRECTS

    opener = urllib.request.OpenerDirector()
    for handler in (
        Http(),
        Https(),
        Redirects(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def fetch(url: str, allowed_hosts: str, timeout_s: float, max_bytes: int) -> bytes:
    """The body of `url` (at most `max_bytes` + 1 bytes, so the caller sees it was too big).

    Errors are ApiErrors that name the URL and what to do, never the server's network details.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise ApiError(
            codes.INPUT_INVALID_URL, f"Only http and https URLs are fetched, not {url!r}."
        )
    try:
        with _opener(AllowList.parse(allowed_hosts)).open(url, timeout=timeout_s) as response:
            return bytes(response.read(max_bytes + 1))
    except urllib.error.HTTPError as error:
        answered = f"Could not fetch {url}: the server answered HTTP {error.code}."
        raise ApiError(codes.INPUT_INVALID_URL, answered) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, AddressRefused):  # urllib wraps what connect raises
            raise _refused(url) from None
        raise _unreachable(url, timeout_s) from None
    except AddressRefused:
        raise _refused(url) from None
    except (http.client.HTTPException, OSError, ValueError):
        raise _unreachable(url, timeout_s) from None


def _refused(url: str) -> ApiError:
    return ApiError(
        codes.INPUT_INVALID_URL,
        f"{url} leads to a loopback, private, link-local or metadata address, which this "
        "server does not fetch.",
        "An administrator can allow such hosts with MODELMILL_URL_ALLOWED_HOSTS.",
    )


def _unreachable(url: str, timeout_s: float) -> ApiError:
    # The underlying reason may hold internal host names, addresses or TLS details: not for
    # clients; the server does not log it either, as it is the client's URL.
    return ApiError(
        codes.INPUT_INVALID_URL,
        f"Could not fetch {url}: no answer from its server within {timeout_s:g} s, or the "
        "connection failed.",
    )

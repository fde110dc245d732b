"""gRPC over TLS: a server started with a certificate and key serves clients that trust it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api import service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from conftest import Server


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, made with openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(start_server: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, Path]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    return start_server(None, "--tls-cert", str(cert), "--tls-key", str(key)), cert


def test_grpc_over_tls_serves_a_client_that_trusts_the_certificate(
    tls_server: tuple[Server, Path],
) -> None:
    server, cert = tls_server
    key = server.token("tls-user", "secure-app")
    channel = ClarifaiChannel.get_grpc_channel(
        base=f"localhost:{server.grpc_port}", root_certificates_path=str(cert)
    )
    stub = service_pb2_grpc.V2Stub(channel)

    reply = stub.GetApp(
        service_pb2.GetAppRequest(user_app_id=pb.UserAppIDSet(user_id="me", app_id="secure-app")),
        metadata=(("authorization", f"Key {key}"),),
        timeout=30,
    )

    assert reply.status.code == codes.SUCCESS
    assert reply.app.id == "secure-app"


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: tuple[Server, Path]) -> None:
    server, _ = tls_server
    channel = ClarifaiChannel.get_insecure_grpc_channel(base="127.0.0.1", port=server.grpc_port)
    stub = service_pb2_grpc.V2Stub(channel)

    with pytest.raises(grpc.RpcError) as raised:
        stub.ListApps(service_pb2.ListAppsRequest(), timeout=5)

    assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

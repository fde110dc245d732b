"""The gRPC server: insecure by default, TLS when given a certificate and key."""

from __future__ import annotations

from concurrent import futures

import grpc
from clarifai_grpc.grpc.api import service_pb2_grpc

from modelmill.api.servicer import Servicer
from modelmill.settings import Settings

MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # a batch of 128 large images fits
GRPC_THREADS = 16


def start_grpc_server(servicer: Servicer, settings: Settings) -> tuple[grpc.Server, int]:
    """Start serving; returns the server and the port it bound (useful with port 0)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_THREADS),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # gRPC turns SO_REUSEPORT on by default: a second server on a taken port would start
            # "fine" and silently take half the calls. Fail to bind instead.
            ("grpc.so_reuseport", 0),
        ],
    )
    service_pb2_grpc.add_V2Servicer_to_server(servicer, server)
    address = f"{settings.host}:{settings.grpc_port}"
    if settings.tls_cert and settings.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    server.start()
    return server, port

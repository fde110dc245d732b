"""The request body limit (MODELMILL_MAX_REQUEST_BYTES): REST calls and web uploads beyond it are
refused with 413 and RPC_MAX_MESSAGE_SIZE_EXCEEDED, whether the size is declared or streamed;
nothing of a refused request is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from fastapi.testclient import TestClient

from api.helpers import png
from conftest import Account, Server, create_app
from modelmill.api.http import create_http_app
from modelmill.api.servicer import Servicer
from modelmill.services import Env, apps, auth
from modelmill.settings import Settings

LIMIT = 100_000
CHUNK = 10_000


@pytest.fixture(scope="module")
def limited(start_server: Any) -> Server:
    return start_server({"MODELMILL_MAX_REQUEST_BYTES": str(LIMIT)})  # type: ignore[no-any-return]


def inputs_body(size: int) -> dict[str, Any]:
    text = "x" * size
    return {"inputs": [{"id": "big", "data": {"text": {"raw": text}}}]}


def test_a_declared_body_over_the_limit_is_refused(limited: Server) -> None:
    owner = Account("alice", limited.token("alice"))
    app_id = create_app(limited, owner)
    url = f"{limited.http_url}/v2/users/alice/apps/{app_id}/inputs"
    headers = {"Authorization": f"Key {owner.key}"}

    refused = requests.post(url, json=inputs_body(2 * LIMIT), headers=headers, timeout=30)
    fits = requests.post(url, json=inputs_body(LIMIT // 2), headers=headers, timeout=30)

    assert refused.status_code == 413
    assert refused.json()["status"]["code"] == codes.RPC_MAX_MESSAGE_SIZE_EXCEEDED
    assert str(LIMIT) in refused.json()["status"]["description"]
    assert fits.json()["status"]["code"] == codes.SUCCESS
    listed = requests.get(url, headers=headers, timeout=30).json()["inputs"]
    assert [i["id"] for i in listed] == ["big"]  # the one that fitted


def test_a_streamed_body_is_stopped_once_it_passes_the_limit(limited: Server) -> None:
    owner = Account("alice", limited.token("alice"))
    app_id = create_app(limited, owner)
    url = f"{limited.http_url}/v2/users/alice/apps/{app_id}/inputs"
    headers = {"Authorization": f"Key {owner.key}"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"inputs": [{"id": "big", "data": {"text": {"raw": "'
        for _ in range(3 * LIMIT // CHUNK):
            yield b"x" * CHUNK
        yield b'"}}}]}'

    try:
        refused = requests.post(url, data=chunks(), headers=headers, timeout=30)
    except requests.ConnectionError:  # the server may close while the client still sends
        refused = None
    if refused is not None:
        assert refused.status_code == 413
        assert refused.json()["status"]["code"] == codes.RPC_MAX_MESSAGE_SIZE_EXCEEDED
    assert requests.get(url, headers=headers, timeout=30).json().get("inputs", []) == []


def test_a_web_upload_over_the_limit_is_refused(tmp_path: Path) -> None:
    env = Env.open(Settings(data_dir=tmp_path, embed_on_upload=False, max_request_bytes=LIMIT))
    key = auth.create_token(env, "grace")
    principal = auth.authenticate(env, f"Key {key}")
    apps.create_apps(env, principal, "grace", [("shop", "", "")])
    big = png(8, 8) + b"\0" * (2 * LIMIT)  # well over the limit
    with TestClient(create_http_app(Servicer(env))) as client:
        reply = client.post(
            "/apps/shop/inputs/upload",
            files={"files": ("big.png", big, "image/png")},
            headers={"Accept": "application/json"},
        )
    env.db.dispose()

    assert len(big) > LIMIT
    assert reply.status_code == 413
    assert reply.json()["status"]["code"] == codes.RPC_MAX_MESSAGE_SIZE_EXCEEDED

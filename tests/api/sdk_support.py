"""The `clarifai` SDK pointed at a test server: a fresh app made with User.create_app."""

from __future__ import annotations

import secrets

from clarifai.client.app import App
from clarifai.client.user import User

from conftest import Account, Server


def sdk_base_url(server: Server) -> str:
    """The SDK speaks gRPC only; an http:// base makes it use an insecure channel."""
    return f"http://127.0.0.1:{server.grpc_port}"


def new_sdk_app(server: Server, account: Account, prefix: str = "sdk") -> App:
    user = User(user_id=account.user_id, pat=account.key, base_url=sdk_base_url(server))
    return user.create_app(app_id=f"{prefix}-{secrets.token_hex(4)}", base_workflow="Empty")

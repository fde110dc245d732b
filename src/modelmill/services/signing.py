"""Signed links (train logs, blobs) that clients can fetch without an API key, as Clarifai's
pre-signed URLs: each expires after MODELMILL_LINK_TTL_S and dies with the key whose call made it.
The secret is a setting or a key file kept in the data directory."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError
from modelmill.services import Env
from modelmill.services.auth import key_is_live

SECRET_BYTES = 32


@cache
def _file_secret(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(SECRET_BYTES))
        try:
            os.link(tmp, path)  # atomic create-if-absent: the first process to start wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip().encode()


def secret(env: Env) -> bytes:
    if env.settings.secret_key:
        return env.settings.secret_key.encode()
    return _file_secret(env.settings.data_dir / "secret.key")


def sign(env: Env, value: str) -> str:
    return hmac.new(secret(env), value.encode(), hashlib.sha256).hexdigest()[:32]


def verify(env: Env, value: str, signature: str) -> bool:
    return hmac.compare_digest(sign(env, value), signature)


@dataclass(frozen=True)
class LinkSignature:
    """What a signed link carries besides its path: `?sig=...&exp=...&kid=...`."""

    sig: str
    expires: int  # Unix seconds
    key_pk: int  # the key whose call made the link; 0 for links the web pages make

    def query(self) -> str:
        # sig first: a link cut after it is refused as a whole, not half-read.
        return f"sig={self.sig}&exp={self.expires}&kid={self.key_pk}"


def _link_value(resource: str, expires: int, key_pk: int) -> str:
    return f"{resource}|{expires}|{key_pk}"


def sign_link(env: Env, resource: str, key_pk: int, now: float | None = None) -> LinkSignature:
    """A signature for `resource` (e.g. 'blob:KEY') valid for the link lifetime setting."""
    expires = int((time.time() if now is None else now) + env.settings.link_ttl_s)
    return LinkSignature(sign(env, _link_value(resource, expires, key_pk)), expires, key_pk)


def check_link(env: Env, resource: str, sig: str, expires: str, key_pk: str) -> None:
    """Raise ApiError unless the link's signature is right, it has not expired and the key that
    made it still works. `expires` and `key_pk` are the query's text, checked here."""
    refused = ApiError(codes.CONN_KEY_INVALID, "This link is not valid.")
    if not (sig and expires.isdigit() and key_pk.isdigit()):
        raise refused
    if not verify(env, _link_value(resource, int(expires), int(key_pk)), sig):
        raise refused
    if int(expires) < time.time():
        raise ApiError(
            codes.CONN_KEY_INVALID,
            "This link has expired; ask the API again for a fresh one.",
        )
    if int(key_pk) and not key_is_live(env, int(key_pk)):
        raise ApiError(
            codes.CONN_KEY_INVALID,
            "The API key this link was made with was revoked; links it made no longer work.",
        )

"""Signed links (train logs, blobs) that clients can fetch without an API key, as Clarifai's
pre-signed URLs; the secret is a setting or a key file kept in the data directory."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from functools import cache
from pathlib import Path

from modelmill.services import Env

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

"""The web UI's session: a cookie holding the signed-in user's key and the CSRF token, encrypted
and authenticated with the server secret, so no session table is needed and nobody can read
the key from the cookie or forge one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field

from modelmill.services import Env
from modelmill.services.signing import secret

COOKIE = "modelmill_session"
SIGNED_IN_FOR_S = 12 * 3600
ANONYMOUS_FOR_S = 7 * 24 * 3600  # a visitor's CSRF token, before signing in
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_NONCE_BYTES = 16
_TAG_BYTES = 32
_BLOCK_BYTES = 32  # one HMAC-SHA256 output


def _new_csrf() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class WebSession:
    """Who is signed in (their key and user id), or nobody; and the session's CSRF token."""

    csrf: str = field(default_factory=_new_csrf)
    token: str = ""
    user_id: str = ""
    expires_at: float = field(default_factory=lambda: time.time() + ANONYMOUS_FOR_S)
    flash: str = ""  # a message shown once, on the next page (after a redirect)

    @property
    def signed_in(self) -> bool:
        return bool(self.token)

    @classmethod
    def sign_in(cls, token: str, user_id: str) -> WebSession:
        # A new CSRF token at sign-in, so one planted before it is worthless after.
        return cls(token=token, user_id=user_id, expires_at=time.time() + SIGNED_IN_FOR_S)

    def csrf_matches(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf, sent or "")


# The cookie is encrypt-then-MAC: HMAC-SHA256 in counter mode as the keystream (HMAC is a PRF,
# so this is a standard stream cipher) and an HMAC-SHA256 tag over nonce and ciphertext. It uses
# only the standard library; the keys are derived from the server secret, one per purpose.


def _key(env: Env, purpose: str) -> bytes:
    return hmac.new(
        secret(env), f"modelmill web session {purpose}".encode(), hashlib.sha256
    ).digest()


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (length + _BLOCK_BYTES - 1) // _BLOCK_BYTES
    stream = b"".join(
        hmac.new(key, nonce + counter.to_bytes(8, "big"), hashlib.sha256).digest()
        for counter in range(blocks)
    )
    return stream[:length]


def encode(env: Env, session: WebSession) -> str:
    plain = json.dumps(asdict(session), separators=(",", ":")).encode()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    stream = _keystream(_key(env, "encryption"), nonce, len(plain))
    cipher = bytes(a ^ b for a, b in zip(plain, stream, strict=True))
    tag = hmac.new(_key(env, "authentication"), nonce + cipher, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(nonce + cipher + tag).decode().rstrip("=")


def decode(env: Env, value: str | None) -> WebSession | None:
    """The session in a cookie value, or None when it is missing, forged or expired."""
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return None
    if len(raw) <= _NONCE_BYTES + _TAG_BYTES:
        return None
    nonce, cipher, tag = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:-_TAG_BYTES], raw[-_TAG_BYTES:]
    expected = hmac.new(_key(env, "authentication"), nonce + cipher, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        return None
    stream = _keystream(_key(env, "encryption"), nonce, len(cipher))
    try:
        session = WebSession(
            **json.loads(bytes(a ^ b for a, b in zip(cipher, stream, strict=True)))
        )
    except (ValueError, TypeError):
        return None
    return session if session.expires_at > time.time() else None

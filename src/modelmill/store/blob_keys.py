"""What every blob store agrees on: a blob's key is the SHA-256 of its bytes, and where it lies
under a store's root (`ab/cdef…`); files are hashed and copied in chunks, never read whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

KEY_LENGTH = 64  # hex digits of a SHA-256
HEX_DIGITS = frozenset("0123456789abcdef")
CHUNK_BYTES = 1024 * 1024  # large enough for throughput, small enough to stream a checkpoint


def check_key(key: str) -> str:
    """The key itself when it is a lower-case hex SHA-256; KeyError otherwise (no path tricks)."""
    if len(key) != KEY_LENGTH or not HEX_DIGITS.issuperset(key):
        raise KeyError(f"not a blob key: {key!r}")
    return key


def relative_name(key: str) -> str:
    """Where a blob lies under a store's root: a folder per first byte keeps folders small."""
    check_key(key)
    return f"{key[:2]}/{key[2:]}"


def key_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_of_file(path: Path) -> str:
    """The key of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()

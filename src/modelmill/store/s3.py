"""The S3-compatible blob store (AWS S3, MinIO, Cloudflare R2, ...) for `s3://bucket/prefix` URLs.

Through obstore (Rust's object_store): bench/RESULTS.md has the figures against boto3 that chose
it. Blobs lie at `prefix/ab/cdef…` as in the local store. Files go up as multipart uploads and come
down as streams, so a checkpoint or an export never sits whole in memory; S3 makes a PUT (and
the completion of a multipart upload) visible whole or not at all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from modelmill.store.blob_keys import CHUNK_BYTES, key_of_bytes, key_of_file, relative_name

# Above this a put is a multipart upload of parts this large, sent a few at a time: memory per
# upload is bounded by PART_BYTES * UPLOAD_CONCURRENCY whatever the file's size.
PART_BYTES = 8 * 1024 * 1024
UPLOAD_CONCURRENCY = 4
# obstore raises Python's FileNotFoundError for a missing object (its own NotFoundError is
# declared too; both are caught).
MISSING = (FileNotFoundError, NotFoundError)
ERROR_CHARS = 300  # of the store's own error, quoted in ours


class BlobStoreUnavailable(RuntimeError):
    """The configured store cannot be reached or used."""


@dataclass(frozen=True)
class S3Options:
    """How to reach the S3 endpoint; empty values leave the choice to the AWS defaults (the
    standard AWS_* variables, instance and web-identity credentials)."""

    endpoint_url: str = ""
    region: str = ""
    path_style: bool = False
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""


class S3BlobStore:
    """Blobs as objects `prefix/ab/cdef…` of one bucket."""

    def __init__(self, url: str, options: S3Options) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"not an S3 blob store URL {url!r}: use s3://bucket/prefix")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        config: dict[str, Any] = {"virtual_hosted_style_request": not options.path_style}
        for name, value in (
            ("endpoint", options.endpoint_url),
            ("region", options.region),
            ("access_key_id", options.access_key_id),
            ("secret_access_key", options.secret_access_key),
            ("session_token", options.session_token),
        ):
            if value:
                config[name] = value
        self._store = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=config,  # type: ignore[arg-type]
            # A plain-http endpoint is a choice the operator wrote down (MinIO on a LAN, tests).
            client_options={"allow_http": options.endpoint_url.startswith("http://")},
        )

    def check(self) -> None:
        """List one object: a missing bucket, a wrong endpoint or bad credentials show at start,
        not at the first upload."""
        try:
            next(iter(obstore.list(self._store, chunk_size=1)), None)
        except Exception as error:  # obstore's errors name the request and the S3 error code
            # Its first lines say what failed; a debug dump of the request follows them.
            reason = " ".join(str(error).split("Debug source:")[0].split())[:ERROR_CHARS]
            raise BlobStoreUnavailable(
                f"The blob store s3://{self.bucket}/{self.prefix} cannot be used ({reason}). "
                "Check that the bucket exists and MODELMILL_S3_ENDPOINT_URL, MODELMILL_S3_REGION "
                "and the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) reach it."
            ) from error

    def put(self, data: bytes) -> str:
        key = key_of_bytes(data)
        obstore.put(self._store, relative_name(key), data, use_multipart=False)
        return key

    def put_file(self, path: Path) -> str:
        key = key_of_file(path)
        name = relative_name(key)
        if not self._exists(name):  # same content, same key: skip the upload
            obstore.put(
                self._store,
                name,
                path,
                chunk_size=PART_BYTES,
                max_concurrency=UPLOAD_CONCURRENCY,
            )
        return key

    def get(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self._store, relative_name(key)).bytes())
        except MISSING:
            raise KeyError(key) from None

    def get_file(self, key: str, target: Path) -> None:
        # Unique to this process and thread, as two readers may fetch the same blob to one path.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with tmp.open("wb") as handle:
                for chunk in self.stream(key):
                    handle.write(chunk)
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def stream(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        name = relative_name(key)
        if end is not None and end <= start:
            if not self._exists(name):
                raise KeyError(key)
            return iter(())  # S3 refuses an empty range; there is nothing to send anyway
        byte_range: Any = {"offset": start} if end is None else (start, end)
        try:
            result = obstore.get(self._store, name, options={"range": byte_range})
        except MISSING:
            raise KeyError(key) from None
        except obstore.exceptions.GenericError:
            # A range starting past the end: S3 answers 416. Like a file read there, nothing.
            if start >= self.size(key):
                return iter(())
            raise
        return (bytes(chunk) for chunk in result.stream(min_chunk_size=CHUNK_BYTES))

    def size(self, key: str) -> int:
        try:
            return int(obstore.head(self._store, relative_name(key))["size"])
        except MISSING:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._exists(relative_name(key))

    def _exists(self, name: str) -> bool:
        try:
            obstore.head(self._store, name)
        except MISSING:
            return False
        return True

    def delete(self, key: str) -> None:
        obstore.delete(self._store, relative_name(key))  # S3 deletes of absent objects succeed

    def path(self, key: str) -> Path | None:
        relative_name(key)  # a malformed key is refused here too
        return None

    def presigned_url(self, key: str, expires_s: int) -> str:
        return str(
            obstore.sign(self._store, "GET", relative_name(key), timedelta(seconds=expires_s))
        )

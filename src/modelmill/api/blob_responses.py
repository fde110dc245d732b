"""HTTP answers that carry a blob: a local file as it is, a remote blob (S3) streamed through in
chunks, both honouring a single byte range (the SDK's export download resumes with one)."""

from __future__ import annotations

import re

from fastapi import Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from modelmill.services import BlobStore  # the store type services hand out (Env.blobs)

# Content-addressed blobs never change, so a browser may keep them as long as it likes.
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}
SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
HTTP_PARTIAL = 206
HTTP_NOT_FOUND = 404
HTTP_RANGE_NOT_SATISFIABLE = 416


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single-range header; None to send the whole blob (no header,
    several ranges or a malformed one, which a server may ignore); ValueError if unsatisfiable."""
    match = SINGLE_RANGE.fullmatch((header or "").strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # bytes=-N: the last N bytes
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        raise ValueError(f"bytes {header} of {size}")
    return start, end


def blob_response(
    blobs: BlobStore, key: str, range_header: str | None, media_type: str | None = None
) -> Response:
    try:
        path = blobs.path(key)
        if path is not None:  # Starlette answers ranges itself
            return FileResponse(path, media_type=media_type, headers=IMMUTABLE)
        size = blobs.size(key)
    except KeyError:
        return JSONResponse({"status": {"description": "No such blob"}}, HTTP_NOT_FOUND)
    try:
        wanted = byte_range(range_header, size)
    except ValueError:
        return Response(
            status_code=HTTP_RANGE_NOT_SATISFIABLE, headers={"Content-Range": f"bytes */{size}"}
        )
    headers = {**IMMUTABLE, "Accept-Ranges": "bytes"}
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(blobs.stream(key), headers=headers, media_type=media_type)
    start, end = wanted
    headers["Content-Length"] = str(end - start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(
        blobs.stream(key, start, end), HTTP_PARTIAL, headers=headers, media_type=media_type
    )

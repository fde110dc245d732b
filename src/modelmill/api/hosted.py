"""Signed blob routes in the shapes Clarifai clients expect: hosted content at
`/hosted/orig/KEY` (a HostedURL's prefix/size/suffix) and export archives at `/archives/KEY.zip`
served as application/zip. The signature is the one blob links carry."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response

from modelmill.services import Env
from modelmill.services.signing import verify

ORIGINAL_SIZE = "orig"  # the only size modelmill keeps
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}


def _signed_blob(env: Env, key: str, sig: str, media_type: str) -> Response:
    if not verify(env, "blob:" + key, sig):
        return JSONResponse({"status": {"description": "This link is not valid."}}, 403)
    try:
        path = env.blobs.path(key)
    except KeyError:
        path = None
    if path is None:
        return JSONResponse({"status": {"description": "No such blob"}}, 404)
    return FileResponse(path, media_type=media_type, headers=IMMUTABLE)


def add_hosted_routes(app: FastAPI, env: Env) -> None:
    @app.get("/hosted/{size}/{key}")
    def hosted(size: str, key: str, sig: str = "") -> Response:
        if size != ORIGINAL_SIZE:
            return JSONResponse(
                {"status": {"description": f"Only size '{ORIGINAL_SIZE}' is kept."}}, 404
            )
        return _signed_blob(env, key, sig, "application/octet-stream")

    @app.get("/archives/{key}.zip")
    def archive(key: str, sig: str = "") -> Response:
        return _signed_blob(env, key, sig, "application/zip")

"""Signed blob routes in the shapes Clarifai clients expect: hosted content at
`/hosted/orig/KEY` (a HostedURL's prefix/size/suffix) and export archives at `/archives/KEY.zip`
served as application/zip. The signature is the one blob links carry (it expires and dies with
the key that made it); local and S3 blobs alike, ranges honoured."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from modelmill.api.blob_responses import blob_response
from modelmill.domain.errors import ApiError
from modelmill.services import Env
from modelmill.services.signing import check_link

ORIGINAL_SIZE = "orig"  # the only size modelmill keeps
HTTP_FORBIDDEN = 403


def _signed_blob(
    env: Env, key: str, request: Request, media_type: str, sig: str, exp: str, kid: str
) -> Response:
    try:
        check_link(env, "blob:" + key, sig, exp, kid)
    except ApiError as error:
        return JSONResponse({"status": {"description": error.description}}, HTTP_FORBIDDEN)
    return blob_response(env.blobs, key, request.headers.get("range"), media_type)


def add_hosted_routes(app: FastAPI, env: Env) -> None:
    @app.get("/hosted/{size}/{key}")
    def hosted(
        size: str, key: str, request: Request, sig: str = "", exp: str = "", kid: str = ""
    ) -> Response:
        if size != ORIGINAL_SIZE:
            return JSONResponse(
                {"status": {"description": f"Only size '{ORIGINAL_SIZE}' is kept."}}, 404
            )
        return _signed_blob(env, key, request, "application/octet-stream", sig, exp, kid)

    @app.get("/archives/{key}.zip")
    def archive(
        key: str, request: Request, sig: str = "", exp: str = "", kid: str = ""
    ) -> Response:
        return _signed_blob(env, key, request, "application/zip", sig, exp, kid)

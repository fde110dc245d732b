"""The HTTP application: the REST gateway, blob downloads, health, and (later) the web UI."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from modelmill.api.rest import HeadersContext, RestGateway
from modelmill.api.rpc import authorization
from modelmill.api.servicer import Servicer, implemented_methods
from modelmill.domain.errors import ApiError


def create_http_app(servicer: Servicer) -> FastAPI:
    app = FastAPI(title="modelmill", docs_url=None, redoc_url=None, openapi_url=None)
    gateway = RestGateway(servicer, set(implemented_methods()))
    env = servicer.env

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/blobs/{key}")
    def blob(key: str, request: Request) -> Response:
        try:
            servicer.authenticate(authorization(HeadersContext(request)))
        except ApiError as error:
            return JSONResponse({"status": {"code": error.code, "description": error.description}}, 401)
        try:
            path = env.blobs.path(key)
        except KeyError:
            path = None
        if path is None:
            return JSONResponse({"status": {"description": "No such blob"}}, 404)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=31536000, immutable"})

    app.add_api_route(
        "/v2/{path:path}", gateway, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
    )
    return app


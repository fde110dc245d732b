"""The API's HTTP application: the REST gateway, signed links (blobs, train logs), modelmill's
own routes (cancel a training) and health. The server adds the web UI beside it."""

from __future__ import annotations

from clarifai_grpc.channel.custom_converters.custom_message_to_dict import protobuf_to_dict
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from modelmill.api import convert
from modelmill.api.blob_responses import blob_response
from modelmill.api.body_limit import BodyLimit
from modelmill.api.hosted import add_hosted_routes
from modelmill.api.rest import HeadersContext, RestGateway
from modelmill.api.rpc import authorization
from modelmill.api.servicer import Servicer, implemented_methods
from modelmill.domain.errors import ApiError
from modelmill.services import training
from modelmill.services.blob_reads import check_blob_readable
from modelmill.services.signing import check_link


def _error(error: ApiError, http_status: int = 400) -> JSONResponse:
    return JSONResponse(
        {
            "status": {
                "code": error.code,
                "description": error.description,
                "details": error.details,
            }
        },
        http_status,
    )


def create_http_app(servicer: Servicer) -> FastAPI:
    app = FastAPI(title="modelmill", docs_url=None, redoc_url=None, openapi_url=None)
    gateway = RestGateway(servicer, set(implemented_methods()))
    env = servicer.env

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/blobs/{key}")
    def blob(key: str, request: Request, sig: str = "", exp: str = "", kid: str = "") -> Response:
        """With a signed link, the blob; else only with a key whose apps reference it."""
        try:
            check_link(env, "blob:" + key, sig, exp, kid)
        except ApiError as link_error:
            try:
                principal = servicer.authenticate(authorization(HeadersContext(request)))
            except ApiError as key_error:
                # A link was sent: say what is wrong with it rather than ask for a key.
                return _error(link_error if sig else key_error, 401)
            try:
                check_blob_readable(env, principal, key)
            except ApiError as error:
                return _error(error, 404)
        return blob_response(env.blobs, key, request.headers.get("range"))

    @app.get("/logs/{version_pk}")
    def log(version_pk: int, sig: str = "", exp: str = "", kid: str = "") -> Response:
        try:
            check_link(env, f"log:{version_pk}", sig, exp, kid)
        except ApiError as error:
            return PlainTextResponse(error.description, 403)
        try:
            return PlainTextResponse(training.train_log(env, version_pk))
        except ApiError as error:
            return _error(error, 404)

    @app.post("/v2/users/{user_id}/apps/{app_id}/models/{model_id}/versions/{version_id}/cancel")
    def cancel(
        user_id: str, app_id: str, model_id: str, version_id: str, request: Request
    ) -> Response:
        """modelmill's own call: stop a training (the version ends MODEL_TRAINING_FAILED)."""
        try:
            principal = servicer.authenticate(authorization(HeadersContext(request)))
            scope = servicer.auth_scope(principal, user_id, app_id)
            version = training.cancel_version(env, scope, model_id, version_id)
            _, model_row = training.model_of(env, version)
        except ApiError as error:
            return _error(error)
        message = convert.model_version(version, model_row, scope, servicer.links)
        return JSONResponse(
            {
                "status": {"code": 10000, "description": "Ok"},
                "model_version": protobuf_to_dict(message, use_integers_for_enums=True),
            }
        )

    add_hosted_routes(app, env)
    app.add_api_route("/v2/{path:path}", gateway, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    app.add_middleware(BodyLimit, max_bytes=env.settings.max_request_bytes)
    return app

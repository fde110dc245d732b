"""`modelmill serve`: the gRPC and HTTP servers in one process, plus the training workers."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from modelmill.api.grpc_server import start_grpc_server
from modelmill.api.http import create_http_app
from modelmill.api.servicer import Servicer
from modelmill.jobs.supervisor import Supervisor
from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.web import mount_web

log = logging.getLogger("modelmill")


def create_app(servicer: Servicer) -> FastAPI:
    """The HTTP server's application: the API's routes and the web UI beside them, sharing the
    servicer's Env and predictor cache."""
    app = create_http_app(servicer)
    mount_web(app, servicer.env, servicer.predictors)
    return app


def serve(settings: Settings, announce: Callable[[str], None] = print) -> None:
    """Run until interrupted."""
    env = Env.open(settings)
    servicer = Servicer(env)
    grpc_server, grpc_port = start_grpc_server(servicer, settings)
    scheme = "grpcs" if settings.tls_cert else "grpc"
    announce(f"gRPC  {scheme}://{settings.host}:{grpc_port}")
    announce(f"HTTP  http://{settings.host}:{settings.http_port}  (REST API at /v2)")
    announce(f"data  {settings.data_dir.resolve()}  ({env.db.engine.url.get_backend_name()})")
    supervisor = Supervisor(settings, settings.workers) if settings.workers else None
    announce(f"jobs  {settings.workers} training worker(s)")
    try:
        uvicorn.run(
            create_app(servicer),
            host=settings.host,
            port=settings.http_port,
            log_level="warning",
            access_log=False,
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
        grpc_server.stop(grace=2)
        env.db.dispose()

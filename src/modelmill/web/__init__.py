"""The web UI: server-rendered pages (Jinja2, a little htmx) on the API's HTTP server, calling the
same services. `mount_web(app, env, predictors)` adds the pages and their CSS and JS.

htmx (static/htmx.min.js, 2.0.11, BSD Zero Clause licence) is vendored from the npm registry's
`htmx.org` package, so the UI needs no build step and no internet.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.staticfiles import StaticFiles

from modelmill.services import Env
from modelmill.services.links import Links
from modelmill.services.predictions import PredictorCache
from modelmill.web.core import WebContext, WebRoute
from modelmill.web.pages import apps, auth, datasets, inputs, models, versions, workflows
from modelmill.web.rendering import STATIC_DIR, STATIC_PREFIX, create_templates

# models before versions: /versions/new must match before /versions/{version_id}.
PAGES = [auth, apps, inputs, datasets, models, versions, workflows]

__all__ = ["mount_web"]


def mount_web(app: FastAPI, env: Env, predictors: PredictorCache) -> None:
    """Every page and its static files, on `app`, sharing the API's predictor cache."""
    app.include_router(create_web_router(env, predictors))
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")


def create_web_router(env: Env, predictors: PredictorCache) -> APIRouter:
    """Every page, with the Env and predictor cache they share with the API."""
    context = WebContext(
        env=env,
        # Relative links (/blobs/KEY?sig=...) so images load on whatever host the page came from.
        links=Links(env, ""),
        predictors=predictors,
        templates=create_templates(),
    )

    def attach_context(request: Request) -> None:
        # The first dependency of every page: the rest read the context from request.state.
        request.state.web = context

    router = APIRouter(route_class=WebRoute, dependencies=[Depends(attach_context)])
    for page in PAGES:
        router.include_router(page.router)
    return router

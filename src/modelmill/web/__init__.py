"""The web UI: server-rendered pages (Jinja2, a little htmx) on the API's HTTP server, calling the
same services. `create_web_router(servicer)` gives the pages; `static_files()` their CSS and JS.

htmx (static/htmx.min.js, 2.0.11, BSD Zero Clause licence) is vendored from the npm registry's
`htmx.org` package, so the UI needs no build step and no internet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.staticfiles import StaticFiles

from modelmill.api.links import Links
from modelmill.web.core import WebContext, WebRoute
from modelmill.web.pages import apps, auth, datasets, inputs, models, versions
from modelmill.web.rendering import STATIC_DIR, STATIC_PREFIX, create_templates

if TYPE_CHECKING:
    from modelmill.api.servicer import Servicer

# models before versions: /versions/new must match before /versions/{version_id}.
PAGES = [auth, apps, inputs, datasets, models, versions]

__all__ = ["STATIC_PREFIX", "create_web_router", "static_files"]


def create_web_router(servicer: Servicer) -> APIRouter:
    """Every page, sharing the servicer's Env and predictor cache."""
    context = WebContext(
        env=servicer.env,
        # Relative links (/blobs/KEY?sig=...) so images load on whatever host the page came from.
        links=Links(servicer.env, ""),
        predictors=servicer.predictors,
        templates=create_templates(),
    )

    def attach_context(request: Request) -> None:
        # The first dependency of every page: the rest read the context from request.state.
        request.state.web = context

    router = APIRouter(route_class=WebRoute, dependencies=[Depends(attach_context)])
    for page in PAGES:
        router.include_router(page.router)
    return router


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)

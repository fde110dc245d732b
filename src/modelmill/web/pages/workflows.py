"""Workflows: the app's workflows, each node with its model, version and the node it reads."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from modelmill.services import workflows
from modelmill.services.paging import MAX_PER_PAGE, Page
from modelmill.web.core import CurrentApp, Web, WebRoute, render

router = APIRouter(route_class=WebRoute)


@router.get("/apps/{app_id}/workflows")
def workflows_page(request: Request, web: Web, app: CurrentApp) -> Response:
    return render(
        request,
        "workflows.html",
        app=app,
        section="workflows",
        workflows=workflows.list_workflows(web.env, app, Page.of(1, MAX_PER_PAGE)),
        default_id=workflows.DEFAULT_WORKFLOW_ID,
    )

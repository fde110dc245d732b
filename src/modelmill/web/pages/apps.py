"""Apps: the list, creating one, an app's overview page and its concepts."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from modelmill.domain.errors import ApiError
from modelmill.services import apps, concepts, datasets, inputs, models
from modelmill.services.paging import MAX_PER_PAGE, Page
from modelmill.web.core import (
    CurrentApp,
    Form,
    SignedIn,
    Web,
    WebRoute,
    redirect,
    render,
    take_flash,
)

router = APIRouter(route_class=WebRoute)


def _apps_page(
    request: Request, web: Web, principal: SignedIn, status: int = 200, **values
) -> Response:  # type: ignore[no-untyped-def]
    rows = apps.list_apps(web.env, principal, principal.user_id, Page.of(1, MAX_PER_PAGE))
    return render(request, "apps.html", status, apps=rows, flash=take_flash(request), **values)


@router.get("/apps")
def apps_page(request: Request, web: Web, principal: SignedIn) -> Response:
    return _apps_page(request, web, principal, form={})


@router.post("/apps")
def create_app(request: Request, web: Web, principal: SignedIn, form: Form) -> Response:
    values = {k: str(form.get(k) or "").strip() for k in ("id", "name", "description")}
    try:
        apps.create_apps(
            web.env,
            principal,
            principal.user_id,
            [(values["id"], values["name"], values["description"])],
        )
    except ApiError as error:
        return _apps_page(request, web, principal, 400, form=values, error=error.description)
    return redirect(request, f"/apps/{values['id']}", flash=f"Created app '{values['id']}'.")


def _count(rows: list) -> str:  # type: ignore[type-arg]
    return f"{len(rows)}+" if len(rows) >= MAX_PER_PAGE else str(len(rows))


@router.get("/apps/{app_id}")
def app_page(request: Request, web: Web, app: CurrentApp) -> Response:
    everything = Page.of(1, MAX_PER_PAGE)
    counts = {
        "Inputs": str(sum(inputs.count_inputs(web.env, app).values())),
        "Concepts": _count(concepts.list_concepts(web.env, app, everything)),
        "Datasets": _count(datasets.list_datasets(web.env, app, everything)),
        "Models": _count(models.list_models(web.env, app, everything)),
    }
    row = apps.get_app(web.env, app.app_pk)
    return render(
        request,
        "app.html",
        app=app,
        app_row=row,
        counts=counts,
        section="",
        flash=take_flash(request),
    )


def _concepts_page(
    request: Request, web: Web, app: CurrentApp, status: int = 200, **values
) -> Response:  # type: ignore[no-untyped-def]
    rows = concepts.list_concepts(web.env, app, Page.of(1, MAX_PER_PAGE))
    return render(
        request,
        "concepts.html",
        status,
        app=app,
        concepts=rows,
        section="concepts",
        flash=take_flash(request),
        **values,
    )


@router.get("/apps/{app_id}/concepts")
def concepts_page(request: Request, web: Web, app: CurrentApp) -> Response:
    return _concepts_page(request, web, app, form={})


@router.post("/apps/{app_id}/concepts")
def create_concept(request: Request, web: Web, app: CurrentApp, form: Form) -> Response:
    values = {k: str(form.get(k) or "").strip() for k in ("id", "name")}
    try:
        concepts.create_concepts(web.env, app, [(values["id"], values["name"])])
    except ApiError as error:
        return _concepts_page(request, web, app, 400, form=values, error=error.description)
    return redirect(
        request, f"/apps/{app.app_id}/concepts", flash=f"Created concept '{values['id']}'."
    )

"""Datasets: create one, add inputs (all, or all with a concept), freeze versions, see metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from modelmill.domain.errors import ApiError
from modelmill.services import concepts, datasets
from modelmill.services.paging import MAX_PER_PAGE, Page
from modelmill.web import queries
from modelmill.web.core import (
    CurrentApp,
    Form,
    Web,
    WebRoute,
    form_error,
    redirect,
    render,
    take_flash,
)
from modelmill.web.views import input_card

router = APIRouter(route_class=WebRoute)

PREVIEW_INPUTS = 24


def _datasets_page(
    request: Request, web: Web, app: CurrentApp, status: int = 200, **values: Any
) -> Response:
    rows = datasets.list_datasets(web.env, app, Page.of(1, MAX_PER_PAGE))
    return render(
        request,
        "datasets.html",
        status,
        app=app,
        section="datasets",
        datasets=rows,
        flash=take_flash(request),
        **values,
    )


@router.get("/apps/{app_id}/datasets")
def datasets_page(request: Request, web: Web, app: CurrentApp) -> Response:
    return _datasets_page(request, web, app, form={})


@router.post("/apps/{app_id}/datasets")
def create_dataset(request: Request, web: Web, app: CurrentApp, form: Form) -> Response:
    values = {k: str(form.get(k) or "").strip() for k in ("id", "description")}
    try:
        if not values["id"]:
            raise form_error("Give the dataset an id (letters, digits, '_', '-' and '.').")
        datasets.create_datasets(web.env, app, [(values["id"], values["description"], {})])
    except ApiError as error:
        return _datasets_page(request, web, app, 400, form=values, error=error.description)
    return redirect(
        request,
        f"/apps/{app.app_id}/datasets/{values['id']}",
        flash=f"Created dataset '{values['id']}'.",
    )


def _version_view(version: Any) -> dict[str, Any]:
    metrics = version.metrics or {}
    concept_rows = [g for g in metrics.get("groups", []) if g.get("type") == "CONCEPT_ID"]
    # Inputs by kind; the "total" group repeats the summary's count.
    kinds = {
        g["value"]: g["metrics"].get("inputs_count", 0)
        for g in metrics.get("groups", [])
        if g.get("type") == "INPUT_TYPE" and g["value"] != "total"
    }
    return {
        "row": version,
        "summary": metrics.get("summary", {}),
        "concepts": concept_rows,
        "kinds": kinds,
    }


def _dataset_page(
    request: Request, web: Web, app: CurrentApp, dataset_id: str, status: int = 200, **values: Any
) -> Response:
    dataset = datasets.get_dataset(web.env, app, dataset_id)
    preview = datasets.list_dataset_inputs_with_labels(
        web.env, app, dataset_id, Page.of(1, PREVIEW_INPUTS)
    )
    versions = datasets.list_versions(web.env, app, dataset_id, Page.of(1, MAX_PER_PAGE))
    return render(
        request,
        "dataset.html",
        status,
        app=app,
        section="datasets",
        dataset=dataset,
        flash=take_flash(request),
        input_count=queries.count_dataset_inputs(web.env, app, dataset_id),
        cards=[input_card(row, labels, web.links) for row, labels in preview],
        concepts=concepts.list_concepts(web.env, app, Page.of(1, MAX_PER_PAGE)),
        versions=[_version_view(v) for v in versions],
        **values,
    )


@router.get("/apps/{app_id}/datasets/{dataset_id}")
def dataset_page(request: Request, web: Web, app: CurrentApp, dataset_id: str) -> Response:
    return _dataset_page(request, web, app, dataset_id)


@router.post("/apps/{app_id}/datasets/{dataset_id}/inputs")
def add_inputs(
    request: Request, web: Web, app: CurrentApp, dataset_id: str, form: Form
) -> Response:
    concept_id = str(form.get("concept_id") or "")
    ids = queries.ids_labelled(web.env, app, concept_id)
    if not ids:
        what = f"labelled '{concept_id}'" if concept_id else "in this app"
        return _dataset_page(
            request,
            web,
            app,
            dataset_id,
            400,
            add={"concept_id": concept_id},
            error=f"There are no inputs {what} to add.",
        )
    added = datasets.add_dataset_inputs(web.env, app, dataset_id, ids)
    return redirect(
        request,
        f"/apps/{app.app_id}/datasets/{dataset_id}",
        flash=f"Added {added} inputs ({len(ids) - added} were in the dataset already).",
    )


@router.post("/apps/{app_id}/datasets/{dataset_id}/versions")
def create_version(
    request: Request, web: Web, app: CurrentApp, dataset_id: str, form: Form
) -> Response:
    description = str(form.get("description") or "").strip()
    try:
        (version,) = datasets.create_versions(web.env, app, dataset_id, [("", description)])
    except ApiError as error:
        return _dataset_page(
            request,
            web,
            app,
            dataset_id,
            400,
            version_form={"description": description},
            error=error.description,
        )
    return redirect(
        request,
        f"/apps/{app.app_id}/datasets/{dataset_id}",
        flash=f"Created version {version.id[:8]}… of '{dataset_id}'.",
    )

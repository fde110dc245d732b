"""Models: the listing, creating one, a model's page with its versions, and the Create New Model
Version settings page (form from the registry, live estimate, Train Model)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData, QueryParams

from modelmill.domain.errors import ApiError
from modelmill.services import (
    AppScope,
    concepts,
    datasets,
    embedders,
    models,
    queue_ahead,
    training,
)
from modelmill.services.paging import MAX_PER_PAGE, Page
from modelmill.training.registry import model_type_specs
from modelmill.web import training_form
from modelmill.web.core import (
    CurrentApp,
    Form,
    Web,
    WebContext,
    WebRoute,
    redirect,
    render,
    take_flash,
)

router = APIRouter(route_class=WebRoute)

VERSIONS_SHOWN = 50
VERSION_COLUMNS = (
    ("macro_avg_roc_auc", "ROC AUC"),
    ("macro_avg_f1_score", "F1"),
    ("top1_accuracy", "Top-1 accuracy"),
)


def _models_page(
    request: Request, web: Web, app: CurrentApp, status: int = 200, **values: Any
) -> Response:
    rows = models.list_models(web.env, app, Page.of(1, MAX_PER_PAGE))
    return render(
        request,
        "models.html",
        status,
        app=app,
        section="models",
        models=rows,
        model_types=[spec.info for spec in model_type_specs()],
        flash=take_flash(request),
        **values,
    )


@router.get("/apps/{app_id}/models")
def models_page(request: Request, web: Web, app: CurrentApp) -> Response:
    return _models_page(request, web, app, form={})


@router.post("/apps/{app_id}/models")
def create_model(request: Request, web: Web, app: CurrentApp, form: Form) -> Response:
    values = {k: str(form.get(k) or "").strip() for k in ("id", "model_type_id", "description")}
    try:
        models.create_model(
            web.env, app, values["id"], values["model_type_id"], description=values["description"]
        )
    except ApiError as error:
        return _models_page(request, web, app, 400, form=values, error=error.description)
    return redirect(
        request,
        f"/apps/{app.app_id}/models/{values['id']}",
        flash=f"Created model '{values['id']}'.",
    )


@router.get("/apps/{app_id}/models/{model_id}")
def model_page(request: Request, web: Web, app: CurrentApp, model_id: str) -> Response:
    model, versions = models.list_versions(web.env, app, model_id, Page.of(1, VERSIONS_SHOWN))
    return render(
        request,
        "model.html",
        app=app,
        section="models",
        model=model,
        versions=versions,
        summary_fields=VERSION_COLUMNS,
        flash=take_flash(request),
    )


# ---- Create New Model Version -----------------------------------------------------------------


def _choices(web: WebContext, app: AppScope) -> dict[str, Any]:
    everything = Page.of(1, MAX_PER_PAGE)
    return {
        "datasets": datasets.list_datasets(web.env, app, everything),
        "concepts": concepts.list_concepts(web.env, app, everything),
    }


def _dataset_versions(web: WebContext, app: AppScope, dataset_id: str) -> list[Any]:
    if not dataset_id:
        return []
    return datasets.list_versions(web.env, app, dataset_id, Page.of(1, MAX_PER_PAGE))


def _settings_page(
    request: Request,
    web: WebContext,
    app: AppScope,
    model_id: str,
    values: FormData | None,
    status: int = 200,
    error: str = "",
) -> Response:
    model, _ = models.get_model(web.env, app, model_id)
    form = training_form.build_form(
        model.model_type_id,
        values,
        trained_embedders=embedders.trained_embedder_choices(web.env, app),
    )
    dataset_id = str(values.get(training_form.DATASET) or "") if values else ""
    return render(
        request,
        "version_new.html",
        status,
        app=app,
        section="models",
        model=model,
        form=form,
        error=error,
        dataset_versions=_dataset_versions(web, app, dataset_id),
        **_choices(web, app),
    )


@router.get("/apps/{app_id}/models/{model_id}/versions/new")
def new_version_page(request: Request, web: Web, app: CurrentApp, model_id: str) -> Response:
    return _settings_page(request, web, app, model_id, None)


@router.get("/apps/{app_id}/models/{model_id}/versions/new/template")
def template_settings(request: Request, web: Web, app: CurrentApp, model_id: str) -> Response:
    """The Training and inference settings of the template just chosen (swapped in by htmx)."""
    model, _ = models.get_model(web.env, app, model_id)
    chosen = str(request.query_params.get(training_form.TEMPLATE) or "")
    form = training_form.build_form(model.model_type_id, None, template_name=chosen)
    # Open: whoever switched templates wants to see the new one's settings.
    return render(request, "_template_settings.html", form=form, open_settings=True)


@router.get("/apps/{app_id}/models/{model_id}/versions/new/dataset-versions")
def dataset_version_choices(request: Request, web: Web, app: CurrentApp, model_id: str) -> Response:
    dataset_id = str(request.query_params.get(training_form.DATASET) or "")
    return render(
        request,
        "_dataset_versions.html",
        dataset_versions=_dataset_versions(web, app, dataset_id),
        selected="",
    )


@router.get("/apps/{app_id}/models/{model_id}/versions/new/estimate")
def training_estimate(request: Request, web: Web, app: CurrentApp, model_id: str) -> Response:
    """The estimate for the settings as they are now; the page asks again on every change."""
    model, _ = models.get_model(web.env, app, model_id)
    values: QueryParams = request.query_params
    try:
        form = training_form.build_form(model.model_type_id, values)
        app_concepts = [
            c.id for c in concepts.list_concepts(web.env, app, Page.of(1, MAX_PER_PAGE))
        ]
        estimate = training_form.estimate(web.env, app, model_id, app_concepts, form)
    except ApiError as error:
        return render(request, "_estimate.html", estimate=None, error=error.description)
    return render(request, "_estimate.html", estimate=estimate, error="")


@router.post("/apps/{app_id}/models/{model_id}/versions")
def train(request: Request, web: Web, app: CurrentApp, model_id: str, form: Form) -> Response:
    """Train Model: start the training and go to the new version's page."""
    model, _ = models.get_model(web.env, app, model_id)
    try:
        settings = training_form.build_form(model.model_type_id, form)
        _, version = training.create_version(
            web.env, app, model_id, training_form.train_request(settings)
        )
        queue_ahead.estimate_queued_version(web.env, version)
    except ApiError as error:
        return _settings_page(request, web, app, model_id, form, 400, error=error.description)
    return redirect(
        request,
        f"/apps/{app.app_id}/models/{model_id}/versions/{version.id}",
        flash="Training started.",
    )

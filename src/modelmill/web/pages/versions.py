"""A model version's page: live status, progress, ETA and log tail while it trains; then its
evaluation, the "try it" box and the export."""

from __future__ import annotations

from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from modelmill.domain import model_versions as lifecycle
from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, exports, inputs, models, predictions, training
from modelmill.services.inputs import NewInput
from modelmill.services.paging import Page
from modelmill.training.registry import MODEL_TYPES
from modelmill.web.core import (
    CurrentApp,
    Form,
    Web,
    WebContext,
    WebRoute,
    form_error,
    is_htmx,
    redirect,
    render,
    take_flash,
)
from modelmill.web.views import input_card

router = APIRouter(route_class=WebRoute)

LOG_TAIL_LINES = 30
EXPORT_RUNNING = (codes.MODEL_EXPORT_PENDING, codes.MODEL_EXPORTING)


def _log_tail(web: WebContext, version_pk: int) -> str:
    try:
        text = training.train_log(web.env, version_pk).decode("utf-8", errors="replace")
    except ApiError:
        return ""
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def _export(web: WebContext, app: AppScope, model_id: str, version_id: str) -> Any:
    try:
        return exports.get_export(web.env, app, model_id, version_id)
    except ApiError:
        return None


def _version_values(
    web: WebContext, app: AppScope, model_id: str, version_id: str
) -> dict[str, Any]:
    model, version = models.get_version(web.env, app, model_id, version_id)
    trained = version.status_code == lifecycle.TRAINED
    task = MODEL_TYPES[model.model_type_id].task

    def input_cards(ids: list[str]) -> dict[str, Any]:
        """The cards of these inputs (with their labels), for a partial's sample predictions."""
        if not ids:
            return {}
        rows = inputs.list_inputs_with_labels(web.env, app, Page.of(1, len(ids)), ids=ids)
        return {row.id: input_card(row, labels, web.links) for row, labels in rows}

    concepts = (version.output_info.get("data") or {}).get("concepts", [])
    export = _export(web, app, model_id, version_id) if trained else None
    return {
        "app": app,
        "section": "models",
        "model": model,
        "version": version,
        "progress": version.progress or {},
        "log_tail": _log_tail(web, version.pk),
        "log_url": web.links.train_log(version.pk),
        # The model type's task says which partial shows its metrics and predictions.
        "evaluation_partial": f"partials/{task.web_partial}.html"
        if trained and task is not None and version.metrics
        else "",
        "metrics": version.metrics or {},
        "input_cards": input_cards,
        "concept_ids": [c["id"] for c in concepts],
        "export": export,
        "export_url": web.links.blob(export.blob_key)
        if export is not None and export.blob_key
        else "",
        "export_running": export is not None and export.status_code in EXPORT_RUNNING,
        "input_kinds": MODEL_TYPES[model.model_type_id].input_fields,
        "train_params": (version.train_info.get("params") or {}),
    }


@router.get("/apps/{app_id}/models/{model_id}/versions/{version_id}")
def version_page(
    request: Request, web: Web, app: CurrentApp, model_id: str, version_id: str
) -> Response:
    values = _version_values(web, app, model_id, version_id)
    return render(request, "version.html", flash=take_flash(request), **values)


@router.post("/apps/{app_id}/models/{model_id}/versions/{version_id}/cancel")
def cancel(
    request: Request, web: Web, app: CurrentApp, model_id: str, version_id: str, form: Form
) -> Response:
    training.cancel_version(web.env, app, model_id, version_id)
    return redirect(
        request,
        f"/apps/{app.app_id}/models/{model_id}/versions/{version_id}",
        flash="Cancelling the training…",
    )


@router.post("/apps/{app_id}/models/{model_id}/versions/{version_id}/predict")
def predict(
    request: Request, web: Web, app: CurrentApp, model_id: str, version_id: str, form: Form
) -> Response:
    """Try it: predict on one uploaded image or one typed text."""
    upload = form.get("image")
    text = str(form.get("text") or "")
    result: dict[str, Any] = {"text": text}
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            new = NewInput(id="try-it", image_bytes=upload.file.read())
            result["file"] = upload.filename
        elif text.strip():
            new = NewInput(id="try-it", text=text)
        else:
            raise form_error("Choose an image or type a text to predict on.")
        _, version, (output,) = predictions.predict(
            web.env, web.predictors, app, model_id, version_id, [new], {}, {}
        )
        if isinstance(output, ApiError):
            raise output
        names = {c.id: c.name for c in models.model_concepts(web.env, app, model_id, version.id)}
        result["concepts"] = [(names.get(cid, cid), value) for cid, value in output.concepts]
    except ApiError as error:
        result["error"] = error.description
    if is_htmx(request):
        return render(request, "_prediction.html", prediction=result)
    values = _version_values(web, app, model_id, version_id)
    return render(
        request, "version.html", 400 if "error" in result else 200, prediction=result, **values
    )


@router.post("/apps/{app_id}/models/{model_id}/versions/{version_id}/export")
def export(
    request: Request, web: Web, app: CurrentApp, model_id: str, version_id: str, form: Form
) -> Response:
    exports.request_export(web.env, app, model_id, version_id)
    return redirect(
        request,
        f"/apps/{app.app_id}/models/{model_id}/versions/{version_id}#export",
        flash="Export started; the download link appears when it is ready.",
    )

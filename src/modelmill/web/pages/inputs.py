"""Inputs: the paged grid, uploads (files, a zip of concept folders or of an annotated dataset,
a CSV of texts) and adding chosen inputs to a dataset."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from modelmill.domain.errors import ApiError
from modelmill.services import concepts, datasets, inputs
from modelmill.services.paging import MAX_PER_PAGE, Page
from modelmill.web import uploads
from modelmill.web.core import (
    CurrentApp,
    Form,
    Web,
    WebRoute,
    form_error,
    redirect,
    render,
    take_flash,
    wants_json,
)
from modelmill.web.views import input_card

router = APIRouter(route_class=WebRoute)

INPUTS_PER_PAGE = 48


def _inputs_page(
    request: Request, web: Web, app: CurrentApp, page: int = 1, status: int = 200, **values
) -> Response:  # type: ignore[no-untyped-def]
    total = sum(inputs.count_inputs(web.env, app).values())
    pages = max((total + INPUTS_PER_PAGE - 1) // INPUTS_PER_PAGE, 1)
    page = min(max(page, 1), pages)
    rows = inputs.list_inputs_with_labels(web.env, app, Page.of(page, INPUTS_PER_PAGE))
    values.setdefault("upload", {})
    return render(
        request,
        "inputs.html",
        status,
        app=app,
        section="inputs",
        flash=take_flash(request),
        cards=[input_card(row, labels, web.links) for row, labels in rows],
        total=total,
        page=page,
        pages=pages,
        concepts=concepts.list_concepts(web.env, app, Page.of(1, MAX_PER_PAGE)),
        datasets=datasets.list_datasets(web.env, app, Page.of(1, MAX_PER_PAGE)),
        **values,
    )


@router.get("/apps/{app_id}/inputs")
def inputs_page(request: Request, web: Web, app: CurrentApp, page: int = 1) -> Response:
    return _inputs_page(request, web, app, page)


@router.post("/apps/{app_id}/inputs/upload")
def upload(request: Request, web: Web, app: CurrentApp, form: Form) -> Response:
    """One batch of files. The page's script sends several batches, showing upload progress;
    without the script the whole form arrives here at once."""
    concept = str(form.get("concept") or "").strip()
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    try:
        if not files:
            raise form_error(
                "Choose at least one file to upload: images, .txt files, a .zip of "
                "folders named by concept or of a COCO, YOLO, VOC or mask-PNG dataset, or a "
                ".csv with columns text,concepts.",
            )
        concept = uploads.check_concept(concept)
        # The parser spooled the files to disk; they are read one at a time from there.
        contents = [(f.filename or "upload", f.file) for f in files]
        report = uploads.store(
            web.env, app, uploads.read_files(contents, concept, web.env.settings)
        )
    except ApiError as error:
        if wants_json(request):
            return JSONResponse({"error": error.description}, 400)
        return _inputs_page(
            request, web, app, status=400, upload={"concept": concept}, error=error.description
        )
    if wants_json(request):
        return JSONResponse(report.as_json())
    return _inputs_page(request, web, app, upload={"concept": concept}, report=report)


@router.post("/apps/{app_id}/inputs/add-to-dataset")
def add_to_dataset(request: Request, web: Web, app: CurrentApp, form: Form) -> Response:
    dataset_id = str(form.get("dataset_id") or "")
    ids = [str(v) for v in form.getlist("input_id")]
    try:
        if not ids:
            raise form_error("Tick the inputs to add first.")
        if not dataset_id:
            raise form_error("Choose the dataset to add the inputs to.")
        added = datasets.add_dataset_inputs(web.env, app, dataset_id, ids)
    except ApiError as error:
        return _inputs_page(
            request, web, app, status=400, selected=set(ids), grid_error=error.description
        )
    return redirect(
        request,
        f"/apps/{app.app_id}/datasets/{dataset_id}",
        flash=f"Added {added} of {len(ids)} inputs to '{dataset_id}' (the rest were in it).",
    )

"""Inputs: checking and storing images and texts with their labels, listing and deleting them.

A batch stores exactly its good inputs in one transaction; each bad one gets its own status.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id, new_id
from modelmill.services import AppScope, Env, url_fetch
from modelmill.services.concepts import ensure_concepts
from modelmill.services.images import decode_image
from modelmill.services.labels import check_labels, concept_names
from modelmill.services.paging import Page
from modelmill.settings import Settings
from modelmill.store.tables import Annotation, Dataset, DatasetInput, Input, InputsAddJob, Job

log = logging.getLogger("modelmill.inputs")
MAX_BATCH = 128
# The words Clarifai puts in `details` of a duplicate; the SDK's dataset upload compares them.
DUPLICATE_DETAILS = "Input has a duplicate ID."


@dataclass
class NewInput:
    """One input as a client sent it; `labels` is a Clarifai Data dict (concepts, regions)."""

    id: str = ""
    image_bytes: bytes | None = None
    image_url: str = ""
    text: str | None = None
    text_url: str = ""
    labels: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    dataset_ids: list[str] = field(default_factory=list)
    unsupported: str = ""  # e.g. "video": a kind modelmill does not take


@dataclass
class InputResult:
    """What happened to one input of a batch: its row when stored, else the reason."""

    id: str
    code: int
    description: str = ""
    details: str = ""
    row: Input | None = None
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Checked:
    spec: NewInput
    kind: str
    mime: str = ""
    width: int = 0
    height: int = 0
    image: bytes | None = None
    blob_key: str | None = None
    text: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)


def fetch_url(url: str, settings: Settings) -> bytes:
    """Download a URL input within the size and time limits, from public addresses only."""
    if not settings.allow_url_inputs:
        raise ApiError(
            codes.INPUT_INVALID_URL,
            "This server does not fetch URL inputs; send the content as bytes (base64 in JSON).",
            "Start the server with MODELMILL_ALLOW_URL_INPUTS=true to allow URLs.",
        )
    data = url_fetch.fetch(
        url, settings.url_allowed_hosts, settings.url_timeout_s, settings.max_input_bytes
    )
    if len(data) > settings.max_input_bytes:
        raise ApiError(
            codes.INPUT_OVER_LIMIT,
            f"{url} is larger than the {settings.max_input_bytes}-byte limit for one input.",
        )
    return data


def inspect_image(data: bytes, settings: Settings) -> tuple[str, int, int]:
    """(mime type, width, height) of image bytes that fully decode, else an ApiError."""
    if not data:
        raise ApiError(codes.INPUT_INVALID_ARGUMENT, "The image is empty (0 bytes).")
    if len(data) > settings.max_input_bytes:
        raise ApiError(
            codes.INPUT_OVER_LIMIT,
            f"The image is {len(data)} bytes; the limit is {settings.max_input_bytes}.",
        )
    decoded = decode_image(data, settings.max_image_pixels)
    return decoded.mime, decoded.width, decoded.height


def _check_text(text: str, settings: Settings) -> str:
    if not text.strip():
        raise ApiError(codes.INPUT_INVALID_ARGUMENT, "The text is empty.")
    if len(text) > settings.max_text_chars:
        raise ApiError(
            codes.INPUT_OVER_LIMIT,
            f"The text is {len(text)} characters; the limit is {settings.max_text_chars}.",
        )
    return text


def check_input(spec: NewInput, settings: Settings) -> _Checked:
    if spec.unsupported:
        raise ApiError(
            codes.INPUT_UNSUPPORTED_FORMAT,
            f"{spec.unsupported.capitalize()} inputs are not supported; send images or texts.",
        )
    labels = check_labels(spec.labels, codes.INPUT_INVALID_ARGUMENT, settings.max_image_pixels)
    if spec.image_bytes is not None or spec.image_url:
        data = (
            spec.image_bytes
            if spec.image_bytes is not None
            else fetch_url(spec.image_url, settings)
        )
        mime, width, height = inspect_image(data, settings)
        return _Checked(spec, "image", mime, width, height, image=data, labels=labels)
    if spec.text is not None or spec.text_url:
        if spec.text is not None:
            text = spec.text
        else:
            raw = fetch_url(spec.text_url, settings)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(codes.INPUT_UNSUPPORTED_FORMAT, "The text is not UTF-8.") from None
        if labels.get("regions"):
            raise ApiError(codes.INPUT_INVALID_ARGUMENT, "Regions can only label image inputs.")
        return _Checked(spec, "text", "text/plain", text=_check_text(text, settings), labels=labels)
    raise ApiError(
        codes.INPUT_INVALID_ARGUMENT,
        "The input has no content: set data.image (base64 or url) or data.text (raw or url).",
    )


def decode_base64(value: str) -> bytes:
    """Strict base64, for callers that receive base64 text (the web UI, CSV files)."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(codes.INPUT_INVALID_ARGUMENT, "The image is not valid base64.") from None


def post_inputs(
    env: Env, app: AppScope, specs: list[NewInput], add_job_id: str = ""
) -> tuple[list[InputResult], str]:
    """Check and store a batch; returns one result per input (in order) and the add-job id."""
    if len(specs) > MAX_BATCH:
        raise ApiError(
            codes.INPUT_INVALID_REQUEST,
            f"A request may carry at most {MAX_BATCH} inputs; this one has {len(specs)}.",
        )
    if not specs:
        raise ApiError(codes.INPUT_INVALID_REQUEST, "The request has no inputs.")
    job_id = check_id(add_job_id, "inputs add job") if add_job_id else new_id()
    results: list[InputResult] = []
    checked: list[tuple[InputResult, _Checked]] = []
    seen: set[str] = set()
    for spec in specs:
        result = InputResult(spec.id or new_id(), codes.INPUT_DOWNLOAD_SUCCESS)
        results.append(result)
        try:
            check_id(result.id, "input", codes.INPUT_INVALID_ARGUMENT)
            if result.id in seen:
                raise ApiError(
                    codes.INPUT_DUPLICATE,
                    f"Input id '{result.id}' appears twice in this request.",
                    DUPLICATE_DETAILS,
                )
            seen.add(result.id)
            checked.append((result, check_input(spec, env.settings)))
        except ApiError as error:
            result.code, result.description = error.code, error.description
            result.details = error.details

    # Blobs are written before the transaction, so it holds SQLite's write lock only briefly.
    stored_blobs = []
    for result, item in checked:
        if item.image is None:
            stored_blobs.append((result, item))
            continue
        try:
            item.blob_key = env.blobs.put(item.image)
        except OSError:  # the blob store is full or unreachable: this input is not stored
            log.exception("could not store the image of input %s", result.id)
            result.code = codes.INPUT_STORAGE_HOST_FAILED
            result.description = (
                "The server could not store the image (its storage is full or unavailable); "
                "nothing of this input was kept. Try again later."
            )
            continue
        stored_blobs.append((result, item))
    checked = stored_blobs
    dataset_ids = sorted({d for _, c in checked for d in c.spec.dataset_ids})
    for attempt in range(2):
        try:
            _store(env, app, checked, dataset_ids, job_id, len(specs))
            break
        except IntegrityError:
            # Another request stored one of these ids between our check and insert: check again.
            if attempt:
                raise
    return results, job_id


def _store(
    env: Env,
    app: AppScope,
    checked: list[tuple[InputResult, _Checked]],
    dataset_ids: list[str],
    job_id: str,
    batch_size: int,
) -> None:
    for result, _ in checked:
        # A retry after a lost race starts clean: rows of a rolled-back attempt were never stored.
        result.row, result.labels = None, {}
    with env.db.session() as session:
        datasets = {
            d.id: d.pk
            for d in session.scalars(
                select(Dataset).where(Dataset.app_pk == app.app_pk, Dataset.id.in_(dataset_ids))
            )
        }
        missing = [d for d in dataset_ids if d not in datasets]
        if missing:
            raise ApiError(
                codes.CONN_DOES_NOT_EXIST,
                f"Datasets {', '.join(missing)} do not exist in app '{app.app_id}'; "
                "create them first (PostDatasets).",
            )
        ids = [result.id for result, _ in checked]
        taken = set(
            session.scalars(select(Input.id).where(Input.app_pk == app.app_pk, Input.id.in_(ids)))
        )
        good = []
        for result, item in checked:
            if result.id in taken:
                result.code = codes.INPUT_DUPLICATE
                result.description = f"An input with id '{result.id}' already exists in this app."
                result.details = DUPLICATE_DETAILS
            else:
                good.append((result, item))
        names: dict[str, str] = {}
        for _, item in good:
            names.update(concept_names(item.labels))
        ensure_concepts(session, app.app_pk, names)
        for result, item in good:
            result.row = Input(
                app_pk=app.app_pk,
                id=result.id,
                kind=item.kind,
                blob_key=item.blob_key,
                mime=item.mime,
                width=item.width,
                height=item.height,
                text=item.text,
                url=item.spec.image_url or item.spec.text_url,
                metadata_=item.spec.metadata,
                status_code=codes.INPUT_DOWNLOAD_SUCCESS,
                add_job_id=job_id,
            )
            result.labels = item.labels
        session.add_all(result.row for result, _ in good if result.row is not None)
        session.flush()
        for result, item in good:
            assert result.row is not None
            if item.labels:
                session.add(
                    Annotation(
                        app_pk=app.app_pk,
                        id=new_id(),
                        input_pk=result.row.pk,
                        data=item.labels,
                        status_code=codes.ANNOTATION_SUCCESS,
                    )
                )
            session.add_all(
                DatasetInput(dataset_pk=datasets[d], input_pk=result.row.pk)
                for d in dict.fromkeys(item.spec.dataset_ids)
            )
        job = session.scalar(
            select(InputsAddJob).where(InputsAddJob.app_pk == app.app_pk, InputsAddJob.id == job_id)
        )
        if job is None:
            job = InputsAddJob(app_pk=app.app_pk, id=job_id, processed=0, failed=0)
            session.add(job)
        job.processed += batch_size
        job.failed += batch_size - len(good)
        if good and env.settings.embed_on_upload:
            _queue_embedding(session, app, min(r.row.pk for r, _ in good if r.row) - 1)


def _queue_embedding(session: Session, app: AppScope, after_pk: int) -> None:
    """Embed new inputs in the background; one waiting job per app covers every later upload."""
    from modelmill.store import queue

    waiting = session.scalars(
        select(Job).where(Job.kind == "embed", Job.state == queue.QUEUED)
    ).all()
    if any(job.payload.get("app_pk") == app.app_pk for job in waiting):
        return
    queue.enqueue(session, "embed", {"app_pk": app.app_pk, "after_pk": after_pk}, max_attempts=1)


def get_add_job(env: Env, app: AppScope, job_id: str) -> InputsAddJob:
    with env.db.session() as session:
        job = session.scalar(
            select(InputsAddJob).where(InputsAddJob.app_pk == app.app_pk, InputsAddJob.id == job_id)
        )
    if job is None:
        raise ApiError(
            codes.CONN_DOES_NOT_EXIST, f"Inputs add job '{job_id}' does not exist in this app."
        )
    return job


def merged_labels(session: Session, input_pks: list[int]) -> dict[int, dict[str, Any]]:
    """The labels of each input, concepts and regions merged over all its annotations."""
    merged: dict[int, dict[str, Any]] = {}
    rows = session.execute(
        select(Annotation.input_pk, Annotation.data)
        .where(Annotation.input_pk.in_(input_pks))
        .order_by(Annotation.pk)
    )
    for input_pk, data in rows:
        labels = merged.setdefault(input_pk, {})
        for key in ("concepts", "regions"):
            if data.get(key):
                labels.setdefault(key, []).extend(data[key])
        if data.get("text"):  # a target text: the newest annotation's wins
            labels["text"] = data["text"]
    return merged


def list_inputs_with_labels(
    env: Env, app: AppScope, page: Page, ids: list[str] | None = None, status: int = 0
) -> list[tuple[Input, dict[str, Any]]]:
    """ListInputs: inputs newest first, each with its merged labels."""
    with env.db.session() as session:
        query = select(Input).where(Input.app_pk == app.app_pk)
        if ids:
            query = query.where(Input.id.in_(ids))
        if status:
            query = query.where(Input.status_code == status)
        rows = list(session.scalars(page.apply(query.order_by(Input.pk.desc()))))
        labels = merged_labels(session, [row.pk for row in rows])
    return [(row, labels.get(row.pk, {})) for row in rows]


def get_input_with_labels(env: Env, app: AppScope, input_id: str) -> tuple[Input, dict[str, Any]]:
    with env.db.session() as session:
        row = session.scalar(select(Input).where(Input.app_pk == app.app_pk, Input.id == input_id))
        if row is None:
            raise ApiError(
                codes.INPUT_DOES_NOT_EXIST,
                f"Input '{input_id}' does not exist in app '{app.app_id}'.",
            )
        return row, merged_labels(session, [row.pk]).get(row.pk, {})


def delete_inputs(env: Env, app: AppScope, ids: list[str]) -> None:
    """Delete inputs by id; all must exist, or nothing is deleted. No ids is a no-op (the
    clarifai SDK sends that after every upload batch with no failures)."""
    if not ids:
        return
    with env.db.session() as session:
        found = set(
            session.scalars(select(Input.id).where(Input.app_pk == app.app_pk, Input.id.in_(ids)))
        )
        missing = [i for i in ids if i not in found]
        if missing:
            raise ApiError(
                codes.INPUT_DOES_NOT_EXIST,
                f"Inputs {', '.join(missing[:10])} do not exist in app '{app.app_id}'; "
                "nothing was deleted.",
            )
        session.execute(delete(Input).where(Input.app_pk == app.app_pk, Input.id.in_(ids)))


def count_inputs(env: Env, app: AppScope) -> dict[int, int]:
    """Input counts by status code."""
    with env.db.session() as session:
        rows = session.execute(
            select(Input.status_code, func.count())
            .where(Input.app_pk == app.app_pk)
            .group_by(Input.status_code)
        )
        return {code: count for code, count in rows}

"""Datasets, the inputs in them, and versions: frozen snapshots with the metrics clients read."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from modelmill.domain import model_versions as lifecycle
from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id, new_id
from modelmill.services import AppScope, Env
from modelmill.services.inputs import merged_labels
from modelmill.services.paging import Page
from modelmill.store.tables import (
    Dataset,
    DatasetInput,
    DatasetVersion,
    Input,
    Model,
    ModelVersion,
)


def find_dataset(session: Session, app: AppScope, dataset_id: str) -> Dataset:
    row = session.scalar(
        select(Dataset).where(Dataset.app_pk == app.app_pk, Dataset.id == dataset_id)
    )
    if row is None:
        raise ApiError(
            codes.CONN_DOES_NOT_EXIST,
            f"Dataset '{dataset_id}' does not exist in app '{app.app_id}'.",
        )
    return row


def create_datasets(
    env: Env, app: AppScope, datasets: list[tuple[str, str, dict[str, Any]]]
) -> list[Dataset]:
    """PostDatasets: (id, description, metadata) triples; all or none are created."""
    ids = [check_id(dataset_id or new_id(), "dataset") for dataset_id, _, _ in datasets]
    with env.db.session() as session:
        taken = list(
            session.scalars(
                select(Dataset.id).where(Dataset.app_pk == app.app_pk, Dataset.id.in_(ids))
            )
        )
        if taken or len(set(ids)) != len(ids):
            raise ApiError(
                codes.CONN_INVALID_REQUEST,
                "Dataset ids must be new and distinct; already used: "
                f"{', '.join(taken) or 'repeated'}.",
            )
        rows = [
            Dataset(app_pk=app.app_pk, id=dataset_id, description=description, metadata_=metadata)
            for dataset_id, (_, description, metadata) in zip(ids, datasets, strict=True)
        ]
        session.add_all(rows)
    return rows


def get_dataset(env: Env, app: AppScope, dataset_id: str) -> Dataset:
    with env.db.session() as session:
        return find_dataset(session, app, dataset_id)


def list_datasets(env: Env, app: AppScope, page: Page) -> list[Dataset]:
    with env.db.session() as session:
        query = select(Dataset).where(Dataset.app_pk == app.app_pk).order_by(Dataset.pk)
        return list(session.scalars(page.apply(query)))


def patch_datasets(
    env: Env,
    app: AppScope,
    patches: list[tuple[str, str | None, dict[str, Any] | None]],
    action: str,
) -> list[Dataset]:
    """PatchDatasets: set description and merge (or overwrite) metadata."""
    with env.db.session() as session:
        rows = []
        for dataset_id, description, metadata in patches:
            row = find_dataset(session, app, dataset_id)
            if description is not None:
                row.description = description
            if metadata is not None:
                row.metadata_ = metadata if action == "overwrite" else {**row.metadata_, **metadata}
            rows.append(row)
    return rows


def _refuse_while_training(session: Session, versions: list[DatasetVersion]) -> None:
    """A dataset version a training still waits for or learns from cannot go: the training
    would lose its data half-way (finished trainings keep their own copy of what they used)."""
    busy = session.execute(
        select(Model.id, ModelVersion.id, DatasetVersion.id)
        .join(Model, Model.pk == ModelVersion.model_pk)
        .join(DatasetVersion, DatasetVersion.pk == ModelVersion.dataset_version_pk)
        .where(
            ModelVersion.dataset_version_pk.in_([v.pk for v in versions]),
            ModelVersion.status_code.in_([lifecycle.QUEUED, lifecycle.TRAINING]),
        )
        .limit(1)
    ).first()
    if busy is not None:
        model_id, version_id, dataset_version_id = busy
        raise ApiError(
            codes.CONN_INVALID_REQUEST,
            f"Dataset version '{dataset_version_id}' is the training data of version "
            f"'{version_id}' of model '{model_id}', which is still training; wait for it to "
            "finish or cancel it, then delete.",
        )


def delete_datasets(env: Env, app: AppScope, dataset_ids: list[str]) -> None:
    with env.db.session() as session:
        for dataset_id in dataset_ids:
            dataset = find_dataset(session, app, dataset_id)
            versions = session.scalars(
                select(DatasetVersion).where(DatasetVersion.dataset_pk == dataset.pk)
            )
            _refuse_while_training(session, list(versions))
            session.delete(dataset)


def add_dataset_inputs(env: Env, app: AppScope, dataset_id: str, input_ids: list[str]) -> int:
    """PostDatasetInputs: inputs already in the dataset are left as they are."""
    with env.db.session() as session:
        dataset = find_dataset(session, app, dataset_id)
        query = select(Input.id, Input.pk).where(
            Input.app_pk == app.app_pk, Input.id.in_(input_ids)
        )
        # Not dict(result): a Result has keys() (its column names), so dict() would index it.
        found = {input_id: pk for input_id, pk in session.execute(query)}
        missing = [i for i in input_ids if i not in found]
        if missing:
            raise ApiError(
                codes.INPUT_DOES_NOT_EXIST,
                f"Inputs {', '.join(missing[:10])} do not exist in app '{app.app_id}'.",
            )
        present = set(
            session.scalars(
                select(DatasetInput.input_pk).where(
                    DatasetInput.dataset_pk == dataset.pk,
                    DatasetInput.input_pk.in_(list(found.values())),
                )
            )
        )
        new = [pk for pk in dict.fromkeys(found[i] for i in input_ids) if pk not in present]
        session.add_all(DatasetInput(dataset_pk=dataset.pk, input_pk=pk) for pk in new)
    return len(new)


def list_dataset_inputs(env: Env, app: AppScope, dataset_id: str, page: Page) -> list[Input]:
    with env.db.session() as session:
        dataset = find_dataset(session, app, dataset_id)
        query = (
            select(Input)
            .join(DatasetInput, DatasetInput.input_pk == Input.pk)
            .where(DatasetInput.dataset_pk == dataset.pk)
            .order_by(Input.pk)
        )
        return list(session.scalars(page.apply(query)))


def list_dataset_inputs_with_labels(
    env: Env, app: AppScope, dataset_id: str, page: Page
) -> list[tuple[Input, dict[str, Any]]]:
    """ListDatasetInputs: the inputs with their merged labels, as ListInputs gives them."""
    rows = list_dataset_inputs(env, app, dataset_id, page)
    with env.db.session() as session:
        labels = merged_labels(session, [row.pk for row in rows])
    return [(row, labels.get(row.pk, {})) for row in rows]


def remove_dataset_inputs(env: Env, app: AppScope, dataset_id: str, input_ids: list[str]) -> None:
    with env.db.session() as session:
        dataset = find_dataset(session, app, dataset_id)
        pks = select(Input.pk).where(Input.app_pk == app.app_pk, Input.id.in_(input_ids))
        session.execute(
            delete(DatasetInput).where(
                DatasetInput.dataset_pk == dataset.pk, DatasetInput.input_pk.in_(pks)
            )
        )


def snapshot_rows(
    session: Session,
    input_pks: list[int] | None,
    dataset_pk: int | None = None,
    app_pk: int | None = None,
) -> list[dict[str, Any]]:
    """The frozen form of inputs: content references and merged labels."""
    query = select(Input).order_by(Input.pk)
    if dataset_pk is not None:
        query = query.join(DatasetInput, DatasetInput.input_pk == Input.pk).where(
            DatasetInput.dataset_pk == dataset_pk
        )
    if app_pk is not None:
        query = query.where(Input.app_pk == app_pk)
    if input_pks is not None:
        query = query.where(Input.pk.in_(input_pks))
    inputs = list(session.scalars(query))
    labels = merged_labels(session, [row.pk for row in inputs])
    return [
        {
            "id": row.id,
            "kind": row.kind,
            "blob_key": row.blob_key,
            "text": row.text,
            "width": row.width,
            "height": row.height,
            "metadata": row.metadata_,
            "labels": labels.get(row.pk, {}),
        }
        for row in inputs
    ]


def _count(n: int) -> int:
    # The counts are google.protobuf.UInt64Value wrappers, whose JSON form is the bare number.
    return n


def version_metrics(snapshot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DatasetVersionMetricsGroups: counts per input type and per concept (zeros included)."""
    kinds = Counter(item["kind"] for item in snapshot)
    tags: Counter[str] = Counter()
    boxes: Counter[str] = Counter()
    polygons: Counter[str] = Counter()
    masks: Counter[str] = Counter()
    for item in snapshot:
        tags.update(c["id"] for c in item["labels"].get("concepts", []) if c["value"] > 0)
        for region in item["labels"].get("regions", []):
            info = region["region_info"]
            target = boxes if "bounding_box" in info else polygons if "polygon" in info else masks
            target.update(c["id"] for c in region["data"]["concepts"] if c["value"] > 0)
    # "total" is always there: the SDK's upload status reads it, and it waits (up to 10 minutes)
    # while a version answers no groups at all, as an empty one otherwise would.
    groups: list[dict[str, Any]] = [
        {
            "parent_path": "/",
            "type": "INPUT_TYPE",
            "value": kind,
            "metrics": {"inputs_count": _count(len(snapshot) if kind == "total" else kinds[kind])},
        }
        for kind in ("total", "image", "text")
        if kind == "total" or kinds[kind]
    ]
    for concept_id in sorted(set(tags) | set(boxes) | set(polygons) | set(masks)):
        groups.append(
            {
                "parent_path": "/",
                "type": "CONCEPT_ID",
                "value": concept_id,
                "metrics": {
                    "positive_input_tags_count": _count(tags[concept_id]),
                    "bounding_boxes_count": _count(boxes[concept_id]),
                    "polygons_count": _count(polygons[concept_id]),
                    "masks_count": _count(masks[concept_id]),
                    "regions_count": _count(
                        boxes[concept_id] + polygons[concept_id] + masks[concept_id]
                    ),
                },
            }
        )
    return groups


def summary_metrics(snapshot: list[dict[str, Any]]) -> dict[str, Any]:
    """The version's overall metrics ('/' in DatasetVersion.metrics)."""
    regions = [r for item in snapshot for r in item["labels"].get("regions", [])]
    return {
        "inputs_count": _count(len(snapshot)),
        "unlabeled_inputs_count": _count(sum(1 for item in snapshot if not item["labels"])),
        "inputs_with_metadata_count": _count(sum(1 for item in snapshot if item["metadata"])),
        "regions_count": _count(len(regions)),
        "bounding_boxes_count": _count(sum("bounding_box" in r["region_info"] for r in regions)),
        "polygons_count": _count(sum("polygon" in r["region_info"] for r in regions)),
        "masks_count": _count(sum("mask" in r["region_info"] for r in regions)),
        "positive_input_tags_count": _count(
            sum(
                1 for item in snapshot for c in item["labels"].get("concepts", []) if c["value"] > 0
            )
        ),
    }


def freeze(
    env: Env,
    session: Session,
    dataset: Dataset,
    version_id: str,
    description: str,
    snapshot: list[dict[str, Any]],
) -> DatasetVersion:
    """Store a snapshot as a new READY version of `dataset`."""
    key = env.blobs.put(json.dumps({"inputs": snapshot}, separators=(",", ":")).encode())
    version = DatasetVersion(
        dataset_pk=dataset.pk,
        id=check_id(version_id or new_id(), "dataset version"),
        description=description,
        status_code=codes.DATASET_VERSION_READY,
        snapshot_key=key,
        metrics={"groups": version_metrics(snapshot), "summary": summary_metrics(snapshot)},
    )
    session.add(version)
    session.flush()
    return version


def create_versions(
    env: Env, app: AppScope, dataset_id: str, versions: list[tuple[str, str]]
) -> list[DatasetVersion]:
    """PostDatasetVersions: freeze the dataset's inputs and labels as they are now."""
    with env.db.session() as session:
        dataset = find_dataset(session, app, dataset_id)
        snapshot = snapshot_rows(session, None, dataset_pk=dataset.pk)
        rows = []
        for version_id, description in versions or [("", "")]:
            if version_id and session.scalar(
                select(DatasetVersion.pk).where(
                    DatasetVersion.dataset_pk == dataset.pk, DatasetVersion.id == version_id
                )
            ):
                raise ApiError(
                    codes.DATASET_VERSION_CONFLICT,
                    f"Dataset '{dataset_id}' already has a version '{version_id}'.",
                )
            rows.append(freeze(env, session, dataset, version_id, description, snapshot))
    return rows


def find_version(
    session: Session, app: AppScope, dataset_id: str, version_id: str
) -> DatasetVersion:
    dataset = find_dataset(session, app, dataset_id)
    row = session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.dataset_pk == dataset.pk, DatasetVersion.id == version_id
        )
    )
    if row is None:
        raise ApiError(
            codes.CONN_DOES_NOT_EXIST,
            f"Dataset '{dataset_id}' has no version '{version_id}'.",
        )
    return row


def get_version(env: Env, app: AppScope, dataset_id: str, version_id: str) -> DatasetVersion:
    with env.db.session() as session:
        return find_version(session, app, dataset_id, version_id)


def list_versions(env: Env, app: AppScope, dataset_id: str, page: Page) -> list[DatasetVersion]:
    with env.db.session() as session:
        dataset = find_dataset(session, app, dataset_id)
        query = (
            select(DatasetVersion)
            .where(DatasetVersion.dataset_pk == dataset.pk)
            .order_by(DatasetVersion.pk.desc())
        )
        return list(session.scalars(page.apply(query)))


def delete_versions(env: Env, app: AppScope, dataset_id: str, version_ids: list[str]) -> None:
    with env.db.session() as session:
        versions = [find_version(session, app, dataset_id, v) for v in version_ids]
        _refuse_while_training(session, versions)
        for version in versions:
            session.delete(version)


def load_snapshot(env: Env, version: DatasetVersion) -> list[dict[str, Any]]:
    """The frozen inputs of a version."""
    assert version.snapshot_key is not None
    return json.loads(env.blobs.get(version.snapshot_key))["inputs"]

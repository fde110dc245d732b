"""Models and their versions as records: create, read, rename, delete.

Training is in training.py.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelmill.domain import model_versions as lifecycle
from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id, new_id
from modelmill.services import AppScope, Env
from modelmill.services.paging import Page
from modelmill.store.blobs import get_tree
from modelmill.store.tables import Concept, Model, ModelVersion
from modelmill.training.registry import MODEL_TYPES, templates_of


def find_model(session: Session, app: AppScope, model_id: str) -> Model:
    row = session.scalar(select(Model).where(Model.app_pk == app.app_pk, Model.id == model_id))
    if row is None:
        raise ApiError(
            codes.MODEL_DOES_NOT_EXIST, f"Model '{model_id}' does not exist in app '{app.app_id}'."
        )
    return row


def find_version(session: Session, model: Model, version_id: str) -> ModelVersion:
    row = session.scalar(
        select(ModelVersion).where(ModelVersion.model_pk == model.pk, ModelVersion.id == version_id)
    )
    if row is None:
        raise ApiError(
            codes.MODEL_DOES_NOT_EXIST, f"Model '{model.id}' has no version '{version_id}'."
        )
    return row


def newest_version(
    session: Session, model: Model, trained_only: bool = False
) -> ModelVersion | None:
    query = select(ModelVersion).where(ModelVersion.model_pk == model.pk)
    if trained_only:
        query = query.where(ModelVersion.status_code == codes.MODEL_TRAINED)
    return session.scalar(query.order_by(ModelVersion.pk.desc()).limit(1))


def trained_version(
    env: Env, app: AppScope, model_id: str, version_id: str
) -> tuple[Model, ModelVersion]:
    """The named version, or the newest trained one; a clear error when there is none."""
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        version = (
            find_version(session, model, version_id)
            if version_id
            else newest_version(session, model, trained_only=True)
        )
        if version is None:
            raise ApiError(
                codes.MODEL_UNTRAINED,
                f"Model '{model_id}' has no trained version yet; train one (PostModelVersions) and "
                "wait until its status is MODEL_TRAINED.",
            )
        if version.status_code != lifecycle.TRAINED:
            raise ApiError(
                codes.MODEL_UNTRAINED,
                f"Version '{version.id}' of model '{model_id}' is not trained "
                f"({codes.StatusCode.Name(version.status_code)}: {version.status_description}).",
            )
        return model, version


def local_artifacts(env: Env, artifacts_key: str) -> Path:
    """A trained version's artifacts as a local folder, fetched from the blob store once per
    machine (the key names fixed content)."""
    folder = env.settings.data_dir / "cache" / "artifacts" / artifacts_key
    if not folder.exists():
        # Several processes (the server, jobs) may fetch the same key at once: each into its
        # own folder, and the first to finish wins.
        folder.parent.mkdir(parents=True, exist_ok=True)
        fetched = Path(tempfile.mkdtemp(prefix=f"{artifacts_key}.", dir=folder.parent))
        get_tree(env.blobs, artifacts_key, fetched)
        try:
            fetched.rename(folder)
        except OSError:
            if not folder.exists():
                raise
            shutil.rmtree(fetched, ignore_errors=True)
    return folder


def create_model(
    env: Env,
    app: AppScope,
    model_id: str,
    model_type_id: str,
    name: str = "",
    description: str = "",
    output_info: dict[str, Any] | None = None,
) -> Model:
    """PostModels: a model of a type modelmill trains, with its default concepts and settings."""
    check_id(model_id, "model", codes.MODEL_INVALID_ARGUMENT)
    trainable = [t for t in MODEL_TYPES if templates_of(t)]
    if model_type_id not in trainable:
        raise ApiError(
            codes.MODEL_INVALID_ARGUMENT,
            f"Model type '{model_type_id}' is not one modelmill trains; choose one of "
            f"{', '.join(trainable)} (ListModelTypes lists them).",
        )
    with env.db.session() as session:
        if session.scalar(select(Model.pk).where(Model.app_pk == app.app_pk, Model.id == model_id)):
            raise ApiError(
                codes.MODEL_INVALID_ARGUMENT,
                f"Model '{model_id}' already exists in app '{app.app_id}'.",
            )
        row = Model(
            app_pk=app.app_pk,
            id=model_id,
            name=name or model_id,
            model_type_id=model_type_id,
            description=description,
            output_info=output_info or {},
        )
        session.add(row)
    return row


def get_model(
    env: Env, app: AppScope, model_id: str, version_id: str = ""
) -> tuple[Model, ModelVersion | None]:
    """A model with the named version, or its newest version (also while it trains)."""
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        version = (
            find_version(session, model, version_id)
            if version_id
            else newest_version(session, model)
        )
    return model, version


def list_models(
    env: Env, app: AppScope, page: Page, model_type_id: str = "", name: str = ""
) -> list[tuple[Model, ModelVersion | None]]:
    """ListModels and PostModelsSearches: `name` matches part of a model's id or name, in any
    case."""
    with env.db.session() as session:
        query = select(Model).where(Model.app_pk == app.app_pk)
        if model_type_id:
            query = query.where(Model.model_type_id == model_type_id)
        if name:
            wanted = name.lower()
            query = query.where(
                func.lower(Model.id).contains(wanted, autoescape=True)
                | func.lower(Model.name).contains(wanted, autoescape=True)
            )
        models = list(session.scalars(page.apply(query.order_by(Model.pk))))
        return [(m, newest_version(session, m)) for m in models]


def patch_models(
    env: Env, app: AppScope, patches: list[dict[str, Any]], action: str
) -> list[Model]:
    """PatchModels: each patch has `id` and any of name, description, output_info."""
    with env.db.session() as session:
        rows = []
        for patch in patches:
            row = find_model(session, app, patch["id"])
            for key in ("name", "description"):
                if patch.get(key):
                    setattr(row, key, patch[key])
            if patch.get("output_info"):
                new = patch["output_info"]
                row.output_info = new if action == "overwrite" else _merge(row.output_info, new)
            rows.append(row)
    return rows


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        merged[key] = (
            _merge(old[key], value)
            if isinstance(value, dict) and isinstance(old.get(key), dict)
            else value
        )
    return merged


def delete_models(env: Env, app: AppScope, model_ids: list[str]) -> None:
    with env.db.session() as session:
        for model_id in model_ids:
            session.delete(find_model(session, app, model_id))


def list_versions(
    env: Env, app: AppScope, model_id: str, page: Page
) -> tuple[Model, list[ModelVersion]]:
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        query = select(ModelVersion).where(ModelVersion.model_pk == model.pk)
        return model, list(session.scalars(page.apply(query.order_by(ModelVersion.pk.desc()))))


def get_version(
    env: Env, app: AppScope, model_id: str, version_id: str
) -> tuple[Model, ModelVersion]:
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        return model, find_version(session, model, version_id)


def patch_versions(
    env: Env, app: AppScope, model_id: str, patches: list[tuple[str, str]]
) -> tuple[Model, list[ModelVersion]]:
    """PatchModelVersions: (version id, description) pairs."""
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        rows = []
        for version_id, description in patches:
            row = find_version(session, model, version_id)
            row.description = description
            rows.append(row)
        return model, rows


def delete_version(env: Env, app: AppScope, model_id: str, version_id: str) -> None:
    with env.db.session() as session:
        model = find_model(session, app, model_id)
        session.delete(find_version(session, model, version_id))


def model_concepts(env: Env, app: AppScope, model_id: str, version_id: str = "") -> list[Concept]:
    """ListModelConcepts: the concepts of a version (or the model's defaults), with names."""
    model, version = get_model(env, app, model_id, version_id)
    info = version.output_info if version is not None and version.output_info else model.output_info
    ids = [c["id"] for c in (info.get("data") or {}).get("concepts", [])]
    with env.db.session() as session:
        found = {
            c.id: c
            for c in session.scalars(
                select(Concept).where(Concept.app_pk == app.app_pk, Concept.id.in_(ids))
            )
        }
    return [found.get(cid) or Concept(app_pk=app.app_pk, id=cid, name=cid) for cid in ids]


def new_version_id() -> str:
    return new_id()

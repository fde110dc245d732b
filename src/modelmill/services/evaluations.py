"""Evaluations: the metrics stored when a version finishes training, and new evaluations of a
trained version against a ground-truth dataset version (run as background jobs)."""

from __future__ import annotations

from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id, new_id
from modelmill.services import AppScope, Env
from modelmill.services.datasets import find_version as find_dataset_version
from modelmill.services.models import find_model, find_version
from modelmill.services.paging import Page
from modelmill.services.predictions import trained_version
from modelmill.store import queue
from modelmill.store.tables import Evaluation, Model, ModelVersion

# EvalMetrics parts that GetEvaluation returns only when `fields` asks for them.
HEAVY_FIELDS = (
    "confusion_matrix",
    "cooccurrence_matrix",
    "label_counts",
    "binary_metrics",
    "test_set",
    "metrics_by_area",
    "metrics_by_class",
)


def light(metrics: dict[str, Any], fields: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """The metrics without the heavy parts not named in `fields`."""
    return {k: v for k, v in metrics.items() if k not in HEAVY_FIELDS or k in fields}


def record_training_evaluation(session: Session, app_pk: int, version: ModelVersion) -> None:
    """Keep the post-training evaluation as an Evaluation too, so the evaluation calls list it."""
    session.add(
        Evaluation(
            app_pk=app_pk,
            id=version.id,
            model_version_pk=version.pk,
            status_code=codes.MODEL_EVALUATED,
            status_description="Evaluated on held-out data when training finished",
            metrics=version.metrics,
        )
    )


def create_evaluation(
    env: Env,
    app: AppScope,
    model_id: str,
    version_id: str,
    dataset_id: str,
    dataset_version_id: str,
    evaluation_id: str = "",
) -> tuple[Evaluation, Model, ModelVersion]:
    """Queue an evaluation of a trained version on a ground-truth dataset version."""
    model, version = trained_version(env, app, model_id, version_id)
    if not dataset_id or not dataset_version_id:
        raise ApiError(
            codes.EVALUATION_INVALID_ARGUMENT,
            "Name the ground truth: ground_truth_dataset.id and ground_truth_dataset.version.id.",
        )
    with env.db.session() as session:
        dataset_version = find_dataset_version(session, app, dataset_id, dataset_version_id)
        row = Evaluation(
            app_pk=app.app_pk,
            id=check_id(evaluation_id or new_id(), "evaluation", codes.EVALUATION_INVALID_ARGUMENT),
            model_version_pk=version.pk,
            dataset_version_pk=dataset_version.pk,
            status_code=codes.MODEL_QUEUED_FOR_EVALUATION,
            status_description="Queued for evaluation",
        )
        if session.scalar(
            select(Evaluation.pk).where(Evaluation.app_pk == app.app_pk, Evaluation.id == row.id)
        ):
            raise ApiError(
                codes.EVALUATION_INVALID_ARGUMENT, f"Evaluation id '{row.id}' is already used."
            )
        session.add(row)
        session.flush()
        queue.enqueue(
            session,
            "evaluate",
            {"evaluation_pk": row.pk},
            model_version_pk=version.pk,
            max_attempts=env.settings.job_max_attempts,
        )
    return row, model, version


def get_evaluation(
    env: Env, app: AppScope, evaluation_id: str, model_id: str = "", version_id: str = ""
) -> tuple[Evaluation, Model, ModelVersion]:
    """One evaluation; when `model_id` (and `version_id`) are given, only one of that model
    (version): GetModelVersionEvaluation names them and must not answer another version's."""
    with env.db.session() as session:
        query = select(Evaluation).where(
            Evaluation.app_pk == app.app_pk, Evaluation.id == evaluation_id
        )
        where = f"app '{app.app_id}'"
        if model_id:
            model = find_model(session, app, model_id)
            versions = select(ModelVersion.pk).where(ModelVersion.model_pk == model.pk)
            where = f"model '{model_id}'"
            if version_id:
                versions = versions.where(
                    ModelVersion.pk == find_version(session, model, version_id).pk
                )
                where = f"version '{version_id}' of model '{model_id}'"
            query = query.where(Evaluation.model_version_pk.in_(versions))
        row = session.scalar(query)
        if row is None:
            raise ApiError(
                codes.EVALUATION_INVALID_ARGUMENT,
                f"Evaluation '{evaluation_id}' does not exist in {where}.",
            )
        version = session.get(ModelVersion, row.model_version_pk)
        assert version is not None
        model = session.get(Model, version.model_pk)
        assert model is not None
        return row, model, version


def list_evaluations(
    env: Env, app: AppScope, page: Page, model_id: str = "", version_id: str = ""
) -> list[tuple[Evaluation, Model, ModelVersion]]:
    with env.db.session() as session:
        query = (
            select(Evaluation, Model, ModelVersion)
            .join(ModelVersion, ModelVersion.pk == Evaluation.model_version_pk)
            .join(Model, Model.pk == ModelVersion.model_pk)
            .where(Evaluation.app_pk == app.app_pk)
        )
        if model_id:
            model = find_model(session, app, model_id)
            query = query.where(Model.pk == model.pk)
            if version_id:
                query = query.where(ModelVersion.pk == find_version(session, model, version_id).pk)
        rows = session.execute(page.apply(query.order_by(Evaluation.pk.desc())))
        return [(e, m, v) for e, m, v in rows]

"""The SQL tables. Rich Clarifai structures (output_info, train params, regions) are JSON columns.

Every resource has a surrogate integer `pk` and the user-facing `id`, unique within its parent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(255)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A datetime column's value as an aware UTC datetime (SQLite hands back naive ones)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"
    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(ID, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A personal access token; only its SHA-256 is stored."""

    __tablename__ = "api_keys"
    pk: Mapped[int] = mapped_column(primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # App ids this key may use; empty means every app of its user.
    app_ids: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (UniqueConstraint("user_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    name: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Input(Base):
    __tablename__ = "inputs"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(16))  # "image" or "text"
    blob_key: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    mime: Mapped[str] = mapped_column(String(64), default="")
    width: Mapped[int] = mapped_column(default=0)
    height: Mapped[int] = mapped_column(default=0)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    url: Mapped[str] = mapped_column(Text, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    status_code: Mapped[int] = mapped_column(Integer)
    add_job_id: Mapped[str | None] = mapped_column(ID, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InputsAddJob(Base):
    """One PostInputs batch, so clients can poll GetInputsAddJob for its progress."""

    __tablename__ = "inputs_add_jobs"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    processed: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Concept(Base):
    __tablename__ = "concepts"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    name: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Annotation(Base):
    """Labels on one input: `data` holds `concepts` [{id, value}] and `regions` (boxes, polygons,
    masks), in the Clarifai Data shape."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    input_pk: Mapped[int] = mapped_column(ForeignKey("inputs.pk", ondelete="CASCADE"), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status_code: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    description: Mapped[str] = mapped_column(Text, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DatasetInput(Base):
    __tablename__ = "dataset_inputs"
    dataset_pk: Mapped[int] = mapped_column(
        ForeignKey("datasets.pk", ondelete="CASCADE"), primary_key=True
    )
    input_pk: Mapped[int] = mapped_column(
        ForeignKey("inputs.pk", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    """A frozen snapshot: the blob `snapshot_key` holds every input id with its annotations."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    dataset_pk: Mapped[int] = mapped_column(ForeignKey("datasets.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    description: Mapped[str] = mapped_column(Text, default="")
    status_code: Mapped[int] = mapped_column(Integer)
    snapshot_key: Mapped[str | None] = mapped_column(String(64), default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    name: Mapped[str] = mapped_column(Text, default="")
    model_type_id: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    # Clarifai OutputInfo as JSON: data.concepts, output_config, params.
    output_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    model_pk: Mapped[int] = mapped_column(ForeignKey("models.pk", ondelete="CASCADE"), index=True)
    id: Mapped[str] = mapped_column(ID)
    status_code: Mapped[int] = mapped_column(Integer)
    status_description: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    train_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_version_pk: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.pk", ondelete="SET NULL"), default=None
    )
    # Progress while training: percent, epoch, step, eta_s, message.
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifacts_key: Mapped[str | None] = mapped_column(String(64), default=None)
    # EvalMetrics (Clarifai JSON shape) of the evaluation run when training finished.
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class Job(Base):
    """Background work (training, evaluation, embedding, export) claimed by workers with a lease.

    A worker that stops heartbeating loses its lease; another claims the job and resumes it.
    """

    __tablename__ = "jobs"
    pk: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    model_version_pk: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.pk", ondelete="CASCADE"), default=None, index=True
    )
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    checkpoint_key: Mapped[str | None] = mapped_column(String(64), default=None)
    log_key: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Embedding(Base):
    """A cached embedding, keyed by content (blob key or text hash) and embedder version."""

    __tablename__ = "embeddings"
    content_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    embedder: Mapped[str] = mapped_column(String(128), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Evaluation(Base):
    """EvalMetrics of a model version on its held-out data or a ground-truth dataset version."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    model_version_pk: Mapped[int] = mapped_column(
        ForeignKey("model_versions.pk", ondelete="CASCADE"), index=True
    )
    dataset_version_pk: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.pk", ondelete="SET NULL"), default=None
    )
    status_code: Mapped[int] = mapped_column(Integer)
    status_description: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Export(Base):
    """An export archive of a model version, built in the background."""

    __tablename__ = "exports"
    pk: Mapped[int] = mapped_column(primary_key=True)
    model_version_pk: Mapped[int] = mapped_column(
        ForeignKey("model_versions.pk", ondelete="CASCADE"), unique=True
    )
    status_code: Mapped[int] = mapped_column(Integer)
    status_description: Mapped[str] = mapped_column(Text, default="")
    blob_key: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    size: Mapped[int] = mapped_column(default=0)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """A measured training (a calibration trial or a finished version): its workload, seconds and
    peak memory, on one hardware profile. The training-time estimator is fitted to these."""

    __tablename__ = "training_runs"
    pk: Mapped[int] = mapped_column(primary_key=True)
    model_key: Mapped[str] = mapped_column(ID, index=True)  # model type/template/input kind
    hardware_profile: Mapped[str] = mapped_column(ID)
    hardware: Mapped[dict[str, Any]] = mapped_column(default=dict)  # device, name, cores
    source: Mapped[str] = mapped_column(String(16))  # "calibration" or "training"
    run: Mapped[dict[str, Any]] = mapped_column(default=dict)  # estimator.Run as JSON
    model_version_pk: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.pk", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Workflow(Base):
    """A graph of model versions (Clarifai's Workflow): `nodes` is a list of
    {"id", "model": {"id", "model_version": {"id"}}, "node_inputs": [{"node_id"}]} in graph
    order, each version pinned when the workflow was saved."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("app_pk", "id"),)
    pk: Mapped[int] = mapped_column(primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(ID)
    version_id: Mapped[str] = mapped_column(ID)  # a new one each time the nodes change
    description: Mapped[str] = mapped_column(Text, default="")
    nodes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

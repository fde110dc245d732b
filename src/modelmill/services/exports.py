"""Exports: an archive (ONNX, config, concepts) of a trained version, built in the background."""

from __future__ import annotations

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env
from modelmill.services.predictions import trained_version
from modelmill.store import queue
from modelmill.store.tables import Export


def request_export(env: Env, app: AppScope, model_id: str, version_id: str) -> Export:
    """PutModelVersionExports: start building the archive, or return the one already there."""
    _, version = trained_version(env, app, model_id, version_id)
    with env.db.session() as session:
        export = session.scalar(select(Export).where(Export.model_version_pk == version.pk))
        if export is not None and export.status_code != codes.MODEL_EXPORTING_FAILED:
            return export
        if export is None:
            export = Export(model_version_pk=version.pk, status_code=codes.MODEL_EXPORT_PENDING)
            session.add(export)
        export.status_code = codes.MODEL_EXPORT_PENDING
        export.status_description = "Queued for export"
        session.flush()
        queue.enqueue(
            session,
            "export",
            {"export_pk": export.pk},
            model_version_pk=version.pk,
            max_attempts=env.settings.job_max_attempts,
        )
    return export


def get_export(env: Env, app: AppScope, model_id: str, version_id: str) -> Export:
    _, version = trained_version(env, app, model_id, version_id)
    with env.db.session() as session:
        export = session.scalar(select(Export).where(Export.model_version_pk == version.pk))
    if export is None:
        raise ApiError(
            codes.CONN_DOES_NOT_EXIST,
            f"Version '{version.id}' has not been exported; PutModelVersionExports starts "
            "an export.",
        )
    return export

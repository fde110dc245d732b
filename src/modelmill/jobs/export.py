"""The export job: the template writes its archive, which goes to the blob store."""

from __future__ import annotations

import logging
import shutil

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.services import Env
from modelmill.store.blobs import get_tree
from modelmill.store.tables import Export, Job, Model, ModelVersion
from modelmill.training.registry import find_template


def run_export(env: Env, job: Job, owner: str, log: logging.Logger) -> None:
    with env.db.session() as session:
        export = session.get(Export, job.payload["export_pk"])
        assert export is not None
        export.status_code = codes.MODEL_EXPORTING
        version = session.get(ModelVersion, export.model_version_pk)
        model = session.get(Model, version.model_pk)  # type: ignore[union-attr]
    assert version is not None and model is not None and version.artifacts_key
    template = find_template(
        model.model_type_id, (version.train_info.get("params") or {}).get("template")
    )
    assert template is not None
    work = env.settings.data_dir / "work" / f"export-{job.pk}"
    shutil.rmtree(work, ignore_errors=True)
    artifacts = get_tree(env.blobs, version.artifacts_key, work / "artifacts")
    archive = template.export(artifacts, work / "out")
    size = archive.stat().st_size
    key = env.blobs.put_file(archive)  # streamed: an archive can be larger than memory allows
    log.info("exported %s (%d bytes)", archive.name, size)
    with env.db.session() as session:
        row = session.get(Export, export.pk)
        assert row is not None
        row.blob_key, row.size = key, size
        row.status_code = codes.MODEL_EXPORTED
        row.status_description = f"Exported {archive.name}"
    shutil.rmtree(work, ignore_errors=True)

"""Dataset version exports: the frozen snapshot's inputs with their content in the blob store,
ready to be written as the archive `Dataset.export` of the clarifai SDK downloads and reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env
from modelmill.services.datasets import get_version, load_snapshot

# The formats written today; the others of DatasetVersionExportFormat are refused by name.
FORMATS = ("CLARIFAI_DATA_PROTOBUF",)


@dataclass
class ExportedInput:
    """One snapshot entry and the blob key its content is served from (texts are stored too)."""

    item: dict[str, Any]
    content_key: str


def prepare_export(
    env: Env, app: AppScope, dataset_id: str, version_id: str, export_format: str
) -> list[ExportedInput]:
    """The inputs of a dataset version, each with a blob holding its content."""
    if export_format not in FORMATS:
        raise ApiError(
            codes.DATASET_VERSION_EXPORT_FAILED,
            f"Export format '{export_format or 'not set'}' is not one modelmill writes; ask for "
            f"{' or '.join(FORMATS)} (what the clarifai SDK's Dataset.export reads).",
        )
    version = get_version(env, app, dataset_id, version_id)
    if version.snapshot_key is None:
        raise ApiError(
            codes.DATASET_VERSION_PENDING,
            f"Version '{version_id}' of dataset '{dataset_id}' is not ready yet; export it when "
            "its status is DATASET_VERSION_READY.",
        )
    exported = []
    for item in load_snapshot(env, version):
        if item["kind"] == "image" and item.get("blob_key"):
            key = item["blob_key"]
        else:
            # Texts live in the database; a blob (content-addressed, so stored once) serves them.
            key = env.blobs.put((item.get("text") or "").encode())
        exported.append(ExportedInput(item, key))
    return exported


def store_archive(env: Env, archive: bytes) -> str:
    """Keep a written archive; content-addressed, so exporting a version again stores nothing."""
    return env.blobs.put(archive)

"""What every use case and job needs, opened from the settings: the settings themselves, the
metadata database and the blob store (services and jobs know it as `services.Env`)."""

from __future__ import annotations

from dataclasses import dataclass

from modelmill.settings import Settings
from modelmill.store.blobs import BlobStore, open_blob_store
from modelmill.store.database import Database
from modelmill.store.s3 import S3Options


@dataclass
class Env:
    """What every service needs: settings, the metadata database and the blob store."""

    settings: Settings
    db: Database
    blobs: BlobStore

    @classmethod
    def open(cls, settings: Settings, migrate: bool = True) -> Env:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        if migrate:
            db.migrate()
        blobs = open_blob_store(settings.resolved_blob_url, s3_options(settings))
        blobs.check()
        return cls(settings, db, blobs)


def s3_options(settings: Settings) -> S3Options:
    """How the settings say to reach an S3 blob store."""
    return S3Options(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        path_style=settings.s3_path_style,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        session_token=settings.s3_session_token,
    )

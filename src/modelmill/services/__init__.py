"""Use cases, one module per resource. Each public function owns its transaction and checks."""

# No `from __future__ import annotations` here: it would bind the name `annotations` in this
# package, and `from modelmill.services import annotations` would then return that __future__
# feature instead of importing the annotations service module.
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
    def open(cls, settings: Settings, migrate: bool = True) -> "Env":  # noqa: UP037
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


@dataclass(frozen=True)
class AppScope:
    """An app the caller may use, resolved from (user_id, app_id) and the caller's key."""

    user_pk: int
    user_id: str
    app_pk: int
    app_id: str

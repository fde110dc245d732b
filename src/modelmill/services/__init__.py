"""Use cases, one module per resource. Each public function owns its transaction and checks."""

# No `from __future__ import annotations` here: it would bind the name `annotations` in this
# package, and `from modelmill.services import annotations` would then return that __future__
# feature instead of importing the annotations service module.
from dataclasses import dataclass

from modelmill.settings import Settings
from modelmill.store.blobs import BlobStore, open_blob_store
from modelmill.store.database import Database


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
        return cls(settings, db, open_blob_store(settings.resolved_blob_url))


@dataclass(frozen=True)
class AppScope:
    """An app the caller may use, resolved from (user_id, app_id) and the caller's key."""

    user_pk: int
    user_id: str
    app_pk: int
    app_id: str

"""Use cases, one module per resource. Each public function owns its transaction and checks."""

# No `from __future__ import annotations` here: it would bind the name `annotations` in this
# package, and `from modelmill.services import annotations` would then return that __future__
# feature instead of importing the annotations service module.
from dataclasses import dataclass

from modelmill.store.blobs import BlobStore
from modelmill.store.env import Env

__all__ = ["AppScope", "BlobStore", "Env"]  # Env and BlobStore: the store's, as services use it


@dataclass(frozen=True)
class AppScope:
    """An app the caller may use, resolved from (user_id, app_id) and the caller's key."""

    user_pk: int
    user_id: str
    app_pk: int
    app_id: str
    key_app_ids: tuple[str, ...] = ()  # the apps the caller's key is limited to; () = all

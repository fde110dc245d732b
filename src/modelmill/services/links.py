"""URLs the API hands out: signed so that clients fetch them without a key (like pre-signed
URLs), as the clarifai SDK does for train logs."""

from __future__ import annotations

from dataclasses import dataclass

from modelmill.services import Env
from modelmill.services.signing import sign


@dataclass(frozen=True)
class Links:
    env: Env
    base_url: str

    def blob(self, key: str) -> str:
        """The store's own presigned URL where clients can reach the store, else ours."""
        settings = self.env.settings
        if settings.blob_direct_links:
            direct = self.env.blobs.presigned_url(key, settings.blob_link_expiry_s)
            if direct is not None:
                return direct
        return f"{self.base_url}/blobs/{key}?sig={sign(self.env, 'blob:' + key)}"

    def train_log(self, model_version_pk: int) -> str:
        token = f"log:{model_version_pk}"
        return f"{self.base_url}/logs/{model_version_pk}?sig={sign(self.env, token)}"

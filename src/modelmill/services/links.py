"""URLs the API hands out: signed so that clients fetch them without a key (like pre-signed
URLs), as the clarifai SDK does for train logs; each expires and carries the key of the call
that made it (see signing.py), or is the blob store's own presigned URL where clients reach it."""

from __future__ import annotations

from dataclasses import dataclass

from modelmill.services import Env
from modelmill.services.signing import sign_link


@dataclass(frozen=True)
class Links:
    env: Env
    base_url: str
    key_pk: int = 0  # the caller's key; 0 for the web pages' links, which only expire

    def _signed(self, resource: str) -> str:
        return sign_link(self.env, resource, self.key_pk).query()

    def blob(self, key: str) -> str:
        """The store's own presigned URL where clients can reach the store, else ours."""
        settings = self.env.settings
        if settings.blob_direct_links:
            direct = self.env.blobs.presigned_url(key, settings.blob_link_expiry_s)
            if direct is not None:
                return direct
        return f"{self.base_url}/blobs/{key}?{self._signed(f'blob:{key}')}"

    def hosted(self, key: str) -> tuple[str, str]:
        """A blob as a Clarifai HostedURL's (prefix, suffix): clients fetch prefix/SIZE/suffix."""
        return f"{self.base_url}/hosted", f"{key}?{self._signed(f'blob:{key}')}"

    def archive(self, key: str) -> str:
        """A blob served as application/zip (the SDK's Dataset.export checks the type)."""
        return f"{self.base_url}/archives/{key}.zip?{self._signed(f'blob:{key}')}"

    def train_log(self, model_version_pk: int) -> str:
        return f"{self.base_url}/logs/{model_version_pk}?{self._signed(f'log:{model_version_pk}')}"

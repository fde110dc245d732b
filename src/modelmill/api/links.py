"""URLs the API hands out: signed so that clients fetch them without a key (like pre-signed
URLs), as the clarifai SDK does for train logs; each carries the key of the call that made it."""

from __future__ import annotations

from dataclasses import dataclass

from modelmill.services import Env
from modelmill.services.signing import sign_link


@dataclass(frozen=True)
class Links:
    env: Env
    base_url: str
    key_pk: int = 0  # the caller's key; 0 for the web pages' links, which only expire

    def blob(self, key: str) -> str:
        signature = sign_link(self.env, f"blob:{key}", self.key_pk)
        return f"{self.base_url}/blobs/{key}?{signature.query()}"

    def train_log(self, model_version_pk: int) -> str:
        signature = sign_link(self.env, f"log:{model_version_pk}", self.key_pk)
        return f"{self.base_url}/logs/{model_version_pk}?{signature.query()}"

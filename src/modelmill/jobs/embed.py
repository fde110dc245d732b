"""The embedding job: embeds an app's new inputs with the default base model of their kind, in
the background after upload, so a later transfer-learning training finds them cached."""

from __future__ import annotations

import logging

from sqlalchemy import select

from modelmill.services import Env
from modelmill.services.embeddings import EmbeddingCache
from modelmill.services.examples import content_key, from_snapshot
from modelmill.store.tables import Input, Job
from modelmill.training.embedders import default_embedder


def run_embedding(env: Env, job: Job, owner: str, log: logging.Logger) -> None:
    with env.db.session() as session:
        rows = list(
            session.scalars(
                select(Input).where(
                    Input.app_pk == job.payload["app_pk"], Input.pk > job.payload.get("after_pk", 0)
                )
            )
        )
    for kind in ("image", "text"):
        items = [
            {"id": r.id, "kind": r.kind, "blob_key": r.blob_key, "text": r.text, "labels": {}}
            for r in rows
            if r.kind == kind
        ]
        if not items:
            continue
        embedder = default_embedder(kind)  # type: ignore[arg-type]
        cache = EmbeddingCache(env, {item["id"]: content_key(item) for item in items})
        cache([from_snapshot(env, item, []) for item in items], embedder.id)
        log.info("embedded %d %s inputs with %s", len(items), kind, embedder.id)

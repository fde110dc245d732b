"""Embeddings of uploaded inputs are computed in the background (MODELMILL_EMBED_ON_UPLOAD) and
cached per (content, embedder version): a training afterwards finds them and embeds nothing again.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from api.training.support import (
    TRAINED,
    create_model,
    labelled_texts,
    start_training,
    upload,
    wait_for_version,
    wait_until,
)


@pytest.mark.slow
def test_uploads_are_embedded_in_the_background_and_never_twice(bare: Any) -> None:
    from modelmill.store.database import Database
    from modelmill.store.tables import Embedding, Job

    setup = bare({"MODELMILL_EMBED_ON_UPLOAD": "true"})
    api = setup.api
    texts = labelled_texts(8)
    upload(api, texts)
    database = Database(setup.server.database_url)
    try:

        def embeddings() -> int:
            with database.session() as session:
                return int(session.scalar(select(func.count()).select_from(Embedding)) or 0)

        def embed_jobs() -> list[str]:
            with database.session() as session:
                return list(session.scalars(select(Job.state).where(Job.kind == "embed")))

        assert embed_jobs() == ["queued"] and embeddings() == 0
        setup.workers.start()
        wait_until(lambda: embed_jobs() == ["done"], "the background embedding job")
        assert embeddings() == len(texts)

        create_model(api, "topics", concepts=["cooking", "sports", "finance"])
        version = start_training(api, "topics")
        assert wait_for_version(api, "topics", version.id).status.code == TRAINED
        assert embeddings() == len(texts), "the training embedded inputs that were cached"
    finally:
        database.dispose()

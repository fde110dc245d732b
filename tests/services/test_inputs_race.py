"""PostInputs racing another request for the same input id: the loser's input is reported as a
duplicate, never as stored, and the rest of its batch is stored once.

Run: `.venv/bin/pytest tests/services/test_inputs_race.py -q`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import func, select

from modelmill.services import AppScope, Env, apps, auth, inputs
from modelmill.services.inputs import NewInput, post_inputs
from modelmill.settings import Settings
from modelmill.store.tables import Input


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    opened = Env.open(Settings(data_dir=tmp_path, embed_on_upload=False))
    yield opened
    opened.db.dispose()


@pytest.fixture
def app(env: Env) -> AppScope:
    principal = auth.authenticate(env, f"Key {auth.create_token(env, 'racer')}")
    apps.create_apps(env, principal, "racer", [("race", "", "")])
    return auth.resolve_app(env, principal, "racer", "race")


def test_an_input_lost_in_a_race_is_a_duplicate_not_stored(
    env: Env, app: AppScope, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_concepts = inputs.ensure_concepts
    raced: list[bool] = []

    def store_the_same_id_first(session: Any, app_pk: int, names: dict[str, str]) -> None:
        # Runs after this request checked which ids are taken and before it inserts: another
        # request stores "contested" in between and commits.
        if not raced:
            raced.append(True)
            post_inputs(env, app, [NewInput(id="contested", text="theirs")])
        ensure_concepts(session, app_pk, names)

    monkeypatch.setattr(inputs, "ensure_concepts", store_the_same_id_first)

    results, _ = post_inputs(
        env, app, [NewInput(id="contested", text="ours"), NewInput(id="fresh", text="also ours")]
    )

    contested, fresh = results
    assert contested.code == codes.INPUT_DUPLICATE
    assert contested.row is None, "the lost input is answered as if it were stored"
    assert fresh.code == codes.INPUT_DOWNLOAD_SUCCESS and fresh.row is not None
    with env.db.session() as session:
        stored = dict(session.execute(select(Input.id, Input.text)).all())
        count = session.scalar(select(func.count()).select_from(Input))
    assert stored == {"contested": "theirs", "fresh": "also ours"} and count == 2

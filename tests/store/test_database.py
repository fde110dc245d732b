"""The metadata database: Alembic migrations on a fresh SQLite file and a fresh PostgreSQL
database, idempotent, and in agreement with the SQLAlchemy tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from modelmill.store.database import MIGRATIONS, Database
from modelmill.store.tables import App, Base, Input, User

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A Database on an empty SQLite file or an empty PostgreSQL database, not yet migrated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nested' / 'modelmill.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    db = Database(url)
    yield db
    db.dispose()


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def add_app(session: Session) -> App:
    """User "ann" and her app "pets", flushed (their primary keys set)."""
    user = User(id="ann")
    session.add(user)
    session.flush()
    app = App(user_pk=user.pk, id="pets")
    session.add(app)
    session.flush()
    return app


def test_migrate_creates_every_table_on_a_fresh_database(database: Database) -> None:
    assert current_revision(database) is None

    database.migrate()

    assert current_revision(database) == head_revision()
    tables = set(inspect(database.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_migrated_schema_matches_the_tables(database: Database) -> None:
    """A column added to tables.py without a migration shows up here."""
    database.migrate()

    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)

    assert differences == []


def test_migrate_again_changes_nothing_and_keeps_the_data(database: Database) -> None:
    database.migrate()
    with database.session() as session:
        add_app(session)

    database.migrate()
    database.migrate()

    assert current_revision(database) == head_revision()
    with database.session() as session:
        assert session.scalars(select(App.id)).all() == ["pets"]


def test_deleting_an_app_deletes_what_it_holds(database: Database) -> None:
    """Foreign keys are enforced on both backends (SQLite needs a pragma for it)."""
    database.migrate()
    with database.session() as session:
        app = add_app(session)
        session.add(Input(app_pk=app.pk, id="i1", kind="text", text="x", status_code=30000))

    with database.session() as session:
        session.delete(session.scalars(select(App)).one())

    with database.session() as session:
        assert session.scalars(select(Input)).all() == []


def test_json_columns_refuse_nan_on_every_backend(database: Database) -> None:
    """PostgreSQL refuses NaN in JSON; SQLite must too, or clients get JSON that is not JSON."""
    database.migrate()
    with (
        pytest.raises((ValueError, StatementError), match="Out of range float"),
        database.session() as session,
    ):
        app = add_app(session)
        nan = {"score": float("nan")}
        session.add(
            Input(app_pk=app.pk, id="i1", kind="text", text="x", status_code=30000, metadata_=nan)
        )
        session.flush()

    with database.session() as session:
        assert session.scalars(select(User)).all() == []


def test_session_rolls_back_when_the_block_raises(database: Database) -> None:
    database.migrate()

    with pytest.raises(RuntimeError), database.session() as session:
        session.add(User(id="ghost"))
        session.flush()
        raise RuntimeError("changed my mind")

    with database.session() as session:
        assert session.scalars(select(User)).all() == []


def test_sqlite_uses_write_ahead_logging(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        db.migrate()
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.dispose()

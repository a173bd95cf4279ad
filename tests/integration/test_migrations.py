"""The Alembic migrations agree with the models, and go down to nothing and back up, on both dialects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

import levqor.db.models  # noqa: F401 - registers the tables
from levqor.db.engine import create_db_engine
from levqor.db.migrate import alembic_config, downgrade, upgrade
from tests.conftest import DB_KINDS, PG_URL, service_unavailable


@pytest.fixture(params=DB_KINDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database of its own with no tables at all (not the shared test database,
    which these tests take down to nothing)."""
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield engine
        engine.dispose()
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        conn = admin.connect()
    except Exception as exc:  # any driver error means the service is not there
        admin.dispose()
        service_unavailable("PostgreSQL", exc)
        raise
    name = f"levqor_migrations_{uuid.uuid4().hex[:10]}"
    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = create_db_engine(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        admin.dispose()


def model_drift(engine: Engine) -> list[Any]:
    """What autogenerate would write: configured as levqor/db/migrations/env.py configures it."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "target_metadata": SQLModel.metadata,
                "render_as_batch": conn.dialect.name == "sqlite",
                "compare_type": True,
            },
        )
        return list(compare_metadata(context, SQLModel.metadata))


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_the_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config(create_engine("sqlite://"))).get_heads()
    assert len(heads) == 1, f"several Alembic heads {heads}: merge them or fix a down_revision"


def test_migrations_match_the_models(empty_engine: Engine) -> None:
    # On an empty database the comparison sees every table missing (so it is really comparing).
    missing = {diff[1].name for diff in model_drift(empty_engine) if diff[0] == "add_table"}
    assert missing == set(SQLModel.metadata.tables)

    upgrade(empty_engine)
    drift = model_drift(empty_engine)
    assert drift == [], (
        "the models and the migrations disagree; add an Alembic revision for this change:\n"
        + "\n".join(map(str, drift))
    )


def test_downgrade_to_base_and_up_again(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    assert table_names(empty_engine) == set(SQLModel.metadata.tables)

    downgrade(empty_engine, "base")
    assert table_names(empty_engine) == set()

    upgrade(empty_engine)
    assert table_names(empty_engine) == set(SQLModel.metadata.tables)
    assert model_drift(empty_engine) == []

"""Migrations on SQLite and PostgreSQL: from empty they seed Sales, round trip, and match the models."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from models import migrate
from models.db import make_engine
from models.schema import Pipeline, StageKind

EXPECTED_STAGES = [
    ("Qualified", StageKind.OPEN),
    ("Demo", StageKind.OPEN),
    ("Proposal", StageKind.OPEN),
    ("Negotiation", StageKind.OPEN),
    ("Won", StageKind.WON),
    ("Lost", StageKind.LOST),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty, never-migrated database of each kind."""
    url = (
        f"sqlite:///{tmp_path / 'empty.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = make_engine(url)
    yield engine
    engine.dispose()


def pipelines(engine: Engine) -> dict[str, list[tuple[str, StageKind]]]:
    with Session(engine) as session:
        return {
            p.name: [(s.name, s.kind) for s in p.stages]
            for p in session.scalars(select(Pipeline).order_by(Pipeline.position))
        }


def test_upgrade_from_empty_creates_the_default_sales_pipeline(empty_engine):
    assert migrate.current_revision(empty_engine) is None
    assert not migrate.is_up_to_date(empty_engine)
    migrate.upgrade(empty_engine)
    assert migrate.is_up_to_date(empty_engine)
    assert pipelines(empty_engine) == {"Sales": EXPECTED_STAGES}


def test_downgrade_to_base_and_upgrade_again(empty_engine):
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "base")
    assert migrate.current_revision(empty_engine) is None
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision(empty_engine)
    assert pipelines(empty_engine) == {"Sales": EXPECTED_STAGES}
    # upgrading an up-to-date database changes nothing (the default pipeline is not seeded twice)
    migrate.upgrade(empty_engine)
    assert pipelines(empty_engine) == {"Sales": EXPECTED_STAGES}


def test_models_match_the_migrations(empty_engine):
    migrate.upgrade(empty_engine)
    assert migrate.schema_differences(empty_engine) == []

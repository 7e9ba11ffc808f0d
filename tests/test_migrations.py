"""Alembic migrations on a fresh SQLite file and a fresh PostgreSQL database: upgrade creates
every table of app/db/tables.py exactly as declared, downgrade to base removes them, and
upgrading again works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from app.db.migrate import alembic_config, upgrade
from app.db.tables import Base
from app.db.session import make_engine
from conftest import _pg_available, postgres_or_skip, scratch_pg_database

TABLES = {t.name for t in Base.metadata.sorted_tables}


@pytest.fixture(scope="module")
def pg_scratch() -> Iterator[str | None]:
    """One scratch PostgreSQL database for this module (CREATE/DROP DATABASE are slow)."""
    if not _pg_available():
        yield None
        return
    with scratch_pg_database("flywheel_mig") as url:
        yield url


def _empty_schema(url: str) -> None:
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or the scratch PostgreSQL database with its schema wiped."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = postgres_or_skip(request.getfixturevalue("pg_scratch"))
    _empty_schema(url)
    yield url


def _tables(url: str) -> set[str]:
    eng = create_engine(url)
    try:
        return set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


def _revision(url: str) -> str | None:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        eng.dispose()


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_upgrade_creates_every_table(fresh_url: str) -> None:
    assert _tables(fresh_url) == set()
    command.upgrade(alembic_config(fresh_url), "head")
    assert _tables(fresh_url) == TABLES | {"alembic_version"}
    assert _revision(fresh_url) == _head()


def test_migrated_schema_matches_the_models(fresh_url: str) -> None:
    """No drift: what the migrations build is what app/db/tables.py declares."""
    command.upgrade(alembic_config(fresh_url), "head")
    eng = create_engine(fresh_url)
    try:
        with eng.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        eng.dispose()
    assert diff == []


def test_downgrade_to_base_and_up_again(fresh_url: str) -> None:
    cfg = alembic_config(fresh_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    assert _tables(fresh_url) <= {"alembic_version"}
    assert _revision(fresh_url) is None
    command.upgrade(cfg, "head")
    assert _tables(fresh_url) == TABLES | {"alembic_version"}
    assert _revision(fresh_url) == _head()


def test_app_upgrade_is_idempotent_and_keeps_data(fresh_url: str) -> None:
    """What every process runs at start: a second run (another replica) changes nothing."""
    eng = make_engine(fresh_url)
    try:
        upgrade(eng)
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO clients (name, key_hash, key_prefix, scopes, created_at) "
                              "VALUES ('c', :h, 'fw_abc', '[]', CURRENT_TIMESTAMP)"), {"h": "0" * 64})
        upgrade(eng)
        with eng.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM clients")).scalar() == 1
    finally:
        eng.dispose()
    assert _revision(fresh_url) == _head()


def test_one_active_version_per_task_is_enforced_by_the_database(fresh_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    command.upgrade(alembic_config(fresh_url), "head")
    eng = make_engine(fresh_url)
    insert_version = text("INSERT INTO model_versions (task_id, version, status, path, sha256, metrics, data_counts, "
                          "engines, created_at) VALUES (1, :v, :s, 'p', 'x', '{}', '{}', '{}', CURRENT_TIMESTAMP)")
    try:
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO tasks (name, kind, labels, descriptions, lambda_data, feedback_loss, "
                              "finetune, quantize, policy, created_at) VALUES ('t', 'classification', '[]', '{}', "
                              "0.5, 'bounded', 'full', false, '{}', CURRENT_TIMESTAMP)"))
            conn.execute(insert_version, {"v": 0, "s": "active"})
            conn.execute(insert_version, {"v": 1, "s": "retired"})
        with pytest.raises(IntegrityError), eng.begin() as conn:
            conn.execute(insert_version, {"v": 2, "s": "active"})
    finally:
        eng.dispose()


def test_upgrading_a_database_with_classification_data_keeps_it_valid(fresh_url: str) -> None:
    """A database at 0002 holding a classification task, a prediction and its feedback: after the
    upgrade to the kinds' schema every row reads back the same, feedback has no span, and a
    tagging answer longer than the old 128-character columns fits."""
    cfg = alembic_config(fresh_url)
    command.upgrade(cfg, "0002")
    eng = create_engine(fresh_url)
    try:
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO tasks (id, name, kind, labels, descriptions, lambda_data, feedback_loss, "
                              "finetune, quantize, policy, created_at) VALUES (1, 'intent', 'classification', "
                              "'[\"a\", \"b\"]', '{}', 0.5, 'bounded', 'full', false, '{}', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO model_versions (id, task_id, version, status, path, sha256, metrics, "
                              "data_counts, created_at) VALUES (1, 1, 0, 'active', '/models/v0', :sha, '{}', '{}', "
                              "CURRENT_TIMESTAMP)"), {"sha": "0" * 64})
            conn.execute(text("INSERT INTO predictions (id, task_id, model_version_id, text, label, scores, "
                              "created_at) VALUES ('p1', 1, 1, 'hello', 'a', '{\"a\": 0.9, \"b\": 0.1}', "
                              "CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO feedback (prediction_id, task_id, signal, correction, created_at) "
                              "VALUES ('p1', 1, -1, 'b', CURRENT_TIMESTAMP)"))
        command.upgrade(cfg, "head")
        with eng.begin() as conn:
            assert conn.execute(text("SELECT signal, correction, span FROM feedback")).one() == (-1, "b", None)
            assert conn.execute(text("SELECT label FROM predictions WHERE id = 'p1'")).scalar() == "a"
            long = "[" + ",".join(f'{{"start":{i},"end":{i + 1},"label":"person"}}' for i in range(20)) + "]"
            conn.execute(text("UPDATE feedback SET correction = :c, span = 0"), {"c": long})
            assert conn.execute(text("SELECT correction FROM feedback")).scalar() == long
    finally:
        eng.dispose()


def test_keys_made_before_scopes_keep_every_existing_task_and_scope(fresh_url: str) -> None:
    """A database at 0003 with two tasks and a key: after the upgrade the key may still predict,
    give feedback and read on both tasks (nothing that worked stops working), and a task
    created afterwards is not the key's."""
    cfg = alembic_config(fresh_url)
    command.upgrade(cfg, "0003")
    eng = create_engine(fresh_url)
    try:
        with eng.begin() as conn:
            for tid, name in ((1, "intent"), (2, "mood")):
                conn.execute(text("INSERT INTO tasks (id, name, kind, labels, descriptions, lambda_data, "
                                  "feedback_loss, finetune, quantize, policy, created_at) VALUES (:id, :n, "
                                  "'classification', '[\"a\", \"b\"]', '{}', 0.5, 'bounded', 'full', false, '{}', "
                                  "CURRENT_TIMESTAMP)"), {"id": tid, "n": name})
            conn.execute(text("INSERT INTO clients (id, name, key_hash, key_prefix, created_at) "
                              "VALUES (7, 'old-app', :h, 'fw_abc', CURRENT_TIMESTAMP)"), {"h": "0" * 64})
        command.upgrade(cfg, "head")
        with eng.begin() as conn:
            assert conn.execute(text("SELECT scopes FROM clients")).scalar() in (
                ["predict", "feedback", "read"], '["predict", "feedback", "read"]')
            grants = conn.execute(text("SELECT client_id, task_id FROM client_tasks ORDER BY task_id")).all()
            assert [tuple(g) for g in grants] == [(7, 1), (7, 2)]
    finally:
        eng.dispose()

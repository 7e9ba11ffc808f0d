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
from support import pg_available, postgres_or_skip, scratch_pg_database

TABLES = {t.name for t in Base.metadata.sorted_tables}


@pytest.fixture(scope="module")
def pg_scratch() -> Iterator[str | None]:
    """One scratch PostgreSQL database for this module (CREATE/DROP DATABASE are slow)."""
    if not pg_available():
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


# ---------------------------------------------------------------- upgrading as users do: `flywheel migrate`


def _revisions() -> list[str]:
    """Every revision from the first to the one before head, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))][:-1]


NOW = "2026-01-02 03:04:05"
# One or more rows of every table, with every column any revision has; `_fill` keeps the columns
# and tables the database has at its revision.  Twenty predictions, each with its feedback.
ROWS: dict[str, list[dict]] = {
    "tasks": [{"id": 1, "name": "intent", "kind": "classification", "labels": '["a", "b"]', "descriptions": "{}",
               "lambda_data": 0.5, "feedback_loss": "bounded", "finetune": "full", "quantize": False,
               "policy": "{}", "created_at": NOW}],
    "clients": [{"id": 7, "name": "app", "key_hash": "0" * 64, "key_prefix": "fw_abc", "created_at": NOW,
                 "scopes": '["predict", "feedback", "read"]'}],
    "client_tasks": [{"client_id": 7, "task_id": 1}],
    "training_runs": [{"id": 3, "task_id": 1, "status": "promoted", "trigger": "manual", "created_at": NOW,
                       "attempts": 1, "progress": "{}", "loss_curve": "[]", "data_counts": "{}", "watermark": "{}",
                       "gate": "{}"}],
    "model_versions": [{"id": 1, "task_id": 1, "version": 0, "status": "retired", "path": "/m/v0", "sha256": "0" * 64,
                        "metrics": "{}", "data_counts": "{}", "created_at": NOW, "engines": "{}"},
                       {"id": 2, "task_id": 1, "version": 1, "parent_id": 1, "status": "active", "path": "/m/v1",
                        "sha256": "1" * 64, "training_run_id": 3, "metrics": "{}", "data_counts": "{}",
                        "created_at": NOW, "activated_at": NOW, "engines": "{}"}],
    "examples": [{"id": i, "task_id": 1, "text": f"example {i}", "label": "ab"[i % 2], "split": "train",
                  "text_hash": f"{i:064d}", "created_at": NOW} for i in range(1, 6)],
    "predictions": [{"id": f"p{i:02d}", "task_id": 1, "model_version_id": 1 + i % 2, "client_id": 7,
                     "user_hash": "u" * 64, "text": f"text {i}", "label": "a", "scores": '{"a": 0.6, "b": 0.4}',
                     "created_at": NOW} for i in range(20)],
    "feedback": [{"id": i + 1, "prediction_id": f"p{i:02d}", "task_id": 1, "client_id": 7, "user_hash": "u" * 64,
                  "signal": 1 if i % 3 else -1, "correction": None if i % 3 else "b", "created_at": NOW}
                 for i in range(20)],
    "worker_beats": [{"worker_id": "w1", "started_at": NOW, "seen_at": NOW}],
}


def _fill(url: str) -> dict[str, list[str]]:
    """Insert ROWS as the schema at this revision holds them; the columns each table has."""
    eng = create_engine(url)
    try:
        schema = inspect(eng)
        tables = {t: {c["name"] for c in schema.get_columns(t)} for t in schema.get_table_names()}
        with eng.begin() as conn:
            for table, rows in ROWS.items():
                if table in tables:
                    for row in rows:
                        kept = {k: v for k, v in row.items() if k in tables[table]}
                        conn.execute(text(f"INSERT INTO {table} ({', '.join(kept)}) "
                                          f"VALUES ({', '.join(':' + k for k in kept)})"), kept)
            if "training_runs" in tables:
                conn.execute(text("UPDATE training_runs SET candidate_version_id = 2"))
        return {t: sorted(cols) for t, cols in tables.items() if t in ROWS}
    finally:
        eng.dispose()


def _contents(url: str, columns: dict[str, list[str]]) -> dict[str, list[tuple]]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return {t: sorted(tuple(str(v) for v in r) for r in conn.execute(text(f"SELECT {', '.join(cols)} FROM {t}")))
                    for t, cols in columns.items()}
    finally:
        eng.dispose()


@pytest.mark.parametrize("start", _revisions())
def test_flywheel_migrate_upgrades_a_full_database_from_every_revision_and_keeps_every_row(
        fresh_url: str, start: str, tmp_path: Path) -> None:
    """What a user runs: `flywheel migrate` (the production engine, foreign keys on) on a database
    left at an earlier revision holding every kind of row.  It reaches head, and every row of
    every table (a version, twenty predictions and their feedback, examples, a run, a key) is
    there afterwards as it was, in the columns it had."""
    from typer.testing import CliRunner

    from app.cli import cli

    command.upgrade(alembic_config(fresh_url), start)
    columns = _fill(fresh_url)
    before = _contents(fresh_url, columns)
    assert len(before["feedback"]) == 20 and len(before["predictions"]) == 20
    result = CliRunner().invoke(cli, ["migrate"], env={"FLYWHEEL_DATABASE_URL": fresh_url,
                                                      "FLYWHEEL_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert _revision(fresh_url) == _head()
    assert _contents(fresh_url, columns) == before


def test_a_process_can_connect_to_sqlite_while_another_migrates_it(tmp_path: Path, monkeypatch) -> None:
    """`flywheel serve` starts its worker beside the API: on a new SQLite file one migrates while
    the other opens its first connection (which asks for WAL).  That connection opens and reads
    while the migration holds its write lock, instead of failing with "database is locked"."""
    import threading

    from app.db import migrate

    url = f"sqlite:///{tmp_path / 'new.db'}"
    inside, release = threading.Event(), threading.Event()
    real = migrate._to_head

    def held(cfg, conn) -> None:
        real(cfg, conn)
        inside.set()
        release.wait(30)

    monkeypatch.setattr(migrate, "_to_head", held)
    migrating = make_engine(url)
    worker = threading.Thread(target=upgrade, args=(migrating,))
    worker.start()
    try:
        assert inside.wait(60)
        other = make_engine(url)
        try:
            with other.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        finally:
            other.dispose()
    finally:
        release.set()
        worker.join(60)
        migrating.dispose()
    assert _revision(url) == _head()

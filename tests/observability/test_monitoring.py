"""Drift, the −1 share per version, promotion and training times and worker liveness, as
/metrics shows them (app/observability/monitoring.py, app/observability/metrics.py), on SQLite and PostgreSQL; and the
alert rules built on them (deploy/prometheus/), checked and unit-tested with promtool."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from app.db.tables import ModelVersion, Prediction, Task, utcnow
from app.observability.monitoring import MIN_DRIFT_ROWS, psi
from app.core.statuses import VersionStatus
from app.process.worker import Worker
from support.api import metric
from support.api import create_task, predict

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift() -> None:
    assert psi({"a": 50, "b": 50}, {"a": 5, "b": 5}) == pytest.approx(0.0)
    # (0.9 − 0.5)·ln(0.9/0.5) + (0.1 − 0.5)·ln(0.1/0.5)
    assert psi({"a": 50, "b": 50}, {"a": 90, "b": 10}) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5))
    # a category the reference never saw counts, with a floor instead of ln(0)
    assert psi({"a": 100}, {"a": 50, "c": 50}) > 1.0
    with pytest.raises(ValueError):
        psi({}, {"a": 1})


def _store_predictions(sessions, task: str, labels: list[str], start_minutes: int) -> None:
    """Predictions of the active version with these labels, a minute apart (confident answers)."""
    with sessions() as s:
        t = s.query(Task).filter_by(name=task).one()
        version = s.query(ModelVersion).filter_by(task_id=t.id, status=VersionStatus.ACTIVE).one()
        base = utcnow() - timedelta(days=1)
        for i, label in enumerate(labels):
            scores = {lab: (0.9 if lab == label else 0.05) for lab in t.labels}
            s.add(Prediction(task_id=t.id, model_version_id=version.id, text=f"text {start_minutes + i}",
                             label=label, scores=scores, created_at=base + timedelta(minutes=start_minutes + i)))
        s.commit()


def test_drift_of_the_answers_against_the_first_ones_after_promotion(client) -> None:
    create_task(client, labels=["billing", "card_lost", "weather"])
    sessions = client.app.state.flywheel.sessions
    # The reference: the version's first 500 (FLYWHEEL_DRIFT_WINDOW) answers, half billing, half weather.
    _store_predictions(sessions, "tickets", ["billing", "weather"] * 250, 0)
    text = client.get("/metrics").text
    assert metric(text, "flywheel_drift_rows", task="tickets", window="reference") == 500
    assert metric(text, "flywheel_drift_rows", task="tickets", window="recent") == 0
    assert metric(text, "flywheel_drift_psi", task="tickets", of="label") is None  # nothing recent yet


def test_drift_is_reported_once_enough_recent_answers_arrived(client) -> None:
    create_task(client, labels=["billing", "card_lost", "weather"])
    sessions = client.app.state.flywheel.sessions
    _store_predictions(sessions, "tickets", ["billing", "weather"] * 250, 0)
    # Then 200 answers, 90% billing: the label distribution moved, the confidence did not.
    _store_predictions(sessions, "tickets", ["billing"] * 180 + ["weather"] * 20, 1000)
    text = client.get("/metrics").text
    assert metric(text, "flywheel_drift_rows", task="tickets", window="recent") == 200 >= MIN_DRIFT_ROWS
    assert metric(text, "flywheel_drift_psi", task="tickets", of="label") == pytest.approx(
        psi({"billing": 250, "weather": 250}, {"billing": 180, "weather": 20}))
    assert metric(text, "flywheel_drift_psi", task="tickets", of="label") > 0.25
    assert metric(text, "flywheel_drift_psi", task="tickets", of="confidence") == pytest.approx(0.0)


def test_negative_share_promotion_and_feedback_times_per_task(client) -> None:
    create_task(client)
    shown = predict(client, texts=["a b c", "d e f", "g h i"])["predictions"]
    for p, signal in zip(shown, (-1, -1, 1)):
        assert client.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": signal}).status_code == 201
    text = client.get("/metrics").text
    assert metric(text, "flywheel_feedback_signals", task="tickets", model="active") == 3
    assert metric(text, "flywheel_negative_share", task="tickets", model="active") == pytest.approx(2 / 3)
    assert metric(text, "flywheel_negative_share", task="tickets", model="parent") is None  # version 0 has none
    now = utcnow().timestamp()
    for name in ("flywheel_active_since_timestamp_seconds", "flywheel_last_judged_run_timestamp_seconds",
                 "flywheel_last_feedback_timestamp_seconds"):
        assert now - 120 < metric(text, name, task="tickets") <= now + 1, name


def test_worker_liveness_follows_the_workers_heartbeats(client, settings) -> None:
    assert metric(client.get("/metrics").text, "flywheel_worker_up") == 0  # no worker ever beat
    collector_ttl_passed(client)
    Worker(settings, factory=client.app.state.flywheel.sessions).beat()
    text = client.get("/metrics").text
    assert metric(text, "flywheel_worker_up") == 1
    assert utcnow().timestamp() - metric(text, "flywheel_worker_last_seen_timestamp_seconds") < 60


def collector_ttl_passed(client) -> None:
    """Make the monitoring collector read the database again at the next scrape."""
    for collector in list(client.app.state.flywheel.metrics.registry._collector_to_names):
        if hasattr(collector, "_at") and hasattr(collector, "_window"):
            collector._at = -math.inf


# ---------------------------------------------------------------- the alert rules


def _rule_names_and_metrics() -> tuple[list[str], set[str]]:
    groups = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    names = [r["alert"] for r in rules]
    used = {m for r in rules for m in re.findall(r"\b(flywheel_[a-z_]+)\b", r["expr"])}
    return names, used


def test_the_alert_rules_cover_what_the_issue_asks_for() -> None:
    names, _ = _rule_names_and_metrics()
    assert names == ["FlywheelDrift", "FlywheelNegativeFeedbackUp", "FlywheelNoTrainingWhileFeedbackArrives",
                     "FlywheelWorkerDown", "FlywheelQueueRejections"]


def test_every_metric_the_alert_rules_use_is_exported(client) -> None:
    _, used = _rule_names_and_metrics()
    exported = set(re.findall(r"^# TYPE (\w+) ", client.get("/metrics").text, re.M))
    # the embedded worker's gauge is exported by a server that runs one (`flywheel serve`)
    from app.observability.metrics import WorkerCollector
    exported |= {f.name for f in WorkerCollector(lambda: {"alive": True, "restarts": 0}).collect()}
    assert used <= exported, used - exported


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    return found


def test_promtool_checks_the_alert_rules() -> None:
    r = subprocess.run([_promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    r = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_retention_forgets_workers_silent_for_a_day(client, settings) -> None:
    from app.db.tables import WorkerBeat

    sessions = client.app.state.flywheel.sessions
    with sessions.begin() as s:
        s.add(WorkerBeat(worker_id="gone", started_at=utcnow() - timedelta(days=3),
                         seen_at=utcnow() - timedelta(days=2)))
    worker = Worker(settings, factory=sessions)
    worker.beat()
    assert worker.apply_retention().forgotten_workers == 1
    with sessions() as s:
        assert [w.worker_id for w in s.query(WorkerBeat)] == [worker.worker_id]


def _plans(engine, statements: list[tuple[str, object]]) -> list[str]:
    """Each statement's query plan, as one string; on PostgreSQL with sequential scans made
    prohibitively expensive, so a plan names a full scan only when no index can serve it."""
    plans = []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        for sql, params in statements:
            rows = conn.exec_driver_sql(explain + sql, params).all()
            plans.append(" | ".join(str(r[-1]) for r in rows))
    return plans


def test_what_the_console_and_metrics_read_of_a_versions_predictions_uses_an_index(client) -> None:
    """Drift and the −1 shares read one version's predictions, oldest and newest first, on every
    console page load and scrape: none of those statements scans the predictions table."""
    from sqlalchemy import event

    from app.observability.monitoring import watch_tasks

    create_task(client)
    for i in range(2 * MIN_DRIFT_ROWS + 2):
        predict(client, text=f"text number {i}")
    state = client.app.state.flywheel
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if "predictions" in statement and "model_version_id" in statement:
            seen.append((statement, parameters))

    event.listen(state.engine, "before_cursor_execute", capture)
    try:
        with state.sessions() as session:
            [watch] = watch_tasks(session, window=MIN_DRIFT_ROWS)
    finally:
        event.remove(state.engine, "before_cursor_execute", capture)
    assert watch is not None and len(seen) >= 3  # the count, the oldest, the newest (and the signals)
    for plan in _plans(state.engine, seen):
        assert not re.search(r"\bSCAN predictions\b(?! USING)|Seq Scan on predictions", plan), plan
        assert "USE TEMP B-TREE" not in plan, plan  # SQLite sorting what an index would give in order


def test_the_scrape_config_sends_the_metrics_token_and_promtool_accepts_it(tmp_path: Path) -> None:
    """deploy/prometheus/prometheus.yml scrapes /metrics with FLYWHEEL_METRICS_TOKEN from a file
    (/metrics answers nothing else); promtool checks it with a token file beside it."""
    config = yaml.safe_load((RULES / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and "credentials_file" in job["authorization"]
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(RULES / name, tmp_path / name)
    (tmp_path / job["authorization"]["credentials_file"]).write_text("m" * 64)
    r = subprocess.run([_promtool(), "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr

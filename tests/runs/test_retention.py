"""Retention keeps what serving and rollback need and forgets the rest: pruned versions lose
their files (the row stays, marked `pruned`, and cannot be activated), crash leftovers go, old
predictions nobody gave feedback on are deleted, and the store's size is a metric."""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from app.core.config import Settings
from app.db.session import transaction
from app.db.tables import Feedback, ModelVersion, Prediction, Task, utcnow
from app.db.versions import register_version
from app.runs.retention import apply_retention, remove_crash_leftovers
from app.core.statuses import VersionStatus
from app.process.worker import Worker
from support.learning import active, create_task, versions
from support.waiting import wait_until

GIVE_UP_S = 60.0


def _version(factory, settings: Settings, task_id: int, number: int, status: VersionStatus, parent: int | None,
             *, share_with: Path | None = None, age_days: float = 0.0) -> tuple[int, Path]:
    """A version whose files are a copy of version 0's (or the same directory as `share_with`)."""
    v0 = Path(versions(factory, task_id)[0].path)
    path = share_with or settings.models_dir / "intent" / f"v{number}-copy"
    if share_with is None:
        shutil.copytree(v0, path)
    with transaction(factory) as s:
        v = register_version(s, task=s.get(Task, task_id), path=path, sha256="x" * 64, version=number,
                             status=status, parent_id=parent)
        v.created_at = utcnow() - timedelta(days=age_days)
        return v.id, path


def test_retention_keeps_the_rollback_path_and_recent_work_and_prunes_the_rest(factory, settings: Settings) -> None:
    task_id = create_task(factory, settings)
    v0 = active(factory, task_id)
    with transaction(factory) as s:
        s.execute(update(ModelVersion).where(ModelVersion.id == v0.id).values(status=VersionStatus.RETIRED))
    old_reject, old_reject_path = _version(factory, settings, task_id, 1, VersionStatus.REJECTED, v0.id, age_days=30)
    v2, v2_path = _version(factory, settings, task_id, 2, VersionStatus.RETIRED, v0.id)
    new_reject, new_reject_path = _version(factory, settings, task_id, 3, VersionStatus.REJECTED, v2)
    shared, _ = _version(factory, settings, task_id, 4, VersionStatus.RETIRED, v0.id, share_with=v2_path)
    rolled_back, rolled_back_path = _version(factory, settings, task_id, 5, VersionStatus.RETIRED, v0.id)
    live, live_path = _version(factory, settings, task_id, 6, VersionStatus.ACTIVE, v2)
    candidate, candidate_path = _version(factory, settings, task_id, 7, VersionStatus.CANDIDATE, live)

    report = apply_retention(factory, settings.models_dir, keep_versions=2, rejected_days=7, prediction_days=0)

    assert sorted(report.pruned_versions) == sorted([old_reject, shared, rolled_back])
    status = {v.id: v.status for v in versions(factory, task_id)}
    assert {k for k, v in status.items() if v == "pruned"} == {old_reject, shared, rolled_back}
    assert status[live] == "active" and status[candidate] == "candidate"
    assert status[v0.id] == status[v2] == "retired" and status[new_reject] == "rejected"
    assert not old_reject_path.exists() and not rolled_back_path.exists()
    for kept in (Path(v0.path), v2_path, new_reject_path, live_path, candidate_path):
        assert kept.exists(), kept  # v2's directory stays although version 4, which shared it, was pruned
    assert report.freed_bytes > 0
    again = apply_retention(factory, settings.models_dir, keep_versions=2, rejected_days=7, prediction_days=0)
    assert again.pruned_versions == [] and again.freed_bytes == 0


def test_a_pruned_version_cannot_be_activated(client, factory, settings: Settings) -> None:
    client.post("/v1/tasks", json={"name": "intent", "labels": ["a", "b"]})
    with client.app.state.flywheel.sessions() as s:
        task_id = s.query(Task.id).filter(Task.name == "intent").scalar()
    with transaction(client.app.state.flywheel.sessions) as s:
        s.execute(update(ModelVersion).where(ModelVersion.task_id == task_id)
                  .values(status=VersionStatus.PRUNED, reason="pruned by retention"))
    r = client.post("/v1/tasks/intent/models/0/activate")
    assert r.status_code == 409 and r.json()["type"].endswith("version-pruned"), r.text


def test_crash_leftovers_go_and_a_save_in_progress_stays(tmp_path: Path) -> None:
    models = tmp_path / "models"
    old, fresh = models / "intent" / ".tmp-old", models / "intent" / ".tmp-fresh"
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "encoder.bin").write_bytes(b"x" * 100)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert remove_crash_leftovers(models) == [str(old)]
    assert not old.exists() and fresh.exists()


def test_old_predictions_without_feedback_are_deleted(factory, settings: Settings) -> None:
    task_id = create_task(factory, settings)
    v0 = active(factory, task_id)
    long_ago = utcnow() - timedelta(days=100)
    with transaction(factory) as s:
        for pid, when in (("old-silent", long_ago), ("old-answered", long_ago), ("new-silent", utcnow())):
            s.add(Prediction(id=pid, task_id=task_id, model_version_id=v0.id, text=pid, label="a", scores={},
                             created_at=when))
        s.flush()
        s.add(Feedback(prediction_id="old-answered", task_id=task_id, signal=1))
    report = apply_retention(factory, settings.models_dir, keep_versions=5, rejected_days=7, prediction_days=90)
    assert report.deleted_predictions == 1
    with factory() as s:
        assert sorted(p.id for p in s.query(Prediction)) == ["new-silent", "old-answered"]
    assert apply_retention(factory, settings.models_dir, keep_versions=5, rejected_days=7,
                           prediction_days=0).deleted_predictions == 0


def test_the_worker_applies_retention_when_it_starts(factory, settings: Settings) -> None:
    create_task(factory, settings)
    leftover = settings.models_dir / "intent" / ".tmp-crashed"
    leftover.mkdir(parents=True)
    os.utime(leftover, (time.time() - 7200,) * 2)
    worker = Worker(settings, factory=factory)
    worker.start()
    try:
        wait_until(lambda: not leftover.exists(), GIVE_UP_S, "the worker's first retention pass")
    finally:
        worker.stop(GIVE_UP_S)


def test_the_store_size_is_a_metric(client) -> None:
    client.post("/v1/tasks", json={"name": "intent", "labels": ["a", "b"]})
    text = client.get("/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("flywheel_model_store_bytes "))
    assert float(line.split()[1]) > 0
    assert "flywheel_model_store_free_bytes" in text


def test_feedback_that_arrives_while_retention_deletes_keeps_its_prediction(db_url: str, factory, settings: Settings,
                                                                           monkeypatch) -> None:
    """Retention has chosen an old prediction without feedback; feedback on it is given before the
    delete runs.  Either the feedback is refused (the prediction is gone: 404) or it is kept with
    its prediction: an acknowledged signal is never deleted by the cascade."""
    from app.runs import retention
    from app.services.clients import ADMIN
    from app.services.feedback import Signal, record_signals
    from support.racing import beside, impatient

    task_id = create_task(factory, settings)
    with transaction(factory) as s:
        s.add(Prediction(id="old-silent", task_id=task_id, model_version_id=active(factory, task_id).id,
                         text="old", label="a", scores={}, created_at=utcnow() - timedelta(days=100)))
    real_choose, racing = retention.unlabelled_before, {}

    def chosen_then_feedback(session, cutoff):
        ids = real_choose(session, cutoff)
        if "feedback" not in racing:  # the first batch: the one prediction
            assert ids == ["old-silent"]
            racing["feedback"] = beside(db_url, lambda: record_signals(impatient(db_url),
                                                                       [Signal("old-silent", ADMIN, 1)]))
        return ids

    monkeypatch.setattr(retention, "unlabelled_before", chosen_then_feedback)
    apply_retention(factory, settings.models_dir, keep_versions=5, rejected_days=7, prediction_days=90)

    [answer] = racing["feedback"].outcome()
    with factory() as s:
        predictions, feedback = s.query(Prediction).all(), s.query(Feedback).all()
    if isinstance(answer, Exception):  # it came second: the prediction was already gone
        assert "old-silent" in str(answer) and feedback == []
    else:  # it was acknowledged: it and its prediction stay
        assert [f.id for f in feedback] == [answer[0]["id"]] and [p.id for p in predictions] == ["old-silent"]


def test_feedback_is_kept_forever_by_default_and_expires_when_the_worker_is_told_to(factory, settings: Settings,
                                                                                   tmp_path: Path) -> None:
    from support import make_settings

    task_id = create_task(factory, settings)
    v0 = active(factory, task_id)
    with transaction(factory) as s:
        for pid in ("p-old", "p-new"):
            s.add(Prediction(id=pid, task_id=task_id, model_version_id=v0.id, text=pid, label="a", scores={}))
        s.flush()
        s.add(Feedback(prediction_id="p-old", task_id=task_id, signal=1, created_at=utcnow() - timedelta(days=400)))
        s.add(Feedback(prediction_id="p-new", task_id=task_id, signal=-1))
    assert Settings.model_fields["feedback_retention_days"].default == 0
    assert Worker(settings, factory=factory).apply_retention().deleted_feedback == 0

    told = make_settings(settings.data_dir, settings.database_url, settings.base_model, feedback_retention_days=365)
    report = Worker(told, factory=factory).apply_retention()
    assert report.deleted_feedback == 1
    with factory() as s:
        assert [f.prediction_id for f in s.query(Feedback)] == ["p-new"]

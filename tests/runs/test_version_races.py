"""Activation, retention's pruning and a run's promotion each decide on a task's versions under
the task's lock, so none acts on a state another one is changing: a version being activated is
not pruned (nor its files removed), a pruned version is never activated, and a rollback made
while a run finishes is not overridden by its promotion.  Each race is driven in its losing
order (tests/racing.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import transaction
from app.db.tables import ModelVersion, Task
from app.db.versions import activate, register_version
from app.core.errors import Conflict
from app.runs import execute, retention
from app.runs.lifecycle import enqueue_run
from app.runs.retention import prune_versions
from app.services.versions import activate_version
from app.core.statuses import VersionStatus
from app.process.worker import Worker
from support.learning import (FAST_POLICY, active, add_examples, add_feedback, create_task, synthetic,
                              versions)
from support.racing import beside, impatient_state


def _retired_copy(factory: sessionmaker[Session], settings: Settings, task_id: int, number: int,
                  parent: int | None) -> tuple[int, Path]:
    """A retired version whose files are a copy of version 0's."""
    path = settings.models_dir / "intent" / f"v{number}-copy"
    shutil.copytree(versions(factory, task_id)[0].path, path)
    with transaction(factory) as s:
        v = register_version(s, task=s.get(Task, task_id), path=path, sha256="x" * 64, version=number,
                             status=VersionStatus.RETIRED, parent_id=parent)
        return v.id, path


def _prunable(factory: sessionmaker[Session], settings: Settings) -> tuple[int, int, Path]:
    """Version 0 retired, version 1 retired (the one retention prunes with keep_versions=1),
    version 2 active: (task id, version 1's id, its files)."""
    task_id = create_task(factory, settings)
    v0 = active(factory, task_id)
    old, old_path = _retired_copy(factory, settings, task_id, 1, v0.id)
    newest, _ = _retired_copy(factory, settings, task_id, 2, v0.id)
    with transaction(factory) as s:
        activate(s, version=s.get(ModelVersion, newest))
    return task_id, old, old_path


def test_a_version_pruned_after_it_was_read_is_not_activated(factory, settings: Settings) -> None:
    _, old, old_path = _prunable(factory, settings)
    with transaction(factory) as s:
        loaded = s.get(ModelVersion, old)  # read while it was still retired
        assert loaded.status == VersionStatus.RETIRED
        assert prune_versions(factory, keep_versions=1, rejected_days=7)[0] == [old]
        with pytest.raises(Conflict, match="pruned"):
            activate(s, version=loaded)
    assert not old_path.exists()


def test_an_activation_while_retention_decides_is_not_pruned_under_it(db_url: str, factory, settings: Settings,
                                                                     monkeypatch) -> None:
    """Retention has read the versions and is about to prune version 1 when someone activates it.
    Either the activation is refused (or waits and then finds it pruned) or it wins and version 1
    stays active with its files; never an acknowledged activation of a pruned version."""
    _, old, old_path = _prunable(factory, settings)
    real_kept, racing = retention._kept, {}
    admin = impatient_state(db_url, settings)

    def decided_then_activate(*args, **kwargs):
        keep = real_kept(*args, **kwargs)
        assert old not in keep
        racing["activation"] = beside(db_url, lambda: activate_version(admin, task="intent", version=1))
        return keep

    monkeypatch.setattr(retention, "_kept", decided_then_activate)
    pruned, _ = prune_versions(factory, keep_versions=1, rejected_days=7)

    outcome = racing["activation"].outcome()
    with factory() as s:
        status = s.get(ModelVersion, old).status
    if isinstance(outcome, Exception):  # refused: retention went first
        assert pruned == [old] and status == VersionStatus.PRUNED and not old_path.exists()
    else:  # acknowledged: version 1 serves, with its files
        assert status == VersionStatus.ACTIVE and old_path.exists() and old not in pruned


def test_a_rollback_while_a_run_finishes_is_not_overridden_by_its_promotion(db_url: str, factory,
                                                                           settings: Settings,
                                                                           monkeypatch) -> None:
    """The run has read the active version (its parent: promote) when an admin rolls back to
    version 1.  Either the rollback waits for the promotion and then applies (version 1 active),
    or it is refused; never acknowledged and then silently replaced by the candidate."""
    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, min_new_signals=1_000_000,
                                                         max_interval_s=None))
    v0 = active(factory, task_id)
    rollback_to, _ = _retired_copy(factory, settings, task_id, 1, None)
    add_examples(factory, task_id, synthetic(60, seed=4))
    add_feedback(factory, task_id, "rain and snow today", "weather", +1)
    with transaction(factory) as s:
        enqueue_run(s, s.get(Task, task_id))
    real_active, racing = execute.active_version, {}
    admin = impatient_state(db_url, settings)

    def read_then_rollback(session, task):
        current = real_active(session, task)
        judging = session.scalar(select(ModelVersion.id).where(ModelVersion.status == VersionStatus.CANDIDATE))
        if judging is not None and "rollback" not in racing:  # in finish(), having read the parent as active
            assert current.id == v0.id
            racing["rollback"] = beside(db_url, lambda: activate_version(admin, task="intent", version=1))
        return current

    monkeypatch.setattr(execute, "active_version", read_then_rollback)
    assert Worker(settings, factory=factory).run_once() == "promoted"

    outcome = racing["rollback"].outcome()
    now_active = active(factory, task_id)
    if isinstance(outcome, Exception):  # refused while the promotion held the task
        assert now_active.id != rollback_to
    else:  # acknowledged: it is what serves, applied after the promotion
        assert now_active.id == rollback_to



@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_held_task_lock_never_holds_up_an_insert_that_references_the_task(factory, settings: Settings) -> None:
    """While a promotion, an activation or retention holds a task's lock, predictions, feedback and
    runs of that task are still written: the lock (FOR NO KEY UPDATE) does not conflict with the
    foreign-key check of an insert (KEY SHARE).  PostgreSQL only: SQLite has one writer at a time,
    so there every write waits for any other, lock or not."""
    from sqlalchemy import text

    from app.db.tables import Prediction
    from app.db.versions import lock_task

    task_id = create_task(factory, settings)
    version_id = active(factory, task_id).id
    with factory() as holder:
        lock_task(holder, task_id)
        with factory() as other, other.begin():
            other.execute(text("SET LOCAL lock_timeout = '10s'"))  # waiting at all fails the test, not hangs it
            other.add(Prediction(task_id=task_id, model_version_id=version_id, text="hi", label="billing",
                                 scores={}))
            other.flush()
        holder.rollback()

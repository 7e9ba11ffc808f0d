"""A version's files are checked against the sha256 recorded when it was stored (issue 11,
item 5): a corrupt or missing version activated at run time is logged once and never reloaded
while the last good one keeps serving; at start, a task whose active version cannot be loaded
serves its nearest loadable ancestor, and /readyz is 200 and names the bad version."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.session import transaction
from app.db.tables import ModelVersion, Task
from app.db.versions import activate, register_version
from app.serving.registry import ServedModels
from support.learning import active, create_task


def second_version(factory: sessionmaker[Session], task_id: int, settings: Settings) -> tuple[int, Path]:
    """Version 1: a copy of version 0's files, registered (with the same sha256) as its child."""
    v0 = active(factory, task_id)
    path = settings.models_dir / "intent" / "v1-copy"
    shutil.copytree(v0.path, path)
    with transaction(factory) as s:
        v1 = register_version(s, task=s.get(Task, task_id), path=path, sha256=v0.sha256, version=1, parent_id=v0.id)
        return v1.id, path


def make_active(factory: sessionmaker[Session], version_id: int) -> None:
    with transaction(factory) as s:
        activate(s, version=s.get(ModelVersion, version_id))


def corrupt(path: Path) -> None:
    head = path / "head.safetensors"
    head.write_bytes(head.read_bytes()[:-8] + b"\x00" * 8)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_bad_version_activated_at_run_time_is_not_reloaded_and_the_old_one_serves(
        factory: sessionmaker[Session], settings: Settings, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    task_id = create_task(factory, settings)
    served = ServedModels(factory, device="cpu", max_len=32)
    served.sync_once()
    v0 = served.current("intent").version
    v1_id, path = second_version(factory, task_id, settings)
    corrupt(path) if damage == "corrupt" else shutil.rmtree(path)
    make_active(factory, v1_id)
    with caplog.at_level(logging.ERROR, logger="flywheel.served"):
        for _ in range(3):
            assert served.sync_once() == 0
    assert served.current("intent").version == v0
    assert len([r for r in caplog.records if "could not load version 1" in r.getMessage()]) == 1
    assert v1_id in served.unloadable
    assert ("do not match" if damage == "corrupt" else "missing") in served.unloadable[v1_id]
    assert [s.answer.label for s in served.forward("intent", ["rain today"])]  # still answering


def test_at_start_a_task_with_a_corrupt_active_version_serves_its_parent(
        factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings)
    v1_id, path = second_version(factory, task_id, settings)
    make_active(factory, v1_id)
    corrupt(path)
    served = ServedModels(factory, device="cpu", max_len=32)
    served.sync_once()
    assert served.current("intent").version == 0 and v1_id in served.unloadable


def test_readyz_names_the_unloadable_version(settings: Settings, factory: sessionmaker[Session]) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from support import ADMIN

    task_id = create_task(factory, settings)
    v1_id, path = second_version(factory, task_id, settings)
    make_active(factory, v1_id)
    corrupt(path)
    with TestClient(create_app(settings)) as c:
        c.headers.update(ADMIN)
        r = c.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["models"] == {"intent": 0} and "do not match" in r.json()["unloadable"]["intent"]
        assert c.post("/v1/tasks/intent/predict", json={"text": "rain today"}).json()["model_version"] == 0


def test_a_run_does_not_train_from_a_corrupt_active_version(factory: sessionmaker[Session],
                                                           settings: Settings) -> None:
    """The trainer checks the parent's files too: a candidate trained (and judged) against
    corrupt weights is never made; the run fails naming the version, the store is unchanged."""
    from app.db.tables import TrainingRun
    from app.runs.lifecycle import enqueue_run
    from app.process.worker import Worker
    from support.learning import add_examples, synthetic, versions

    task_id = create_task(factory, settings)
    add_examples(factory, task_id, synthetic(20, seed=1))
    corrupt(Path(active(factory, task_id).path))
    with transaction(factory) as s:
        run, _ = enqueue_run(s, s.get(Task, task_id), "admin")
        run_id = run.id
    assert Worker(settings, factory=factory).run_once() == "failed"
    with factory() as s:
        error = s.get(TrainingRun, run_id).error
    assert "do not match" in error and "not training from it" in error, error
    assert len(versions(factory, task_id)) == 1

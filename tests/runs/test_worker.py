"""The worker on a real database with the tiny model: runs are claimed, trained, judged and
promoted; poisoned feedback is rejected; the policy schedules runs; two worker processes never
claim the same run; a worker killed mid-run has its run failed and requeued once by another."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.tables import Task, TrainingRun, utcnow
from app.db.session import transaction
from app.runs.lifecycle import claim_next, enqueue_run, fail_overlong_runs
from app.runs.schedule import retrain_due
from app.observability.worker_metrics import REGISTRY
from app.process.worker import Worker
from support.learning import (
    FAST_POLICY,
    LABELS,
    accuracy_of,
    active,
    add_client,
    add_examples,
    add_feedback,
    create_task,
    load,
    migrated,
    synthetic,
    versions,
)
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
WORKER_CMD = (
    "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s');"
    "from app.core.config import Settings; from app.process.worker import run_worker; run_worker(Settings())"
)
NEVER = {"min_new_signals": 1_000_000, "max_interval_s": None}  # the policy never schedules on its own
# A run that trains for thousands of steps (the policy's largest epochs and patience, one text
# per step), so a worker observed training is still mid-run when the test kills it.
LONG_POLICY = dict(FAST_POLICY, **NEVER, epochs=100, patience=100, batch_size=1)
GIVE_UP_S = 120.0  # how long to wait for something before failing the test; never a performance claim


def stop_worker(worker: Worker) -> None:
    """`worker.stop()`, failing the test instead of hanging if the stop never returns."""
    stopper = threading.Thread(target=worker.stop, name="stop-worker", daemon=True)
    stopper.start()
    stopper.join(GIVE_UP_S)
    assert not stopper.is_alive(), f"worker {worker.worker_id} did not stop within {GIVE_UP_S:.0f}s"


def get_run(factory: sessionmaker[Session], run_id: int) -> TrainingRun:
    with factory() as s:
        return s.get(TrainingRun, run_id)


def still_open(run: TrainingRun) -> TrainingRun:
    """The run, if it is queued or running; a run that already ended fails the test with its error."""
    if run.status not in ("queued", "running"):
        raise AssertionError(f"run {run.id} ended early as {run.status}: {run.error}")
    return run


def enqueue(factory: sessionmaker[Session], task_id: int, trigger: str = "admin") -> int:
    with transaction(factory) as s:
        run, created = enqueue_run(s, s.get(Task, task_id), trigger)
        assert created
        return run.id


@pytest.fixture
def spawn(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start real `run_worker` processes; whatever is still alive at the end is killed."""
    procs: list[subprocess.Popen] = []

    def start(db_url: str, name: str, **settings: object) -> subprocess.Popen:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "FLYWHEEL_DATA_DIR": str(tmp_path / "data"), "FLYWHEEL_DATABASE_URL": db_url,
               "FLYWHEEL_BASE_MODEL": str(tiny_model_dir), "FLYWHEEL_TORCH_THREADS": "1",
               "FLYWHEEL_MAX_SEQ_LEN": "32"}
        env.update({f"FLYWHEEL_{k.upper()}": str(v) for k, v in settings.items()})
        with (tmp_path / f"{name}.log").open("w") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen([sys.executable, "-c", WORKER_CMD], cwd=ROOT, env=env, stdout=log, stderr=log)
        proc.log_path = tmp_path / f"{name}.log"  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(GIVE_UP_S)


def started(proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"worker exited early:\n{proc.log_path.read_text()}")  # type: ignore[attr-defined]
    return "started (poll" in proc.log_path.read_text()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- in-process


def test_a_run_over_max_training_rows_trains_on_the_newest_and_says_so(
        factory: sessionmaker[Session], settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, **NEVER))
    add_examples(factory, task_id, synthetic(130, seed=4))
    run_id = enqueue(factory, task_id)
    capped = settings.model_copy(update={"max_training_rows": 100})
    assert Worker(capped, factory=factory).run_once() in ("promoted", "rejected")
    run = get_run(factory, run_id)
    assert run.data_counts["examples"] == 100 and run.data_counts["examples_left_out"] == 30
    assert run.data_counts["feedback_left_out"] == 0
    said = " ".join(caplog.messages)
    assert "FLYWHEEL_MAX_TRAINING_ROWS" in said and "30 examples" in said


def test_queued_run_is_claimed_executed_and_promoted(factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, **NEVER))
    v0 = active(factory, task_id)
    pairs = synthetic(60, seed=4)
    add_examples(factory, task_id, pairs)
    add_feedback(factory, task_id, "rain and snow today", "weather", +1)
    run_id = enqueue(factory, task_id)
    worker = Worker(settings, factory=factory)
    promoted_before = REGISTRY.get_sample_value("flywheel_worker_runs_total", {"task": "intent", "outcome": "promoted"})

    assert worker.run_once() == "promoted"
    assert worker.run_once() is None  # the queue is empty now
    promoted_after = REGISTRY.get_sample_value("flywheel_worker_runs_total", {"task": "intent", "outcome": "promoted"})
    assert promoted_after == (promoted_before or 0.0) + 1

    run = get_run(factory, run_id)
    new = active(factory, task_id)
    assert run.status == "promoted" and run.attempts == 1 and run.worker_id == worker.worker_id
    assert new.id == run.candidate_version_id and new.version == 1 and new.parent_id == v0.id
    assert {v.status for v in versions(factory, task_id) if v.id == v0.id} == {"retired"}
    assert run.gate["verdict"] == "promote" and run.gate["candidate"]["score"] >= run.gate["active"]["score"]
    assert new.metrics == run.gate and new.training_run_id == run_id
    # Its inference engines were prepared before it was activated (app/serving/engines.py).
    assert new.engines["chosen"] in {n for n, c in new.engines["candidates"].items() if c["ok"]}
    assert new.engines["texts"] >= 32  # the run's validation texts, topped up with probe texts
    assert run.data_counts["examples"] == 60 and run.data_counts["positive"] == 1
    assert run.loss_curve and run.device == "cpu" and run.duration_s > 0 and run.finished_at is not None
    assert run.watermark["example_id"] > 0 and run.progress["fraction"] == 1.0
    model, tok = load(new.path)
    assert accuracy_of(model, tok, pairs) > 0.9


def test_enqueue_returns_the_open_run_instead_of_a_second(factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings)
    first = enqueue(factory, task_id)
    with transaction(factory) as s:
        run, created = enqueue_run(s, s.get(Task, task_id), "admin")
    assert (run.id, created) == (first, False)


def test_poisoned_feedback_is_rejected_and_the_active_stays(factory: sessionmaker[Session],
                                                            settings: Settings) -> None:
    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, **NEVER))
    add_examples(factory, task_id, synthetic(60, seed=4))
    worker = Worker(settings, factory=factory)
    enqueue(factory, task_id)
    assert worker.run_once() == "promoted"
    good = active(factory, task_id)

    hostile = add_client(factory, "hostile")
    for said, label in synthetic(120, seed=9):
        wrong = LABELS[1 - LABELS.index(label)]
        add_feedback(factory, task_id, said, label, -1, client_id=hostile)  # the right answer, called wrong
        add_feedback(factory, task_id, said + " please", wrong, +1, client_id=hostile)  # the wrong one, called right
    run_id = enqueue(factory, task_id)
    assert worker.run_once() == "rejected"

    run = get_run(factory, run_id)
    assert active(factory, task_id).id == good.id
    candidate = next(v for v in versions(factory, task_id) if v.id == run.candidate_version_id)
    assert candidate.status == "rejected" and candidate.reason.endswith(run.gate["reason"])
    assert run.gate["verdict"] != "promote" and run.data_counts["negative"] > 0
    # Every answer it judged was one the model was sure of, and it called half of them wrong: the
    # noise model reads it as flipping at random, so its signals teach nothing and weigh nothing.
    hostile_noise = run.data_counts["noise"]["clients"][str(hostile)]
    assert hostile_noise["low"] <= 0.5 <= hostile_noise["high"]


def test_a_failing_run_is_failed_with_its_error_and_the_active_stays(factory: sessionmaker[Session],
                                                                     settings: Settings) -> None:
    task_id = create_task(factory, settings, policy=NEVER)
    v0 = active(factory, task_id)
    run_id = enqueue(factory, task_id)  # no examples, no feedback
    assert Worker(settings, factory=factory).run_once() == "failed"
    run = get_run(factory, run_id)
    assert run.status == "failed" and "nothing to train on" in run.error
    assert active(factory, task_id).id == v0.id and len(versions(factory, task_id)) == 1


def test_retrain_policy_decides_when_a_run_is_due(factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings, policy={"min_new_signals": 5, "min_interval_s": 600,
                                                     "max_interval_s": 3600})
    add_examples(factory, task_id, synthetic(3))
    with factory() as s:
        task = s.get(Task, task_id)
        assert retrain_due(s, task) is None  # 3 < 5 new signals, and not an hour old yet
        later = utcnow() + timedelta(seconds=3601)
        assert "3600s" in retrain_due(s, task, now=later)  # max interval: anything new will do
    add_examples(factory, task_id, synthetic(8)[3:])
    with factory() as s:
        assert "new signals" in retrain_due(s, s.get(Task, task_id))
    run_id = enqueue(factory, task_id)
    with factory() as s:
        assert retrain_due(s, s.get(Task, task_id)) is None  # one is already queued
    with transaction(factory) as s:  # it finished just now: the minimum interval holds the next one back
        s.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(status="failed"))
    with factory() as s:
        assert retrain_due(s, s.get(Task, task_id)) is None


def test_running_worker_schedules_and_promotes(factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, min_new_signals=10, min_interval_s=0))
    add_examples(factory, task_id, synthetic(60, seed=4))
    worker = Worker(settings.model_copy(update={"worker_poll_s": 0.05}), factory=factory)
    worker.start()
    try:
        def finished() -> TrainingRun | None:
            with factory() as s:
                return s.scalar(select(TrainingRun).where(TrainingRun.task_id == task_id,
                                                          TrainingRun.status.not_in(("queued", "running"))))
        run = wait_until(finished, GIVE_UP_S, "a scheduled run to finish")
    finally:
        stop_worker(worker)
    assert run.trigger == "schedule" and run.status == "promoted", run.error
    assert active(factory, task_id).id == run.candidate_version_id
    assert worker.schedule_due_runs() == []  # nothing new since that run


def test_stopping_a_worker_mid_run_puts_the_run_back_in_the_queue(factory: sessionmaker[Session],
                                                                  settings: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import app.learning.trainer as trainer

    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, **NEVER))
    add_examples(factory, task_id, synthetic(40, seed=4))
    run_id = enqueue(factory, task_id)
    worker = Worker(settings.model_copy(update={"worker_poll_s": 0.05}), factory=factory)
    training = threading.Event()
    real_step = trainer.train_step

    def step_then_hold(state, batch):
        """A real training step; then the run cannot go on until the worker is asked to stop,
        so it is certainly mid-run when the stop comes (the wait's limit only prevents a hang)."""
        loss = real_step(state, batch)
        training.set()
        worker.stop_event.wait(GIVE_UP_S)
        return loss

    monkeypatch.setattr(trainer, "train_step", step_then_hold)
    worker.start()
    try:
        wait_until(lambda: still_open(get_run(factory, run_id)) and training.is_set(), GIVE_UP_S,
                   f"the worker to take a training step on run {run_id}")
        run = get_run(factory, run_id)
        assert (run.status, run.worker_id) == ("running", worker.worker_id)
    finally:
        stop_worker(worker)
    run = get_run(factory, run_id)
    assert (run.status, run.worker_id, run.attempts) == ("queued", None, 0)
    assert "interrupted" in run.error and len(versions(factory, task_id)) == 1


def test_reaper_fails_a_silent_run_and_requeues_it_once(factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings, policy=NEVER)
    first = enqueue(factory, task_id)
    reaper = Worker(settings.model_copy(update={"heartbeat_timeout_s": 30.0}), factory=factory)

    def go_silent() -> int:
        with transaction(factory) as s:
            run_id = claim_next(s, "ghost")
            s.execute(update(TrainingRun).where(TrainingRun.id == run_id)
                      .values(heartbeat_at=utcnow().replace(year=2000)))
        return run_id

    assert go_silent() == first
    assert reaper.reap_stale_runs() == [first]
    failed = get_run(factory, first)
    second = int(re.search(r"requeued as run (\d+)", failed.error).group(1))
    again = get_run(factory, second)
    assert failed.status == "failed" and "ghost stopped heartbeating" in failed.error
    assert (again.status, again.trigger, again.attempts) == ("queued", "requeue", 1)

    assert go_silent() == second
    assert reaper.reap_stale_runs() == [second]
    assert "not requeued" in get_run(factory, second).error
    with factory() as s:
        assert not s.scalars(select(TrainingRun).where(TrainingRun.status.in_(("queued", "running")))).all()


def test_a_run_that_hangs_past_the_maximum_run_time_fails_and_its_worker_stops(
        factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run is stuck in a training step while its heartbeat goes on beating, so only the
    maximum run time can end it: the reaper fails it (not requeued), the worker sees the run
    taken away at its next heartbeat, stops at its next step, and registers no candidate."""
    import app.learning.trainer as trainer

    task_id = create_task(factory, settings, policy=dict(FAST_POLICY, **NEVER))
    add_examples(factory, task_id, synthetic(40, seed=4))
    run_id = enqueue(factory, task_id)
    quick = settings.model_copy(update={"worker_poll_s": 0.05, "heartbeat_s": 0.1, "max_run_s": 3600.0})
    worker = Worker(quick, factory=factory)
    stuck = threading.Event()
    real_step = trainer.train_step

    def hang(state, batch):
        loss = real_step(state, batch)
        stuck.set()
        wait_until(lambda: get_run(factory, run_id).status != "running", GIVE_UP_S, "the run to be failed")
        return loss

    monkeypatch.setattr(trainer, "train_step", hang)
    worker.start()
    try:
        wait_until(stuck.is_set, GIVE_UP_S, f"run {run_id} to start training")
        assert worker.reap_stale_runs() == []  # beating, and within its time
        with factory() as s:
            started = s.get(TrainingRun, run_id).started_at
        assert fail_overlong_runs(factory, max_run_s=3600.0, now=started + timedelta(seconds=3601)) == [run_id]
        wait_until(lambda: REGISTRY.get_sample_value("flywheel_worker_busy") == 0, GIVE_UP_S,
                   "the worker to give the run up")
        assert not worker.stop_event.is_set()  # it stopped the run, not itself
    finally:
        stop_worker(worker)
    run = get_run(factory, run_id)
    assert run.status == "failed" and "maximum run time" in run.error and "not requeued" in run.error
    assert len(versions(factory, task_id)) == 1
    with factory() as s:
        assert not s.scalars(select(TrainingRun).where(TrainingRun.status.in_(("queued", "running")))).all()


def test_database_refuses_a_second_open_run_for_one_task(factory: sessionmaker[Session], settings: Settings) -> None:
    from sqlalchemy.exc import IntegrityError

    task_id = create_task(factory, settings, policy=NEVER)
    enqueue(factory, task_id)
    with pytest.raises(IntegrityError):
        with transaction(factory) as s:
            s.add(TrainingRun(task_id=task_id, status="running", trigger="admin"))
    with transaction(factory) as s:  # a finished run beside the open one is fine
        s.add(TrainingRun(task_id=task_id, status="failed", trigger="admin"))


# SKIP LOCKED is PostgreSQL's; on SQLite one writer at a time is the rule, so only PostgreSQL runs it.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_skip_locked_gives_concurrent_claimers_different_runs(db_url: str, factory: sessionmaker[Session],
                                                               settings: Settings) -> None:
    ids = [enqueue(factory, create_task(factory, settings, name=f"t{i}", policy=NEVER)) for i in range(2)]
    with factory() as a, factory() as b:
        with a.begin():
            got_a = claim_next(a, "a")  # a holds its row lock until it commits
            with b.begin():
                got_b = claim_next(b, "b")
    assert sorted([got_a, got_b]) == ids


# ---------------------------------------------------------------- real processes


# Several workers share PostgreSQL; SQLite runs one worker, so only PostgreSQL runs it.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_worker_processes_never_claim_the_same_run(db_url: str, factory: sessionmaker[Session],
                                                       settings: Settings, spawn) -> None:
    # No data: each run fails fast once claimed.  One open run per task is the rule, so 24 tasks.
    task_ids = [create_task(factory, settings, name=f"t{i}", policy=NEVER) for i in range(24)]
    workers = [spawn(db_url, f"w{i}", worker_poll_s=0.02, heartbeat_s=0.5) for i in range(2)]
    wait_until(lambda: all(started(p) for p in workers), GIVE_UP_S, "both workers to start")

    def running_claimers() -> set[str]:
        for p in workers:
            started(p)  # a worker that died fails the test now
        with factory() as s:
            return set(s.scalars(select(TrainingRun.worker_id).where(TrainingRun.status == "running")))

    def all_done() -> bool:
        for p in workers:
            started(p)
        with factory() as s:
            return not s.scalars(select(TrainingRun.id).where(TrainingRun.status.in_(("queued", "running")))).all()

    # A barrier made of a table lock: executing a run starts by reading the task's active version,
    # so while this transaction holds model_versions, a worker that has claimed a run waits inside
    # it and, running one run at a time, claims no other.  The other worker has to claim the next
    # run, so each has claimed one before any run can end.
    barrier = factory()
    try:
        barrier.execute(text("LOCK TABLE model_versions IN ACCESS EXCLUSIVE MODE"))
        with transaction(factory) as s:  # straight into the queue: 24 runs at once, all up for grabs together
            s.add_all([TrainingRun(task_id=task_id, status="queued", trigger="admin") for task_id in task_ids])
        holders = wait_until(lambda: c if len(c := running_claimers()) == 2 else None, GIVE_UP_S,
                             "each worker to hold a claimed run while model_versions is locked")
    finally:
        barrier.rollback()
        barrier.close()

    wait_until(all_done, GIVE_UP_S, "every run to be handled")
    claims = [[(who, int(n)) for who, n in re.findall(r"worker (\S+) claimed run (\d+)", p.log_path.read_text())]
              for p in workers]
    claimed = [[n for _, n in c] for c in claims]
    with factory() as s:
        runs = s.scalars(select(TrainingRun).order_by(TrainingRun.id)).all()
    assert all(claimed), f"runs claimed per worker: {[len(c) for c in claimed]}; both should have claimed some"
    assert not set(claimed[0]) & set(claimed[1]), "a run was claimed by both workers"
    assert sorted(claimed[0] + claimed[1]) == [r.id for r in runs], "a run was claimed twice, or never"
    assert all(r.attempts == 1 and r.status == "failed" for r in runs)
    assert {r.id: r.worker_id for r in runs} == {n: who for c in claims for who, n in c}  # DB agrees with the logs
    assert holders == {c[0][0] for c in claims}  # the barrier held each worker's first claim


def test_killed_worker_run_is_failed_and_requeued_once_by_another(db_url: str, factory: sessionmaker[Session],
                                                                  settings: Settings, spawn) -> None:
    task_id = create_task(factory, settings, policy=LONG_POLICY)
    v0 = active(factory, task_id)
    add_examples(factory, task_id, synthetic(80, seed=4))
    first = enqueue(factory, task_id)
    reaper = Worker(settings.model_copy(update={"heartbeat_timeout_s": 1.0}), factory=factory)

    def kill_mid_run(run_id: int, name: str) -> None:
        proc = spawn(db_url, name, worker_poll_s=0.05, heartbeat_s=0.2, heartbeat_timeout_s=600)
        wait_until(lambda: started(proc) and still_open(get_run(factory, run_id)).progress.get("step", 0) > 0,
                   GIVE_UP_S, f"{name} to be training run {run_id}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(GIVE_UP_S)
        run = get_run(factory, run_id)
        assert run.status == "running"  # nobody has told the database yet
        assert 0 < run.progress["step"] < run.progress["total_steps"]  # killed mid-run

    kill_mid_run(first, "doomed")
    assert wait_until(reaper.reap_stale_runs, GIVE_UP_S, "the reaper to fail the run") == [first]
    failed = get_run(factory, first)
    assert failed.status == "failed" and "stopped heartbeating" in failed.error
    second = int(re.search(r"requeued as run (\d+)", failed.error).group(1))
    assert (get_run(factory, second).status, get_run(factory, second).trigger) == ("queued", "requeue")
    assert active(factory, task_id).id == v0.id

    kill_mid_run(second, "doomed-again")
    assert wait_until(reaper.reap_stale_runs, GIVE_UP_S, "the reaper to fail the requeued run") == [second]
    assert "not requeued" in get_run(factory, second).error
    with factory() as s:
        assert not s.scalars(select(TrainingRun).where(TrainingRun.status.in_(("queued", "running")))).all()
    assert active(factory, task_id).id == v0.id
    assert [v.status for v in versions(factory, task_id)] == ["active"]


# ---------------------------------------------------------------- a full disk

SIZE_LIMITED_RUN = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
from app.core.config import Settings
from app.process.worker import Worker
print("STATUS", Worker(Settings()).run_once(), flush=True)
"""


def test_a_run_that_cannot_write_its_candidate_fails_cleanly(tmp_path: Path, pg_database: str | None,
                                                             tiny_model_dir: Path) -> None:
    """The worker may write no file past 50 kB (the tiny encoder is about 115 kB), as on a nearly
    full disk: the run ends `failed` naming the write that failed, no candidate is registered,
    nothing half-written is left in the model store, and the active version is untouched.
    (PostgreSQL: the database server writes its own files, outside the limit.)"""
    from support import truncate_all, make_settings, postgres_or_skip

    url = postgres_or_skip(pg_database)
    settings = make_settings(tmp_path / "data", url, tiny_model_dir)
    factory = migrated(url)
    try:
        task_id = create_task(factory, settings, policy=dict(FAST_POLICY, **NEVER))
        add_examples(factory, task_id, synthetic(40, seed=3))
        v0 = active(factory, task_id)
        store_before = sorted(p.name for p in (settings.models_dir / "intent").iterdir())
        run_id = enqueue(factory, task_id)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "FLYWHEEL_DATA_DIR": str(settings.data_dir), "FLYWHEEL_DATABASE_URL": url,
               "FLYWHEEL_BASE_MODEL": str(tiny_model_dir), "FLYWHEEL_TORCH_THREADS": "1", "FLYWHEEL_MAX_SEQ_LEN": "32",
               "FLYWHEEL_USER_HASH_KEY": settings.user_hash_key or ""}
        done = subprocess.run([sys.executable, "-c", SIZE_LIMITED_RUN], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=GIVE_UP_S)
        assert "STATUS failed" in done.stdout, done.stdout + done.stderr
        run = get_run(factory, run_id)
        assert run.status == "failed" and "File too large" in (run.error or ""), run.error
        assert run.candidate_version_id is None
        assert [v.id for v in versions(factory, task_id)] == [v0.id]
        assert active(factory, task_id).id == v0.id
        assert sorted(p.name for p in (settings.models_dir / "intent").iterdir()) == store_before
        assert not list(settings.models_dir.rglob(".tmp-*"))
    finally:
        factory.kw["bind"].dispose()
        truncate_all(url)


def test_an_undecided_candidate_gets_a_second_look_on_the_rows_that_came_after_it(
        factory: sessionmaker[Session], settings: Settings) -> None:
    """Run 1 has too few held-out rows to decide on its candidate.  Run 2's own candidate has too
    few as well, but run 1's candidate is judged again on every row neither it nor the active has
    trained on (its held-out rows and all that came after it): enough to promote it."""
    policy = dict(FAST_POLICY, **NEVER, gate_min_rows=30, gate_tolerance=1.0, max_recall_drop=1.0,
                  feedback_validation_fraction=0.05)
    task_id = create_task(factory, settings, policy=policy)
    v0 = active(factory, task_id)
    pairs = synthetic(120, seed=12)

    def signals(batch: list[tuple[str, str]]) -> None:  # the right answer shown, and a +1 on it
        for said, label in batch:
            add_feedback(factory, task_id, said, label, +1)

    signals(pairs[:40])
    first = enqueue(factory, task_id)
    worker = Worker(settings, factory=factory)
    assert worker.run_once() == "rejected"
    run1 = get_run(factory, first)
    assert run1.gate["verdict"] == "inconclusive" and "second_look" not in run1.gate
    signals(pairs[40:])
    second = enqueue(factory, task_id)
    assert worker.run_once() == "rejected"  # its own candidate: still too few held-out rows
    run2 = get_run(factory, second)
    look = run2.gate["second_look"]
    assert run2.gate["verdict"] == "inconclusive"
    assert look["version"] == 1 and look["look"] == 2 and look["decision"] == "promote"
    assert look["comparison"]["rows"] >= 80  # the 80 signals after run 1, and run 1's held-out ones
    assert look["confidence"] == pytest.approx(0.975)  # a second look spends half the error the first did
    now = active(factory, task_id)
    assert now.id == run1.candidate_version_id and now.parent_id == v0.id
    assert now.metrics["looks"] == 2 and now.metrics["look_2"]["decision"] == "promote"
    assert {v.version: v.status for v in versions(factory, task_id)} == {0: "retired", 1: "active", 2: "rejected"}

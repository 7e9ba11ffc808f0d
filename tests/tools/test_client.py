"""app.tools.client.FlywheelClient against the real app over real HTTP (uvicorn in a thread, tiny
BERT, SQLite and PostgreSQL): admin and client calls, the 409 join of an open run, errors
with their status, following a run to its verdict, and `flywheel retrain` on top of it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from app.tools.client import Answer, ApiError, FlywheelClient
from app.core.config import Settings
from support import ADMIN_TOKEN

LABELS = ["billing", "card_lost", "weather"]
TEXTS = ["I lost my credit card", "will it rain tomorrow", "I was charged twice", "my wallet was stolen",
         "sunny and hot today"]
WAIT_S = 120  # upper bound to give up waiting, not a performance claim


@pytest.fixture
def api(live: str) -> Iterator[FlywheelClient]:
    with FlywheelClient(live, ADMIN_TOKEN, timeout_s=60) as c:
        yield c


def make_task(api: FlywheelClient, name: str = "tickets", **fields: object) -> dict:
    return api.create_task({"name": name, "labels": LABELS, **fields})


def test_answer_reads_feedback_wanted_and_defaults_to_false() -> None:
    asked = Answer.from_json({"id": "p1", "label": "weather", "scores": {"weather": 0.6}, "feedback_wanted": True})
    assert asked == Answer("p1", "weather", {"weather": 0.6}, True)
    assert Answer.from_json({"id": "p2", "label": "billing"}).feedback_wanted is False  # an older server


def test_admin_and_client_calls_round_trip(api: FlywheelClient) -> None:
    created = make_task(api)
    assert created["name"] == "tickets" and created["active_version"]["version"] == 0
    api.wait_served("tickets", 0, timeout_s=WAIT_S)
    assert api.served_versions() == {"tickets": 0}
    key = api.create_client("helpdesk", ["tickets"])
    versions, answers = api.predict("tickets", TEXTS, key=key, batch=2)  # three requests
    assert versions == [0] * len(TEXTS) and len(answers) == len(TEXTS)
    assert len({a.id for a in answers}) == len(TEXTS)
    assert all(a.label in LABELS and set(a.scores) == set(LABELS) for a in answers)
    assert all(isinstance(a.feedback_wanted, bool) for a in answers)
    api.feedback(answers[0].id, {"signal": 1}, key=key)
    fix = next(lab for lab in LABELS if lab != answers[1].label)
    api.feedback(answers[1].id, {"signal": -1, "correction": fix}, key=key)
    counts = api.task("tickets")["counts"]
    assert counts["predictions"] == len(TEXTS)
    assert counts["feedback"]["positive"] == 1 and counts["feedback"]["corrections"] == 1
    [v0] = api.versions("tickets")
    assert v0["version"] == 0 and v0["status"] == "active"
    assert 'flywheel_feedback_total{signal="correction",task="tickets"} 1.0' in api.metrics()


def test_retrain_joins_the_run_already_open(api: FlywheelClient) -> None:
    make_task(api)
    run_id, created = api.retrain("tickets")
    assert created
    assert api.retrain("tickets") == (run_id, False)  # the server's 409 names the open run
    assert api.run(run_id)["status"] == "queued"
    seen: list[str] = []
    with pytest.raises(TimeoutError, match=f"run {run_id} still queued"):  # no worker in this test
        api.wait_run(run_id, timeout_s=0.2, poll_s=0.05, on_poll=lambda run: seen.append(run["status"]))
    assert seen and set(seen) == {"queued"}


def test_errors_carry_the_status_and_the_problem_detail(api: FlywheelClient, live: str) -> None:
    with pytest.raises(ApiError) as err:
        api.task("nope")
    assert err.value.status == 404 and err.value.path == "/v1/tasks/nope"
    assert "nope" in (err.value.detail or "") and err.value.body["type"].endswith("unknown-task")
    with pytest.raises(ApiError) as err:
        api.retrain("nope")  # a 404, not mistaken for a run to join
    assert err.value.status == 404
    make_task(api)
    with pytest.raises(ApiError) as err:
        make_task(api)  # a 409 without a run in it
    assert err.value.status == 409
    with pytest.raises(ApiError) as err:
        api.predict("tickets", ["hello"], key="not-a-key")
    assert err.value.status == 401
    with FlywheelClient(live) as anonymous, pytest.raises(ApiError) as err:
        anonymous.versions("tickets")
    assert err.value.status == 401


def test_wait_run_follows_a_worker_to_the_verdict_then_activate_rolls_back(api: FlywheelClient,
                                                                            settings: Settings) -> None:
    from app.process.worker import Worker

    make_task(api, policy={"epochs": 6, "learning_rate": 3e-3, "batch_size": 8, "patience": 6,
                           "gate_tolerance": 1.0, "max_recall_drop": 1.0, "gate_min_rows": 1})
    key = api.create_client("helpdesk", ["tickets"])
    gold = {"card": "card_lost", "rain": "weather", "bill": "billing"}
    texts = [f"{word} {filler} {i}" for i in range(8) for word in gold for filler in ("please", "help")]
    _, answers = api.predict("tickets", texts, key=key)
    for text, answer in zip(texts, answers):
        right = gold[text.split()[0]]
        api.feedback(answer.id, {"signal": 1} if answer.label == right else {"signal": -1, "correction": right},
                     key=key)
    run_id, created = api.retrain("tickets")
    assert created
    verdict: list[str | None] = []
    worker = threading.Thread(target=lambda: verdict.append(Worker(settings).run_once()))
    worker.start()
    try:
        polls: list[dict] = []
        run = api.wait_run(run_id, timeout_s=WAIT_S, poll_s=0.1, on_poll=polls.append)
    finally:
        worker.join(WAIT_S)
    assert run["status"] == verdict[0] == "promoted", run.get("gate")
    assert polls[-1] is run and polls[0]["status"] in ("queued", "running", "promoted")
    api.wait_served("tickets", 1, timeout_s=WAIT_S)
    assert {v["version"]: v["status"] for v in api.versions("tickets")} == {0: "retired", 1: "active"}
    assert api.activate("tickets", 0)["status"] == "active"
    api.wait_served("tickets", 0, timeout_s=WAIT_S)
    assert api.predict("tickets", ["card please"], key=key)[0] == [0]


def test_the_retrain_command_queues_joins_and_follows(live: str, api: FlywheelClient, settings: Settings) -> None:
    from app.cli import cli
    from app.process.worker import Worker

    make_task(api)
    runner = CliRunner()
    env = {"FLYWHEEL_ADMIN_TOKEN": ADMIN_TOKEN}
    first = runner.invoke(cli, ["retrain", "tickets", "--url", live], env=env)
    again = runner.invoke(cli, ["retrain", "tickets", "--url", live], env=env)
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    queued = re.search(r"run (\d+) queued for task 'tickets'", " ".join(first.output.split()))
    joined = re.search(r"run (\d+) already queued or running for task 'tickets'", " ".join(again.output.split()))
    assert queued and joined and queued.group(1) == joined.group(1), first.output + again.output
    refused = runner.invoke(cli, ["retrain", "nope", "--url", live], env=env)
    assert refused.exit_code == 1 and "retrain refused (404)" in refused.output, refused.output
    done = threading.Event()

    def work() -> None:  # a worker polling for queued runs until the command has returned
        w = Worker(settings)
        while not done.wait(0.05):
            w.run_once()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        followed = runner.invoke(cli, ["retrain", "tickets", "--url", live, "--wait"], env=env)
    finally:
        done.set()
        worker.join(WAIT_S)
    verdict = re.search(r"run (\d+): (\w+)", followed.output)
    assert verdict, followed.output
    run = api.run(int(verdict.group(1)))
    assert verdict.group(2) == run["status"] == "failed", followed.output  # no feedback: nothing to train on
    assert followed.exit_code == 1 and "nothing to train on" in followed.output


def test_versions_follows_the_pages(api: FlywheelClient, settings: Settings) -> None:
    """Three versions, one a page: the client gathers all three, in order (the two added here
    are rows only; nothing loads them)."""
    from app.db.session import make_engine, make_sessionmaker, transaction
    from app.db.tables import Task
    from app.db.versions import register_version

    make_task(api)
    [v0] = api.versions("tickets")
    engine = make_engine(settings.db_url)
    try:
        with transaction(make_sessionmaker(engine)) as s:
            task = s.query(Task).filter(Task.name == "tickets").one()
            for n in (1, 2):
                register_version(s, task=task, path=settings.models_dir / "tickets" / f"copy-{n}", sha256=v0["sha256"],
                                 version=n, parent_id=v0["id"])
    finally:
        engine.dispose()
    assert [v["version"] for v in api.versions("tickets", page_size=1)] == [0, 1, 2]

"""One arm end to end against a real service, and all arms in turn.

Per arm: start a fresh service, create the task (zero-shot version 0) with a policy under
which the worker never retrains on its own, create the users' clients and an evaluator
client, and score version 0 on the test set.  Then, each round: the users predict their
slice of the traffic and send their signals; the simulator asks for a retrain, waits for the
gate's verdict and for the API to serve the active version, and scores it on the test set.
The evaluator's predictions never get feedback.

With several seeds every arm runs once per seed (seed, seed+1, …), each against a fresh
service; the traffic and test texts stay the same, the seed varies the users' draws, the
adversary's texts and training's seed; the arm's `ArmResult` holds the runs and their means.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from app.core.policy import Policy
from app.core.statuses import RunStatus
from app.kinds import KindUser, get_kind
from app.tools.client import FlywheelClient
from app.tools.simulate.arms import SIM_EPOCHS, Arm, distinct
from app.tools.simulate.data import Example, Scenario
from app.tools.simulate.result import ArmResult, GateOutcome, RoundResult, RunRecord, Score, SecondLook, SeedRun, Sent
from app.tools.simulate.server import Service, ServiceConfig
from app.tools.simulate.users import ADVERSARY, TRUSTED, Draws, assign_clients, client_name, decide

TASK = "sim"
REQUEST_TEXTS = 64  # texts per predict request; the server's default FLYWHEEL_MAX_TEXTS_PER_REQUEST


@dataclass
class Options:
    rounds: int
    traffic_per_round: int
    seed: int = 0  # the first seed; seed + k for the k-th of `seeds` runs per arm
    seeds: int = 1
    honest_users: int = 3
    training: Policy = field(default_factory=lambda: Policy(epochs=SIM_EPOCHS))  # the task's policy
    base_model: str | None = None
    torch_threads: int = 0
    max_seq_len: int | None = None
    run_timeout_s: float = 3600.0
    score_rejected: bool = True  # also score a rejected candidate (activated briefly, then rolled back)
    keep_data: Path | None = None  # keep each arm's data directory under this folder

    def policy(self) -> dict[str, Any]:
        """The task's policy: the training and gate knobs given, and retraining only when the
        simulator asks for it."""
        return {**self.training.to_dict(), "min_new_signals": 1_000_000_000, "min_interval_s": 0,
                "max_interval_s": None}


Status = Callable[[str], None]
RoundDone = Callable[[RoundResult], None]


def _quiet(_: str) -> None:
    pass


def score(api: FlywheelClient, key: str, test: Sequence[Example], expect_version: int, *, kind: KindUser,
          labels: Sequence[str]) -> Score:
    """The served version's metrics on the test set, from the API's answers, as the task's kind
    scores them (`labels`: the task's).  All answers must come from `expect_version` (a swap half
    way would mix two models)."""
    versions, answers = api.predict(TASK, [e.text for e in test], key=key, batch=REQUEST_TEXTS)
    if set(versions) != {expect_version}:
        raise RuntimeError(f"test set scored by versions {sorted(set(versions))}, expected {expect_version}")
    m = kind.score_answers(labels, [e.label for e in test], [a.label for a in answers])
    return Score(expect_version, m.main, m.second, m.error)


def gate_outcome(run: dict[str, Any]) -> GateOutcome:
    """What the server's run record says the gate decided."""
    gate = run.get("gate") or {}
    cand, act = gate.get("candidate") or {}, gate.get("active") or {}
    look = gate.get("second_look")  # an earlier undecided candidate judged again in this run
    return GateOutcome(
        run_id=run["id"], status=run["status"], verdict=gate.get("verdict"),
        reason=gate.get("reason") or run.get("error"), candidate_score=cand.get("score"),
        active_score=act.get("score"), validation_rows=cand.get("n"),
        second_look=SecondLook(look.get("version"), look.get("look"), look.get("decision")) if look else None)


def run_record(run: dict[str, Any]) -> RunRecord:
    """The parts of the server's run record a result keeps."""
    return RunRecord(id=run["id"], status=run["status"], duration_s=run.get("duration_s"),
                     data_counts=run.get("data_counts"), loss_curve=run.get("loss_curve"), error=run.get("error"),
                     candidate_version_id=run.get("candidate_version_id"))


class ArmRun:
    """The state of one arm while it runs against its service."""

    def __init__(self, api: FlywheelClient, scenario: Scenario, arm: Arm, options: Options, status: Status) -> None:
        self.api, self.scenario, self.arm, self.options, self.status = api, scenario, arm, options, status
        c = arm.conditions
        self.owners = assign_clients(len(scenario.traffic), honest=options.honest_users,
                                     adversarial_share=c.adversarial_share, careless_share=c.careless_share,
                                     trusted_share=c.trusted_share, seed=options.seed)
        self.keys: dict[int, str] = {}
        self.eval_key = ""
        self.signals_total = 0
        self.kind = get_kind(scenario.kind)
        self.labels = list(scenario.labels)  # the task's stored labels, once created

    def test_score(self, version: int) -> Score:
        return score(self.api, self.eval_key, self.scenario.test, version, kind=self.kind, labels=self.labels)

    def setup(self) -> Score:
        c, o = self.arm.conditions, self.options
        self.status("creating the task (zero-shot version 0)")
        created = self.api.create_task({
            "name": TASK, "kind": self.scenario.kind, **self.scenario.task, "lambda": c.lambda_data,
            "feedback_loss": c.feedback_loss, "finetune": c.finetune,
            "policy": {**o.policy(), "feedback_budget": c.feedback_budget},
        })
        self.labels = list(created["labels"])
        for owner in sorted(set(self.owners)):
            self.keys[owner] = self.api.create_client(client_name(owner), [TASK], trusted=owner == TRUSTED)
        self.eval_key = self.api.create_client("evaluator", [TASK])
        self.api.wait_served(TASK, 0)
        self.status("scoring zero-shot")
        return self.test_score(0)

    def send_traffic(self, start: int, stop: int) -> tuple[Sent, float]:
        """Round's users predict their texts and give feedback: what they sent, and the share of
        right answers they saw."""
        labels, c, seed = self.labels, self.arm.conditions, self.options.seed
        sent = Sent()
        right = 0
        by_owner: dict[int, list[int]] = {}
        for i in range(start, stop):
            by_owner.setdefault(self.owners[i], []).append(i)
        for owner, idx in sorted(by_owner.items()):
            self.status(f"{client_name(owner)} predicting {len(idx)} texts")
            _, answers = self.api.predict(TASK, [self.scenario.traffic[i].text for i in idx], key=self.keys[owner],
                                          batch=REQUEST_TEXTS)
            self.status(f"{client_name(owner)} giving feedback")
            for i, answer in zip(idx, answers):
                gold = self.scenario.traffic[i].label
                right += self.kind.is_right(labels, answer.label, gold)
                sent.asked += answer.feedback_wanted
                draws = Draws.for_text(seed, i)
                sigs = decide(answer.label, gold, behaviour=c.behaviour, labels=labels, kind=self.kind,
                              draws=draws, owner=owner, wanted=answer.feedback_wanted)
                if not sigs:
                    sent.not_sent += 1
                for sig in sigs:
                    self.api.feedback(answer.id, sig.body(self.kind), key=self.keys[owner])
                    if sig.correction is not None:
                        sent.corrections += 1
                    elif sig.signal > 0:
                        sent.positive += 1
                    else:
                        sent.negative += 1
                    sent.from_adversary += owner == ADVERSARY
        self.signals_total += sent.signals
        return sent, right / max(stop - start, 1)

    def retrain(self) -> dict[str, Any]:
        run_id, _ = self.api.retrain(TASK)  # joins a run already open

        def on_poll(run: dict[str, Any]) -> None:
            p = run.get("progress") or {}
            loss = p.get("loss")
            where = f" epoch {p.get('epoch')}/{p.get('epochs')} step {p.get('step')}/{p.get('total_steps')}" if p else ""
            self.status(f"run {run_id} {run['status']}{where}" + (f" loss {loss:.4f}" if loss is not None else ""))

        return self.api.wait_run(run_id, timeout_s=self.options.run_timeout_s, on_poll=on_poll)

    def score_version(self, version: int) -> Score:
        self.status(f"waiting for the API to serve version {version}")
        self.api.wait_served(TASK, version)
        self.status(f"scoring version {version}")
        return self.test_score(version)

    def score_rejected(self, run: dict[str, Any], active: int) -> Score | None:
        """What the gate kept out: activate the rejected candidate, score it, roll back to `active`.
        The candidate ends up `retired` rather than `rejected` in the registry; nothing else changes."""
        version_id = run.get("candidate_version_id")
        number = next((v["version"] for v in self.api.versions(TASK) if v["id"] == version_id), None)
        if number is None:
            return None
        self.api.activate(TASK, number)
        try:
            return self.score_version(number)
        finally:
            self.api.activate(TASK, active)

    def round(self, r: int) -> RoundResult:
        T = self.options.traffic_per_round
        started = time.monotonic()
        sent, traffic_accuracy = self.send_traffic((r - 1) * T, r * T)
        run = self.retrain()
        active = self.api.task(TASK)["active_version"]["version"]
        rejected = None
        if run["status"] == RunStatus.REJECTED and self.options.score_rejected:
            rejected = self.score_rejected(run, active)
        s = self.score_version(active)
        candidate = s if run["status"] == RunStatus.PROMOTED else rejected
        counts = run.get("data_counts") or {}
        return RoundResult(
            round=r, accuracy=s.accuracy, macro_f1=s.macro_f1, mae=s.mae, version=s.version,
            candidate_accuracy=candidate.accuracy if candidate else None,
            candidate_mae=candidate.mae if candidate else None,
            signals_total=self.signals_total,
            signals_used=sum(int(counts.get(k, 0)) for k in ("positive", "negative", "corrections")),
            gate=gate_outcome(run), traffic_accuracy=traffic_accuracy, sent=sent, run=run_record(run),
            seconds=round(time.monotonic() - started, 1))


def run_arm(scenario: Scenario, arm: Arm, options: Options, *, status: Status = _quiet,
            on_round: RoundDone | None = None, data_name: str | None = None) -> SeedRun:
    """Run one arm with `options.seed` against a fresh service; the service is stopped (and its
    data removed unless `options.keep_data`; then it is kept in `data_name`, default the arm's
    name, under it) whatever happens.  `on_round` gets each finished round."""
    record = SeedRun(arm.describe(), arm.conditions, seed=options.seed)
    started = time.monotonic()
    if options.keep_data is not None:
        data_dir = Path(options.keep_data) / (data_name or arm.name.replace("+", "-plus-"))
        shutil.rmtree(data_dir, ignore_errors=True)
        record.data_dir = str(data_dir)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix=f"flywheel-sim-{arm.name.replace('+', '-')}-"))
    config = ServiceConfig(data_dir=data_dir, base_model=options.base_model, torch_threads=options.torch_threads,
                           max_seq_len=options.max_seq_len, seed=options.seed)
    try:
        status("starting the service")
        service = Service(config)
        with service:
            with FlywheelClient(service.url, service.admin_token, timeout_s=600.0) as api:
                state = ArmRun(api, scenario, arm, options, status)
                record.zero_shot = state.setup()
                for r in range(1, options.rounds + 1):
                    service.check_alive()
                    record.rounds.append(state.round(r))
                    if on_round is not None:
                        on_round(record.rounds[-1])
    finally:
        if options.keep_data is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        record.seconds = time.monotonic() - started
    return record


def seed_label(arm: str, seed: int, seeds: int) -> str:
    """How progress names one run: the arm, and its seed when there are several."""
    return f"{arm} seed {seed}" if seeds > 1 else arm


def run_all(scenario: Scenario, arms: list[Arm], options: Options, *,
            status: Callable[[str, str], None] | None = None,
            on_round: Callable[[str, RoundResult | None], None] | None = None,
            on_arm: Callable[[dict[str, ArmResult]], None] | None = None) -> dict[str, ArmResult]:
    """Every arm in turn, each once per seed (one at a time: training takes all cores); arms with
    the same conditions as an earlier one are not run again but point at it with `same_as`.

    `status(label, text)` sees every step and `on_round(label, result)` every finished round
    (None: a round of an arm not run again), where the label names the arm (and the seed
    when there are several).  `on_arm` gets the results so far after each arm (to save partial
    results)."""
    same = distinct(arms)
    seeds = max(1, options.seeds)
    results: dict[str, ArmResult] = {}
    for arm in arms:
        if same[arm.name] != arm.name:  # identical conditions describe themselves identically
            results[arm.name] = replace(results[same[arm.name]], same_as=same[arm.name])
            if status is not None:
                status(arm.name, f"same conditions as {same[arm.name]}: not run again")
            for _ in range(options.rounds * seeds):
                if on_round is not None:
                    on_round(arm.name, None)
            continue
        per_seed = []
        for k in range(seeds):
            seed = options.seed + k
            label = seed_label(arm.name, seed, seeds)
            folder = arm.name.replace("+", "-plus-")
            record = run_arm(
                scenario, arm, replace(options, seed=seed, seeds=1),
                on_round=partial(on_round, label) if on_round else None,
                status=partial(status, label) if status else _quiet,
                data_name=f"{folder}/seed-{seed}" if seeds > 1 else folder)
            per_seed.append(record)
        results[arm.name] = ArmResult(per_seed)
        if on_arm is not None:
            on_arm(results)
    return results

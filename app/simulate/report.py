"""A report a person can read without the code: `report.md` and PNG plots, from the result JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.simulate.checks import run_checks

MAIN_ARMS = ("supervised", "feedback+corrections", "feedback", "ignore-negatives", "signed", "lora")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}"


def _distinct(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Arms that were run (not those that only point at an identical earlier arm)."""
    return {n: a for n, a in arms.items() if not a.get("same_as")}


def _verdicts(arm: dict[str, Any]) -> str:
    letter = {"promoted": "P", "rejected": "R", "failed": "F"}
    return "".join(letter.get(g["status"], "?") for g in arm["gate_by_round"])


def _noise_levels(arms: dict[str, dict[str, Any]]) -> list[tuple[float, str]]:
    from app.simulate.checks import noise_arm

    levels = sorted({a["conditions"]["behaviour"]["noise"] for a in arms.values()})
    out = []
    for level in levels:
        name = noise_arm(arms, level)
        if name is not None:
            out.append((level, name))
    return out


def _lambda_levels(arms: dict[str, dict[str, Any]]) -> list[tuple[float, str]]:
    out = [(a["conditions"]["lambda_data"], n) for n, a in arms.items() if n.startswith("lambda-")]
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


def plot_accuracy_by_round(result: dict[str, Any], path: Path, metric: str = "accuracy") -> None:
    import matplotlib.pyplot as plt

    arms = _distinct(result["arms"])
    styles = _line_styles(list(arms))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, arm in arms.items():
        ys = [arm[f"zero_shot_{metric}"], *arm[f"{metric}_by_round"]]
        ax.plot(range(len(ys)), ys, label=name, **styles[name])
    label = "accuracy" if metric == "accuracy" else "macro-F1"
    _style(ax, "round (0 = zero-shot, before any feedback)", f"test {label}",
           f"{result['dataset']['name']}: test {label} of the active version after each round")
    ax.set_xticks(range(result["sizes"]["rounds"] + 1))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_by_signals(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    arms = _distinct(result["arms"])
    styles = _line_styles(list(arms))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, arm in arms.items():
        ax.plot([0, *arm["signals_by_round"]], [arm["zero_shot_accuracy"], *arm["accuracy_by_round"]],
                label=name, **styles[name])
    _style(ax, "signals sent so far (+1, -1 and corrections)", "test accuracy",
           f"{result['dataset']['name']}: test accuracy against the number of signals")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(result: dict[str, Any], path: Path, levels: list[tuple[float, str]], what: str) -> None:
    """Left: accuracy by round per level; right: last-round accuracy against the level."""
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for level, name in levels:
        arm = arms[name]
        ys = [arm["zero_shot_accuracy"], *arm["accuracy_by_round"]]
        left.plot(range(len(ys)), ys, marker="o", label=f"{what} {level:g} ({name})")
    _style(left, "round (0 = zero-shot)", "test accuracy", f"accuracy by round, per {what}")
    left.set_xticks(range(result["sizes"]["rounds"] + 1))
    left.legend(fontsize=8)
    xs = [lv for lv, _ in levels]
    right.plot(xs, [arms[n]["accuracy_by_round"][-1] for _, n in levels], marker="o", linewidth=2)
    right.axhline(arms[levels[0][1]]["zero_shot_accuracy"], color="grey", linestyle="--", label="zero-shot")
    _style(right, what, "test accuracy after the last round", f"last round, against {what}")
    right.legend(fontsize=8)
    fig.suptitle(result["dataset"]["name"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_signed(result: dict[str, Any], path: Path) -> None:
    """Training loss of every epoch of every run, signed against bounded, and their accuracy."""
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in ("feedback", "signed", "robust"):
        if name not in arms or arms[name].get("same_as"):
            continue
        losses = [e["train_loss"] for rnd in arms[name]["rounds"] for e in (rnd["run"].get("loss_curve") or [])]
        left.plot(range(1, len(losses) + 1), losses, marker=".",
                  label=f"{name} ({arms[name]['conditions']['feedback_loss']} loss)")
        ys = [arms[name]["zero_shot_accuracy"], *arms[name]["accuracy_by_round"]]
        line, = right.plot(range(len(ys)), ys, marker="o", label=f"{name}: active version")
        cand = [(r, a) for r, a in enumerate(arms[name].get("candidate_accuracy_by_round") or [], start=1)
                if a is not None]
        if cand:
            right.plot(*zip(*cand), linestyle="none", marker="x", markersize=9, color=line.get_color(),
                       label=f"{name}: each round's candidate")
    left.axhline(0, color="grey", linewidth=0.8)
    _style(left, "epoch (all runs in order)", "mean training loss", "training loss per epoch")
    left.legend(fontsize=8)
    _style(right, "round (0 = zero-shot)", "test accuracy", "test accuracy (x: candidate, promoted or not)")
    right.set_xticks(range(result["sizes"]["rounds"] + 1))
    right.legend(fontsize=8)
    fig.suptitle(f"{result['dataset']['name']}: the signed feedback loss against the others")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(result: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    """(file name, caption) of each plot written."""
    import matplotlib

    matplotlib.use("Agg")
    plots: list[tuple[str, str]] = []
    plot_accuracy_by_round(result, out / "accuracy_by_round.png")
    plots.append(("accuracy_by_round.png", "Test accuracy of the active version after each round, per arm."))
    plot_accuracy_by_round(result, out / "macro_f1_by_round.png", metric="macro_f1")
    plots.append(("macro_f1_by_round.png", "Test macro-F1 of the active version after each round, per arm."))
    plot_accuracy_by_signals(result, out / "accuracy_by_signals.png")
    plots.append(("accuracy_by_signals.png", "Test accuracy against the number of signals the users sent so far."))
    noise = _noise_levels(result["arms"])
    if len(noise) >= 2:
        plot_sweep(result, out / "noise_sweep.png", noise, "noise")
        plots.append(("noise_sweep.png", "Noise sweep: a fraction of the ±1 signals flipped."))
    lambdas = _lambda_levels(result["arms"])
    if len(lambdas) >= 2:
        plot_sweep(result, out / "lambda_sweep.png", lambdas, "λ")
        plots.append(("lambda_sweep.png", "λ sweep on feedback with corrections: L = λ·L_data + (1−λ)·L_feedback."))
    if "signed" in result["arms"]:
        plot_signed(result, out / "signed_vs_bounded.png")
        plots.append(("signed_vs_bounded.png", "The literal signed loss f·CE against the bounded (and robust) "
                                               "loss: training loss per epoch, and test accuracy."))
    return plots


# ---------------------------------------------------------------- markdown


def _setup(result: dict[str, Any]) -> list[str]:
    d, z, o = result["dataset"], result["sizes"], result["options"]
    lines = [
        "## Setup",
        "",
        f"- Traffic from `{d['train']}`, test set from `{d['test']}`.",
        f"- Labels: {z['labels']} of {d['labels_in_file']} in the traffic file"
        + (f" ({'; '.join(d['notes'])})" if d.get("notes") else "") + ".",
        f"- Traffic: {z['rounds']} rounds x {z['traffic_per_round']} texts = {z['traffic']} texts, the same texts "
        "in the same order for every arm.",
        f"- Test set: {z['test']} texts, scored over HTTP by an evaluator client whose predictions get no feedback.",
        f"- Base model: `{result['model']}`; seed {result['seed']}.",
        f"- Training policy per retrain: {o['epochs']} epochs max (early stopping, patience {o['patience']}), "
        f"learning rate {o['learning_rate']:g} (head x10), batch size {o['batch_size']}; the candidate is "
        "fine-tuned from the active version on everything collected so far.",
        f"- Gate: candidate promoted if its score on the held-out feedback is at most {o['gate_tolerance']:g} below "
        f"the active's; no client carries more than {o['max_client_share']:.0%} of the feedback weight.",
        f"- Feedback loss: {o.get('feedback_loss', 'bounded')} (+1 -> -log p; -1 -> -log(1-p) for bounded, p for "
        "robust; signed is -f·log p), in every arm that does not set its own; λ "
        f"{o['lambda']:g} in L = λ·L_data + (1-λ)·L_feedback.",
        f"- Users: {o['honest_users']} honest users share the traffic; correction rate {o['correction_rate']:g} "
        f"(feedback+corrections and λ arms); baseline noise {o['noise']:g}, baseline adversarial share "
        f"{o['adversarial_share']:g} (arms that set their own override these).",
        f"- Wall time: {result['duration_s'] / 60:.1f} minutes on {result['machine']}"
        + (f", {o['threads']} torch thread(s) per service process" if o.get("threads") is not None else "") + ".",
    ]
    return lines


def _precision(result: dict[str, Any]) -> list[str]:
    """How far apart two numbers must be to mean something, at these sizes."""
    n = result["sizes"]["test"]
    acc = result["zero_shot_accuracy"]
    finals = [a["accuracy_by_round"][-1] for a in _distinct(result["arms"]).values() if a["accuracy_by_round"]]
    if finals:
        acc = sum(finals) / len(finals)
    se = (acc * (1 - acc) / n) ** 0.5
    return [
        "## How precise these numbers are",
        "",
        f"One test text is {100 / n:.2f} points of accuracy. At an accuracy near {acc:.0%} the binomial standard "
        f"error of one score on {n} texts is about {se * 100:.1f} points. Arms are scored on the same test texts "
        "and see the same traffic, so differences between arms are less noisy than that, but each arm is one "
        "training run with one seed: gaps of a point or two are within run-to-run variation. The gate judges "
        "on a held-out slice of the users' own feedback (about 20% of it), which is small in early rounds.",
    ]


def _results_table(result: dict[str, Any]) -> list[str]:
    arms = result["arms"]
    rounds = result["sizes"]["rounds"]
    head = ["arm", "zero-shot"] + [f"r{r}" for r in range(1, rounds + 1)] + ["macro-F1", "signals", "gate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arm in arms.items():
        if arm.get("same_as"):
            lines.append(f"| {name} | = {arm['same_as']} (identical conditions, not run twice) |"
                         + " |" * (len(head) - 2))
            continue
        cells = [name, _pct(arm["zero_shot_accuracy"])] + [_pct(x) for x in arm["accuracy_by_round"]]
        cells += [_pct(arm["macro_f1_by_round"][-1]), str(arm["signals_by_round"][-1]), _verdicts(arm)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _checks(result: dict[str, Any]) -> list[str]:
    mark = {True: "**met**", False: "**not met**", None: "not measured"}
    lines = ["| target | measured | result |", "|---|---|---|"]
    for c in result.get("checks") or run_checks(result["arms"]):
        verdict = "see the plot below" if c["name"] == "signed_behaviour" else mark[c["met"]]
        lines.append(f"| {c['target']} | {c['measured']} | {verdict} |")
    return lines


def _arm_notes(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, arm in _distinct(result["arms"]).items():
        lines.append(f"- **{name}** ({arm['description']}); {arm['seconds'] / 60:.1f} min.")
        for rnd in arm["rounds"]:
            g, s = rnd["gate"], rnd["sent"]
            cs, a = g.get("candidate_score"), g.get("active_score")
            scores = f"gate score {cs:.3f} vs active {a:.3f}" if cs is not None and a is not None else ""
            lines.append(f"  - round {rnd['round']}: users saw {_pct(rnd['traffic_accuracy'])}% right answers; "
                         f"sent +1 {s['positive']}, -1 {s['negative']}, corrections {s['corrections']}"
                         + (f" ({s['from_adversary']} from the adversary)" if s.get("from_adversary") else "")
                         + f"; run {g['run_id']} {g['status']}" + (f", {scores}" if scores else "")
                         + (f" ({g['reason']})" if g["status"] != "promoted" and g.get("reason") else "")
                         + (f"; the rejected candidate scored {_pct(rnd['candidate_accuracy'])}% on the test set"
                            if g["status"] == "rejected" and rnd.get("candidate_accuracy") is not None else "")
                         + f"; test accuracy {_pct(rnd['accuracy'])}% (version {rnd['version']}).")
    return lines


def render_markdown(result: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    d = result["dataset"]
    lines = [
        f"# Does the loop learn? Flywheel simulation on {d['name']}",
        "",
        f"Generated {result['finished_at']} by:",
        "",
        "```",
        result["command"],
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
        "letter per round: P promoted, R rejected (the active version stays), F failed.",
        "",
        *_results_table(result),
        "",
        "## Plots",
        "",
    ]
    for file, caption in plots:
        lines += [f"![{caption}]({file})", "", caption, ""]
    lines += [*_precision(result), "", "## Arms, round by round", "", *_arm_notes(result), ""]
    return "\n".join(lines)


def write_report(result: dict[str, Any], out: Path) -> Path:
    """Write report.md and the plots into `out` (created); returns the markdown's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, out)
    path = out / "report.md"
    path.write_text(render_markdown(result, plots), encoding="utf-8")
    return path

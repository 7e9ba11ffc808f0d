"""The issue's targets, measured on a result: each says what was compared, the numbers, and
whether the target was met (None when the arms it needs were not run).

With several seeds an arm's accuracy is the mean over its seeds (judged on that), shown with
its sample standard deviation; checks about single runs (the gate's decisions) look at every
round of every seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from app.kinds import DEFAULT_KIND, TaskKind, get_kind
from app.tools.simulate.arms import DEFAULT_CORRECTION_BUDGET
from app.tools.simulate.result import ArmResult, Check, GateOutcome, fmt

Arms = dict[str, ArmResult]
EPS = 1e-9
MAX_BETTER_REJECTED = 0.25  # share of better candidates the gate may keep out (issue 22)


def final(arm: ArmResult) -> float:
    """The last round's test accuracy (mean over seeds)."""
    return arm.final


def final_text(arm: ArmResult, *, digits: int = 4) -> str:
    """The last round's mean accuracy, with its spread over seeds when there are several."""
    stds = arm.accuracy_std_by_round or [None]
    return fmt(arm.final, stds[-1], digits=digits)


def gate_letter(gate: GateOutcome) -> str:
    """One round's gate outcome as a letter: P promoted, R rejected, I inconclusive (the run ends
    rejected: not promoted), F failed."""
    return gate.letter


def verdicts(arm: ArmResult) -> str:
    """The gate's letters per round, one group per seed ("PRI" or "PRI PPR")."""
    return " ".join("".join(g.letter for g in run.gate_by_round) for run in arm.runs)


def _check(name: str, target: str, met: bool | None, measured: str) -> Check:
    return Check(name, target, met, measured)


def feedback_vs_supervised(arms: Arms) -> Check:
    target = "feedback (±1 only) reaches >= 0.95 of supervised accuracy at the last round"
    if "feedback" not in arms or "supervised" not in arms:
        return _check("feedback_vs_supervised", target, None, "needs arms feedback and supervised")
    f, s = final(arms["feedback"]), final(arms["supervised"])
    z = arms["feedback"].zero_shot_accuracy
    ratio = f / s if s else 0.0
    gain = f"; it recovers {(f - z) / (s - z):.0%} of supervised's gain over zero-shot ({z:.4f})" if s > z else ""
    return _check("feedback_vs_supervised", target, ratio >= 0.95,
                  f"feedback {final_text(arms['feedback'])} / supervised {final_text(arms['supervised'])} "
                  f"= {ratio:.3f}{gain}")


def bounded_vs_ignore_negatives(arms: Arms) -> Check:
    loss = arms["feedback"].conditions.feedback_loss if "feedback" in arms else "bounded"
    target = f"the {loss} -1 loss (feedback) beats ignore-negatives at the last round"
    if "feedback" not in arms or "ignore-negatives" not in arms:
        return _check("bounded_vs_ignore_negatives", target, None, "needs arms feedback and ignore-negatives")
    f, i = final(arms["feedback"]), final(arms["ignore-negatives"])
    mean_gap = sum(a - b for a, b in zip(arms["feedback"].accuracy_by_round,
                                         arms["ignore-negatives"].accuracy_by_round))
    mean_gap /= len(arms["feedback"].accuracy_by_round)
    return _check("bounded_vs_ignore_negatives", target, f > i,
                  f"feedback {final_text(arms['feedback'])} vs ignore-negatives "
                  f"{final_text(arms['ignore-negatives'])} (mean gap over rounds {mean_gap:+.4f})")


def noise_arm(arms: Arms, level: float) -> str | None:
    """The arm that is the feedback arm but for its noise level (feedback itself at its own level)."""
    if "feedback" not in arms:
        return None
    ref = arms["feedback"].conditions
    for name, arm in arms.items():
        c = arm.conditions
        same_but_noise = replace(c, behaviour=replace(c.behaviour, noise=ref.behaviour.noise)) == ref
        if (name.startswith("noise-") or name == "feedback") and same_but_noise \
                and abs(c.behaviour.noise - level) < 1e-9:
            return name
    return None


def noise_cost(arms: Arms, high: float = 0.1, limit: float = 0.03) -> Check:
    target = f"{high:.0%} noise costs <= {limit * 100:g} points of accuracy against noise 0 at the last round"
    clean, noisy = noise_arm(arms, 0.0), noise_arm(arms, high)
    if clean is None or noisy is None:
        return _check(f"noise_cost_{high:g}", target, None, f"needs arms noise-0 (or feedback) and noise-{high:g}")
    cost = final(arms[clean]) - final(arms[noisy])
    return _check(f"noise_cost_{high:g}", target, cost <= limit + 1e-12,
                  f"{clean} {final_text(arms[clean])} vs {noisy} {final_text(arms[noisy])}: "
                  f"cost {cost * 100:+.1f} points")


def noise_recovery(arms: Arms, high: float = 0.3, share: float = 0.5) -> Check:
    """Under heavy noise, how much of the noise-free arm's gain over zero-shot is kept: a flipped bit at
    30 % carries about an eighth of a clean one's information, so all of it is out of reach, half is not."""
    target = f"{high:.0%} noise recovers >= {share:.0%} of the noise-free arm's gain over zero-shot at the last round"
    clean, noisy = noise_arm(arms, 0.0), noise_arm(arms, high)
    if clean is None or noisy is None:
        return _check("noise_recovery", target, None, f"needs arms noise-0 (or feedback) and noise-{high:g}")
    zero = arms[clean].zero_shot_accuracy
    gain = final(arms[clean]) - zero
    kept = (final(arms[noisy]) - zero) / gain if gain > 0 else 0.0
    return _check("noise_recovery", target, gain > 0 and kept >= share - 1e-12,
                  f"zero-shot {zero:.4f}, {clean} {final_text(arms[clean])}, {noisy} {final_text(arms[noisy])}: "
                  f"{kept:.0%} of the gain")


def hostile_cost(arms: Arms, share: float = 0.2, limit: float = 0.02) -> Check:
    name = f"adversarial-{share:g}"
    target = f"{share:.0%} of the traffic from a hostile key costs <= {limit * 100:g} points against noise 0"
    clean = noise_arm(arms, 0.0)
    if clean is None or name not in arms:
        return _check("hostile_cost", target, None, f"needs arms noise-0 (or feedback) and {name}")
    cost = final(arms[clean]) - final(arms[name])
    return _check("hostile_cost", target, cost <= limit + 1e-12,
                  f"{clean} {final_text(arms[clean])} vs {name} {final_text(arms[name])}: cost {cost * 100:+.1f} points")


def adversarial_monotone(arms: Arms) -> Check:
    target = "with an adversarial client, no promoted version is worse on the test set than the one before it"
    names = [n for n in arms if n.startswith("adversarial-")]
    if not names:
        return _check("adversarial_monotone", target, None, "needs an adversarial-X arm")
    parts, ok = [], True
    for name in names:
        several = len(arms[name].runs) > 1
        drops: list[tuple[str | int, float]] = []
        promoted = 0
        for run in arms[name].runs:
            curve = run.curve()
            drops += [(f"s{run.seed}r{r}" if several else r, curve[r - 1] - curve[r])
                      for r, g in enumerate(run.gate_by_round, start=1)
                      if g.status == "promoted" and curve[r] < curve[r - 1]]
            promoted += sum(g.status == "promoted" for g in run.gate_by_round)
        ok = ok and not drops
        worst = max((d for _, d in drops), default=0.0)
        parts.append(f"{name}: {promoted} promoted, {len(drops)} worse than their predecessor"
                     + (f" (worst -{worst * 100:.1f} points, rounds {[r for r, _ in drops]})" if drops else ""))
    return _check("adversarial_monotone", target, ok, "; ".join(parts))


def signed_behaviour(arms: Arms) -> Check | None:
    """Not a target: what the signed loss did, against the bounded one."""
    if "signed" not in arms:
        return None
    s = arms["signed"]
    losses = [x for rnd in s.runs[0].rounds for x in rnd.run.train_losses()]
    letters = "".join(g.letter for run in s.runs for g in run.gate_by_round)
    text = (f"signed: last-round accuracy {final_text(s)} (zero-shot {s.zero_shot_accuracy:.4f}); "
            f"gate {letters.count('P')} promoted / {letters.count('R')} rejected / "
            + (f"{letters.count('I')} inconclusive / " if "I" in letters else "")
            + f"{letters.count('F')} failed")
    if losses:
        text += f"; training loss from {losses[0]:.3g} down to {min(losses):.3g}"
    if "feedback" in arms:
        loss = arms["feedback"].conditions.feedback_loss
        text += f"; {loss} (feedback) last-round accuracy {final_text(arms['feedback'])}"
    return _check("signed_behaviour", "the literal signed loss misbehaves (shown, not a pass/fail target)", None,
                  text)


def asking(arm: ArmResult) -> tuple[str, float] | None:
    """("active", budget) or ("random", share) for an arm whose users label only some answers."""
    c = arm.conditions
    b = c.behaviour
    if b.oracle or b.correction_rate:
        return None
    if b.label_when_asked:
        return "active", float(c.feedback_budget)
    if b.label_share:
        return "random", float(b.label_share)
    return None


def corrections(arm: ArmResult) -> float:
    """Corrections the users sent over all rounds (mean over seeds)."""
    return sum(arm.series("corrections_by_round") or [])


def active_vs_random(arms: Arms, budget: float | None = None) -> Check:
    """active-B against random-2B: asking where the model is unsure should need half the labels."""
    target = "active reaches the accuracy that random reaches with at least 2x fewer corrections"
    partial = {n: k for n, a in arms.items() if (k := asking(a)) is not None}
    pairs = [(a, r) for a, (ka, xa) in partial.items() if ka == "active"
             for r, (kr, xr) in partial.items() if kr == "random" and abs(xr - 2 * xa) < EPS]
    if not pairs:
        actives = [(n, x) for n, (k, x) in partial.items() if k == "active"]
        randoms = [(n, x) for n, (k, x) in partial.items() if k == "random"]
        if actives:
            need = "; ".join(f"{n} needs random-{2 * x:g}" for n, x in actives)
        elif randoms:
            need = "; ".join(f"{n} needs active-{x / 2:g}" for n, x in randoms)
        else:
            b = DEFAULT_CORRECTION_BUDGET if budget is None else budget
            need = f"e.g. active-{b:g} (or active) and random-{2 * b:g}"
        return _check("active_vs_random", target, None, f"needs arms active-B and random-2B: {need}")
    parts, ok = [], True
    for a, r in pairs:
        fa, fr = final(arms[a]), final(arms[r])
        ok = ok and fa >= fr - EPS
        parts.append(f"{a} {final_text(arms[a])} with {corrections(arms[a]):g} corrections vs {r} "
                     f"{final_text(arms[r])} with {corrections(arms[r]):g}")
        if corrections(arms[a]) == 0:
            parts[-1] += f" ({a}'s users were never asked: does the server send feedback_wanted?)"
    return _check("active_vs_random", target, ok, "; ".join(parts))


@dataclass
class GateDecisions:
    """The gate's decisions over every round of every arm and seed, against the test set."""

    better: list[tuple[str, float, str]] = field(default_factory=list)  # (where, gain, letter) of better candidates
    worse_promoted: list[tuple[str, float]] = field(default_factory=list)  # (where, gain) of worse ones promoted
    unscored: int = 0  # candidates not promoted and not scored (--no-score-rejected)
    letters: str = ""  # every round's letter
    promoted: int = 0  # scored candidates promoted


def gate_decisions(arms: Arms) -> GateDecisions:
    """Every scored candidate of every round of every arm and seed, against the active it faced
    (the test accuracy of the version in service before that round).  A candidate is better
    (worse) when its test accuracy is above (below) the active's by more than the arm's seed
    spread in that round (`ArmResult.gate_spread`: sample std over seeds; 0 with one seed)."""
    d = GateDecisions()
    for name, arm in arms.items():
        if arm.same_as:
            continue
        several = len(arm.runs) > 1
        for run in arm.runs:
            curve = run.curve()
            for r, rnd in enumerate(run.rounds, start=1):
                letter, cand = rnd.gate.letter, rnd.candidate_accuracy
                d.letters += letter
                where = f"{name} seed {run.seed} round {r}" if several else f"{name} round {r}"
                if letter == "F":
                    continue
                if cand is None:
                    d.unscored += 1
                    continue
                gap, limit = cand - curve[r - 1], arm.gate_spread(r)
                if letter == "P":
                    d.promoted += 1
                    if -gap > limit + EPS:
                        d.worse_promoted.append((where, gap))
                if gap > limit + EPS:
                    d.better.append((where, gap, letter))
    return d


def _places(items: list[tuple[Any, ...]], limit: int = 6) -> str:
    shown = ", ".join(f"{w} ({gap * 100:+.1f} points)" for w, gap, *_ in items[:limit])
    return shown + (f", … {len(items) - limit} more" if len(items) > limit else "")


def better_rejected(arms: Arms, decisions: GateDecisions | None = None) -> Check:
    target = (f"the gate keeps out at most {MAX_BETTER_REJECTED:.0%} of the candidates that were better on the "
              "test set than the active they faced (by more than the seed spread)")
    d = decisions if decisions is not None else gate_decisions(arms)
    if not d.letters:
        return _check("better_rejected", target, None, "no round was run")
    if d.unscored:
        return _check("better_rejected", target, None,
                      f"{d.unscored} candidates that were not promoted were not scored on the test set "
                      "(run with --score-rejected)")
    kept_out = [b for b in d.better if b[2] != "P"]
    if not d.better:
        return _check("better_rejected", target, None,
                      f"no candidate was better than its active by more than the seed spread "
                      f"({len(d.letters)} rounds: {d.letters.count('P')} promoted, "
                      f"{d.letters.count('R')} rejected, {d.letters.count('I')} inconclusive)")
    rate = len(kept_out) / len(d.better)
    how = (f"{sum(b[2] == 'R' for b in kept_out)} rejected, {sum(b[2] == 'I' for b in kept_out)} inconclusive"
           if kept_out else "")
    return _check("better_rejected", target, rate <= MAX_BETTER_REJECTED + EPS,
                  f"{len(kept_out)} of {len(d.better)} better candidates not promoted ({rate:.0%}"
                  + (f"; {how}: {_places(kept_out)}" if kept_out else "") + ")")


def worse_promoted(arms: Arms, decisions: GateDecisions | None = None) -> Check:
    target = "no promoted candidate is worse on the test set than its predecessor by more than the seed spread"
    d = decisions if decisions is not None else gate_decisions(arms)
    if not d.letters:
        return _check("worse_promoted", target, None, "no round was run")
    bad = d.worse_promoted
    return _check("worse_promoted", target, not bad,
                  f"{len(bad)} of {d.promoted} promoted candidates worse" + (f": {_places(bad)}" if bad else ""))


def _errors(arm: ArmResult) -> list[float]:
    return arm.series("mae_by_round") or []


def error_gap_closed(arms: Arms, kind: TaskKind) -> Check | None:
    """For a kind with an error metric: the share of its gap between version 0 and supervised
    that ±1 feedback closes."""
    error = kind.metric_names.error
    if error is None or not any(a.series("mae_by_round") is not None for a in arms.values()):
        return None
    name = f"{kind.name}_gap_closed"
    target = f"{kind.name}: feedback (±1 only) closes >= 50% of the {error} gap between version 0 and supervised"
    if "feedback" not in arms or "supervised" not in arms:
        return _check(name, target, None, "needs arms feedback and supervised")
    z, f, s = arms["feedback"].zero_shot("mae"), _errors(arms["feedback"])[-1], _errors(arms["supervised"])[-1]
    if z is None:
        return _check(name, target, None, f"feedback has no zero-shot {error}")
    if z <= s:
        return _check(name, target, None, f"supervised ({error} {s:.3f}) did not beat version 0 ({z:.3f})")
    closed = (z - f) / (z - s)
    return _check(name, target, closed >= 0.5,
                  f"{error} version 0 {z:.3f}, feedback {f:.3f}, supervised {s:.3f}: {closed:.0%} of the gap closed")


def signed_misbehaves(arms: Arms, kind: TaskKind) -> Check | None:
    """For a kind with an error metric: the literal signed loss's candidates against the bounded
    loss's, on the same traffic."""
    error, main = kind.metric_names.error, kind.metric_names.main
    if error is None or "signed" not in arms or arms["signed"].series("mae_by_round") is None or "feedback" not in arms:
        return None
    sig, fb = arms["signed"], arms["feedback"]
    cands = [c for c in sig.series("candidate_accuracy_by_round") or [] if c is not None]
    worst = min(cands) if cands else None
    met = worst is not None and worst < fb.final
    return _check(f"{kind.name}_signed_misbehaves", f"{kind.name}: the literal signed loss misbehaves (its "
                  "candidates score worse than the bounded loss's)", met,
                  f"signed: {error} by round {[round(x, 3) for x in _errors(sig)]}, worst candidate's {main} "
                  f"{worst if worst is None else round(worst, 4)}; bounded: {error} "
                  f"{[round(x, 3) for x in _errors(fb)]}")


def corrections_vs_supervised(arms: Arms, kind: TaskKind) -> Check | None:
    """For a kind with a target of its own for users who correct (`KindUser.corrections_target`):
    feedback with corrections against supervised at the last round."""
    share, main = kind.corrections_target, kind.metric_names.main
    if share is None:
        return None
    name = f"{kind.name}_corrections_vs_supervised"
    target = f"{kind.name}: feedback+corrections reaches >= {share:g} of supervised {main} at the last round"
    if "feedback+corrections" not in arms or "supervised" not in arms:
        return _check(name, target, None, "needs arms feedback+corrections and supervised")
    f, s = final(arms["feedback+corrections"]), final(arms["supervised"])
    ratio = f / s if s else 0.0
    return _check(name, target, ratio >= share,
                  f"feedback+corrections {main} {final_text(arms['feedback+corrections'])} / supervised "
                  f"{final_text(arms['supervised'])} = {ratio:.3f}")


def kind_of(dataset_kind: str | None) -> TaskKind:
    """The kind of a result's task (a file written before tasks had kinds: the default kind)."""
    return get_kind(dataset_kind or DEFAULT_KIND)


def run_checks(arms: Arms, *, budget: float | None = None, kind: TaskKind | None = None) -> list[Check]:
    """Every target on the arms of a result; `budget`: --correction-budget (names the arms the
    active-vs-random check needs when they were not run); `kind`: the task's (default: the
    registry's default kind), which may add targets of its own."""
    kind = kind or kind_of(None)
    decisions = gate_decisions(arms)
    out = [feedback_vs_supervised(arms), bounded_vs_ignore_negatives(arms), noise_recovery(arms), noise_cost(arms),
           hostile_cost(arms), adversarial_monotone(arms), active_vs_random(arms, budget), better_rejected(arms, decisions),
           worse_promoted(arms, decisions)]
    own = [c for c in (error_gap_closed(arms, kind), signed_misbehaves(arms, kind),
                       corrections_vs_supervised(arms, kind)) if c is not None]
    signed = None if own else signed_behaviour(arms)  # a kind's own targets say more than the display
    return out + ([signed] if signed else []) + own

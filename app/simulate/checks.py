"""The issue's targets, measured on a result: each says what was compared, the numbers, and
whether the target was met (None when the arms it needs were not run)."""

from __future__ import annotations

from typing import Any

Arms = dict[str, dict[str, Any]]


def final(arm: dict[str, Any]) -> float:
    return arm["accuracy_by_round"][-1]


def _curve(arm: dict[str, Any]) -> list[float]:
    """Test accuracy before round 1 (zero-shot) and after each round."""
    return [arm["zero_shot_accuracy"], *arm["accuracy_by_round"]]


def _check(name: str, target: str, met: bool | None, measured: str) -> dict[str, Any]:
    return {"name": name, "target": target, "met": met, "measured": measured}


def feedback_vs_supervised(arms: Arms) -> dict[str, Any]:
    target = "feedback (±1 only) reaches >= 0.95 of supervised accuracy at the last round"
    if "feedback" not in arms or "supervised" not in arms:
        return _check("feedback_vs_supervised", target, None, "needs arms feedback and supervised")
    f, s = final(arms["feedback"]), final(arms["supervised"])
    z = arms["feedback"]["zero_shot_accuracy"]
    ratio = f / s if s else 0.0
    gain = f"; it recovers {(f - z) / (s - z):.0%} of supervised's gain over zero-shot ({z:.4f})" if s > z else ""
    return _check("feedback_vs_supervised", target, ratio >= 0.95,
                  f"feedback {f:.4f} / supervised {s:.4f} = {ratio:.3f}{gain}")


def bounded_vs_ignore_negatives(arms: Arms) -> dict[str, Any]:
    loss = ((arms.get("feedback") or {}).get("conditions") or {}).get("feedback_loss", "bounded")
    target = f"the {loss} -1 loss (feedback) beats ignore-negatives at the last round"
    if "feedback" not in arms or "ignore-negatives" not in arms:
        return _check("bounded_vs_ignore_negatives", target, None, "needs arms feedback and ignore-negatives")
    f, i = final(arms["feedback"]), final(arms["ignore-negatives"])
    mean_gap = sum(a - b for a, b in zip(arms["feedback"]["accuracy_by_round"],
                                         arms["ignore-negatives"]["accuracy_by_round"]))
    mean_gap /= len(arms["feedback"]["accuracy_by_round"])
    return _check("bounded_vs_ignore_negatives", target, f > i,
                  f"feedback {f:.4f} vs ignore-negatives {i:.4f} (mean gap over rounds {mean_gap:+.4f})")


def noise_arm(arms: Arms, level: float) -> str | None:
    """The arm that is the feedback arm but for its noise level (feedback itself at its own level)."""
    ref = (arms.get("feedback") or {}).get("conditions")
    if ref is None:
        return None
    for name, arm in arms.items():
        c = arm.get("conditions") or {}
        b = c.get("behaviour") or {}
        same_but_noise = {**c, "behaviour": {**b, "noise": ref["behaviour"]["noise"]}} == ref
        if (name.startswith("noise-") or name == "feedback") and same_but_noise \
                and abs(b.get("noise", -1) - level) < 1e-9:
            return name
    return None


def noise_cost(arms: Arms, high: float = 0.3, limit: float = 0.02) -> dict[str, Any]:
    target = f"{high:.0%} noise costs <= {limit * 100:g} points of accuracy against noise 0 at the last round"
    clean, noisy = noise_arm(arms, 0.0), noise_arm(arms, high)
    if clean is None or noisy is None:
        return _check("noise_cost", target, None, f"needs arms noise-0 (or feedback) and noise-{high:g}")
    cost = final(arms[clean]) - final(arms[noisy])
    return _check("noise_cost", target, cost <= limit + 1e-12,
                  f"{clean} {final(arms[clean]):.4f} vs {noisy} {final(arms[noisy]):.4f}: cost {cost * 100:+.1f} points")


def adversarial_monotone(arms: Arms) -> dict[str, Any]:
    target = "with an adversarial client, no promoted version is worse on the test set than the one before it"
    names = [n for n in arms if n.startswith("adversarial-")]
    if not names:
        return _check("adversarial_monotone", target, None, "needs an adversarial-X arm")
    parts, ok = [], True
    for name in names:
        curve = _curve(arms[name])
        drops = [(r, curve[r - 1] - curve[r]) for r, g in enumerate(arms[name]["gate_by_round"], start=1)
                 if g["status"] == "promoted" and curve[r] < curve[r - 1]]
        promoted = sum(g["status"] == "promoted" for g in arms[name]["gate_by_round"])
        ok = ok and not drops
        worst = max((d for _, d in drops), default=0.0)
        parts.append(f"{name}: {promoted} promoted, {len(drops)} worse than their predecessor"
                     + (f" (worst -{worst * 100:.1f} points, rounds {[r for r, _ in drops]})" if drops else ""))
    return _check("adversarial_monotone", target, ok, "; ".join(parts))


def signed_behaviour(arms: Arms) -> dict[str, Any] | None:
    """Not a target: what the signed loss did, against the bounded one."""
    if "signed" not in arms:
        return None
    s = arms["signed"]
    losses = [e["train_loss"] for rnd in s["rounds"] for e in (rnd["run"].get("loss_curve") or [])
              if e.get("train_loss") is not None]
    statuses = [g["status"] for g in s["gate_by_round"]]
    text = (f"signed: last-round accuracy {final(s):.4f} (zero-shot {s['zero_shot_accuracy']:.4f}); "
            f"gate {statuses.count('promoted')} promoted / {statuses.count('rejected')} rejected / "
            f"{statuses.count('failed')} failed")
    if losses:
        text += f"; training loss from {losses[0]:.3g} down to {min(losses):.3g}"
    if "feedback" in arms:
        loss = arms["feedback"]["conditions"]["feedback_loss"]
        text += f"; {loss} (feedback) last-round accuracy {final(arms['feedback']):.4f}"
    return _check("signed_behaviour", "the literal signed loss misbehaves (shown, not a pass/fail target)", None,
                  text)


def run_checks(arms: Arms) -> list[dict[str, Any]]:
    out = [feedback_vs_supervised(arms), bounded_vs_ignore_negatives(arms), noise_cost(arms),
           adversarial_monotone(arms)]
    signed = signed_behaviour(arms)
    return out + ([signed] if signed else [])

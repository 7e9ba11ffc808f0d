"""Small inline SVG charts for the console (no chart library, no script: plain shapes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def bars(values: Sequence[float], *, width: float = 280, height: float = 48, gap: float = 2,
         top: float | None = None) -> list[dict[str, float]]:
    """One bar per value, scaled to `top` (the largest value when not given); x, y, w, h in SVG units."""
    if not values:
        return []
    top = (max(values) if top is None else top) or 1
    w = (width - gap * (len(values) - 1)) / len(values)
    out = []
    for i, v in enumerate(values):
        h = height * v / top
        out.append({"x": round(i * (w + gap), 2), "y": round(height - h, 2), "w": round(w, 2), "h": round(h, 2),
                    "value": v})
    return out


def loss_series(curve: Sequence[Any]) -> dict[str, list[float]]:
    """The loss curve's numeric series by name (the run stores one entry per epoch)."""
    series: dict[str, list[float]] = {}
    for entry in curve:
        if isinstance(entry, dict):
            for k, v in entry.items():
                if "loss" in k and isinstance(v, (int, float)) and math.isfinite(v):
                    series.setdefault(k, []).append(float(v))
        elif isinstance(entry, (int, float)) and math.isfinite(entry):
            series.setdefault("loss", []).append(float(entry))
    return series


def polyline(values: Sequence[float], *, width: float = 280, height: float = 60, low: float | None = None,
             high: float | None = None) -> str:
    """SVG polyline points for the values, left to right, between `low` and `high` (their range
    when not given)."""
    if not values:
        return ""
    lo = min(values) if low is None else low
    hi = max(values) if high is None else high
    span = (hi - lo) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - (v - lo) / span * height:.1f}" for i, v in enumerate(values))

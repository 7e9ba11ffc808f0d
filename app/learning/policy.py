"""A task's retrain policy, gate limits, per-client cap and training knobs, read from `Task.policy`.

`Task.policy` is free-form JSON so new knobs need no migration; this is the one place that
knows its keys and defaults.  The API validates the keys it exposes (app/schemas.py); here
unknown keys are ignored so a row written by a newer version never stops a run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class Policy:
    # When the worker retrains on its own
    min_new_signals: int = 50  # feedback + examples since the last judged run
    min_interval_s: float = 600.0  # never more often than this
    max_interval_s: float | None = 86_400.0  # at least this often when anything is new; None = never
    # Gate
    gate_tolerance: float = 0.01  # candidate score may sit at most this far below the active's
    max_recall_drop: float = 0.10  # no class's recall may fall by more than this
    # Data
    max_client_share: float = 0.5  # largest share of the feedback weight one client may carry
    feedback_validation_fraction: float = 0.2  # held-out slice of feedback texts, by hash
    # Training
    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 16
    patience: int = 2
    lora_r: int = 8
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise ValueError(f"policy.{name} {rule}, got {getattr(self, name)!r}")

        check("min_new_signals", self.min_new_signals >= 1, "must be >= 1")
        check("min_interval_s", self.min_interval_s >= 0, "must be >= 0")
        check("max_interval_s", self.max_interval_s is None or self.max_interval_s > 0, "must be > 0 or null")
        check("gate_tolerance", 0 <= self.gate_tolerance <= 1, "must be in [0, 1]")
        check("max_recall_drop", 0 <= self.max_recall_drop <= 1, "must be in [0, 1]")
        check("max_client_share", 0 < self.max_client_share <= 1, "must be in (0, 1]")
        check("feedback_validation_fraction", 0 <= self.feedback_validation_fraction < 1, "must be in [0, 1)")
        check("epochs", self.epochs >= 1, "must be >= 1")
        check("learning_rate", 0 < self.learning_rate < 1, "must be in (0, 1)")
        check("batch_size", self.batch_size >= 1, "must be >= 1")
        check("patience", self.patience >= 1, "must be >= 1")
        check("lora_r", self.lora_r >= 1, "must be >= 1")
        check("lora_alpha", self.lora_alpha >= 1, "must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Policy":
        """Defaults for missing keys; unknown keys ignored; bad values raise ValueError naming the key."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""A task's retrain policy, gate limits, per-client cap and training knobs: the one definition.

Every field's default, bounds and meaning live here and nowhere else.  The API takes it as
the `policy` of a task (unknown keys refused, by name); `Task.policy` stores its JSON (free
form, so a new knob needs no migration); the worker, the trainer's `TrainConfig`, the
simulator and the CLI read their defaults from it.  `from_stored` reads a stored row leniently
(unknown keys ignored), so a row written by a newer version never stops a run.

The task's learning settings that sit beside the policy in the API (λ, the feedback loss,
full or LoRA fine-tuning) have their types and defaults here too.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

FeedbackLoss = Literal["corrected", "unbiased", "bounded", "signed", "robust"]
FEEDBACK_LOSSES: tuple[str, ...] = ("corrected", "unbiased", "bounded", "signed", "robust")
Finetune = Literal["full", "lora"]
DEFAULT_LAMBDA = 0.5  # λ in L = λ·L_data + (1−λ)·L_feedback
DEFAULT_FEEDBACK_LOSS: FeedbackLoss = "corrected"  # the bounded loss for a clean client; through its flips for a noisy one
DEFAULT_FINETUNE: Finetune = "full"


class Policy(BaseModel):
    """Retrain policy, gate limits and per-client cap of one task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # When the worker retrains on its own
    min_new_signals: int = Field(50, ge=1, description="Signals since the last run before a scheduled retrain.")
    min_interval_s: float = Field(600, ge=0, description="Never retrain more often than this.")
    max_interval_s: float | None = Field(86_400, gt=0, description="Retrain at least this often when anything is "
                                                                  "new; null = never.")
    # Gate
    gate_tolerance: float = Field(0.01, ge=0, le=1, description="Candidate may score at most this much below active.")
    max_recall_drop: float = Field(0.10, ge=0, le=1, description="No class's recall may drop by more than this.")
    gate_confidence: float = Field(0.95, ge=0.5, lt=1, description="Confidence the gate needs, one-sided, to "
                                                                   "promote (not worse than the tolerance) or to "
                                                                   "reject (worse); otherwise inconclusive.")
    gate_min_rows: int = Field(30, ge=1, le=1_000_000, description="Fewest validation rows with a known outcome "
                                                                   "before the gate decides anything.")
    # Data
    max_client_share: float = Field(0.5, gt=0, le=1, description="Largest share of feedback one client may carry.")
    feedback_validation_fraction: float = Field(0.2, ge=0, lt=1, description="Feedback texts held out for the gate.")
    # Asking for feedback
    feedback_budget: float = Field(0.05, ge=0, le=1, description="Largest share of predictions that may carry "
                                                                 "feedback_wanted: true.")
    # Training
    epochs: int = Field(3, ge=1, le=100)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(16, ge=1, le=1024)
    patience: int = Field(2, ge=1, le=100, description="Epochs without validation gain before stopping early.")
    grow_vocab: bool = Field(False, description="Before training (full fine-tuning), make every character of the "
                             "training texts that the tokenizer reads as [UNK] a token of its own, with an "
                             "embedding row trained with the rest (Chinese on the bundled English model; "
                             "measured in reports/chinese/: it helped one-shot training, not the loop).")
    lora_r: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1, le=1024)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any] | None) -> "Policy":
        """Defaults for missing keys; unknown keys ignored; a bad value raises (a ValueError) naming the key."""
        known = cls.model_fields
        return cls.model_validate({k: v for k, v in (data or {}).items() if k in known})

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of one field, for the tools that offer it as an option."""
        return cls.model_fields[name].default

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

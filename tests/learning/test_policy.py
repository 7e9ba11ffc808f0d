"""The one Policy: its bounds hold wherever it is read, the API refuses unknown keys by name,
and a stored row from a newer version (unknown keys) still reads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.learning.trainer import TrainConfig
from app.core.policy import Policy


def test_api_refuses_unknown_keys_with_their_name() -> None:
    with pytest.raises(ValidationError, match="epoch"):
        Policy.model_validate({"epoch": 3})


def test_a_stored_policy_ignores_keys_it_does_not_know_and_fills_defaults() -> None:
    p = Policy.from_stored({"epochs": 5, "added_by_a_newer_version": True})
    assert p.epochs == 5 and p.batch_size == Policy.default("batch_size")


@pytest.mark.parametrize("key, value", [("epochs", 0), ("learning_rate", 1.5), ("max_client_share", 0.0),
                                        ("feedback_validation_fraction", 1.0), ("max_interval_s", 0)])
def test_a_stored_policy_with_a_bad_value_is_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        Policy.from_stored({key: value})


def test_the_trainer_reads_its_knobs_from_the_policy() -> None:
    cfg = TrainConfig(policy=Policy(epochs=7, batch_size=4, learning_rate=1e-3, patience=3))
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience) == (7, 4, 1e-3, 3)

"""The API's policy schema and the learning side's Policy must agree on every key and default."""

from __future__ import annotations

from dataclasses import fields

from app.learning.policy import Policy as LearningPolicy
from app.schemas import Policy as ApiPolicy


def test_api_policy_and_learning_policy_have_the_same_keys_and_defaults() -> None:
    api = ApiPolicy().model_dump()
    learning = {f.name: f.default for f in fields(LearningPolicy)}
    assert api == learning


def test_policy_rejects_unknown_keys_with_their_name() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="epoch"):
        ApiPolicy.model_validate({"epoch": 3})

"""The README's configuration table and command list must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from app.cli import cli
from app.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_configuration_table_lists_exactly_the_settings() -> None:
    documented = set(re.findall(r"^\| `(FLYWHEEL_[A-Z0-9_]+)` \|", README, re.M))
    actual = {f"FLYWHEEL_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual, f"missing: {actual - documented}; stale: {documented - actual}"


def test_readme_names_every_cli_command() -> None:
    for name in get_command(cli).commands:  # type: ignore[attr-defined]
        assert f"flywheel {name}" in README, f"README does not mention `flywheel {name}`"


def test_readme_names_the_ci_test_command() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "./run.sh test" in ci and "./run.sh test" in README

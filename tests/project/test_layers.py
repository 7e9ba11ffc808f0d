"""The layer rules hold (`lint-imports`, contracts in pyproject.toml), and they would catch the
kind of import they exist to stop: a service that reaches up into the API, SQL in a route."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=project, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(project), "PATH": str(LINT.parent)})


def _copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "app", project / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def test_the_layer_contracts_are_kept() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout
    assert _verdict(out.stdout, "Layers") == "KEPT"


@pytest.mark.parametrize("module, line, contract", [
    ("app/services/tasks.py", "from app.api import problems", "Layers"),
    ("app/api/runs.py", "from sqlalchemy import select", "Routes hold no SQL"),
    ("app/learning/trainer.py", "from app.db import tables", "Learning is pure"),
    ("app/runs/execute.py", "import fastapi", "No HTTP below the API"),
    ("app/core/errors.py", "from app.db import tables", "Layers"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    project = _copy(tmp_path)
    target = project / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    out = _lint(project)
    assert out.returncode != 0
    assert _verdict(out.stdout, contract) == "BROKEN", out.stdout[-3000:]


def _verdict(report: str, contract: str) -> str:
    """KEPT or BROKEN for the contract whose name starts with `contract` (names wrap in the report)."""
    summary = " ".join(report.split("Contracts\n", 1)[-1].split())
    found = re.search(re.escape(contract) + r".*?\b(KEPT|BROKEN)\b", summary)
    assert found, f"no verdict for {contract!r}"
    return found.group(1)

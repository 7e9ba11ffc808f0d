"""A task kind is one module: outside `app/kinds/` no code, template or script of the product names a
kind or imports a kind's module, so a new kind is added under `app/kinds/` (plus its tests) and
nowhere else.  Everything else asks the kind (`app.kinds.get_kind`, the registry `KINDS`)."""

from __future__ import annotations

import re
from pathlib import Path

from app.kinds import KINDS

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("*.py", "*.html", "*.js", "*.css")


def _product_files(root: Path) -> list[Path]:
    app = root / "app"
    return sorted(p for pattern in SOURCES for p in app.rglob(pattern)
                  if "kinds" not in p.relative_to(app).parts[:1] and "__pycache__" not in p.parts)


def _mentions(names: list[str], root: Path = ROOT) -> dict[str, list[str]]:
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)
    found: dict[str, list[str]] = {}
    for path in _product_files(root):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if word.search(line):
                found.setdefault(str(path.relative_to(root)), []).append(f"{number}: {line.strip()}")
    return found


def test_no_kind_is_named_outside_its_module() -> None:
    assert _mentions(sorted(KINDS)) == {}


def test_no_kind_module_is_imported_outside_the_kinds_package() -> None:
    assert _mentions([f"app.kinds.{name}" for name in KINDS] + [f"app/kinds/{name}.py" for name in KINDS]) == {}


def test_the_scan_finds_a_kind_named_in_a_template_and_not_in_its_own_module(tmp_path: Path) -> None:
    name = sorted(KINDS)[0]
    (tmp_path / "app" / "kinds").mkdir(parents=True)
    (tmp_path / "app" / "kinds" / f"{name}.py").write_text(f"NAME = {name!r}\n")
    (tmp_path / "app" / "console" / "templates").mkdir(parents=True)
    (tmp_path / "app" / "console" / "templates" / "page.html").write_text("{% if task.kind == '" + name + "' %}\n")
    assert _mentions([name], tmp_path) == {"app/console/templates/page.html": ["1: {% if task.kind == '" + name + "' %}"]}

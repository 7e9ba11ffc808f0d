"""The docs must match the code: the settings table, the command list, the README's test command,
and every relative link in the README, docs/, reports/README.md and scripts/README.md must lead to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from app.cli import cli
from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_configuration_table_lists_exactly_the_settings() -> None:
    table = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(FLYWHEEL_[A-Z0-9_]+)` \|", table, re.M))
    actual = {f"FLYWHEEL_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual, f"missing: {actual - documented}; stale: {documented - actual}"


def test_the_commands_page_names_every_cli_command() -> None:
    commands = (DOCS / "commands.md").read_text()
    for name in get_command(cli).commands:  # type: ignore[attr-defined]
        assert f"flywheel {name}" in commands, f"docs/commands.md does not mention `flywheel {name}`"


def test_readme_names_the_ci_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run.sh test" in ci and "./run.sh test" in README


def broken_links(page: Path) -> list[str]:
    """Relative links on `page` whose file does not exist (web addresses and in-page anchors aside)."""
    out = []
    for url in LINK.findall(page.read_text()):
        if re.match(r"^(?:[a-z]+:|#)", url):
            continue
        if not (page.parent / url.split("#")[0]).exists():
            out.append(url)
    return out


def test_every_relative_link_in_the_readme_and_docs_leads_somewhere() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), ROOT / "reports" / "README.md", ROOT / "scripts" / "README.md"]
    assert len(pages) > 5
    broken = {p.relative_to(ROOT).as_posix(): b for p in pages if (b := broken_links(p))}
    assert not broken, broken


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("x")
    page.write_text("[ok](there.md) [web](https://example.org) [anchor](#top) [gone](missing.md#part)")
    assert broken_links(page) == ["missing.md#part"]

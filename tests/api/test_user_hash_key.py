"""The key that hashes end-user ids (issue 11, item 8): generated whole or not at all, the same
for processes that start together, and never empty, short or a public default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from app.core.config import MIN_USER_HASH_KEY_CHARS, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_processes_starting_together_agree_on_one_generated_key(tmp_path: Path) -> None:
    code = ("import sys; from app.core.config import Settings; "
            "print(Settings(data_dir=sys.argv[1]).resolved_user_hash_key.decode())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={"PATH": "/usr/bin:/bin"}) for _ in range(6)]
    keys = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) >= MIN_USER_HASH_KEY_CHARS
    assert [p.name for p in tmp_path.iterdir()] == ["user_hash.key"]  # no temporary file left behind
    assert (tmp_path / "user_hash.key").stat().st_mode & 0o077 == 0


def test_an_empty_or_short_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "user_hash.key").write_text("abc\n")
    with pytest.raises(RuntimeError, match="at least 32"):
        _ = Settings(data_dir=tmp_path).resolved_user_hash_key


def test_a_short_key_setting_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(user_hash_key="short")
    assert Settings(user_hash_key="x" * 32).resolved_user_hash_key == b"x" * 32


def test_compose_has_no_default_secret() -> None:
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]["environment"]
    assert env["FLYWHEEL_USER_HASH_KEY"].startswith("${FLYWHEEL_USER_HASH_KEY:?")

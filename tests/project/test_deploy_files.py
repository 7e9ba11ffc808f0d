"""docker-compose.yml and the Dockerfile can't be run here (no docker engine), so their structure
is checked against the code they drive: the CLI commands, the settings names and the pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from typer.main import get_command

from app.cli import cli
from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def cli_commands() -> set[str]:
    return set(get_command(cli).commands)  # type: ignore[attr-defined]


def setting_env_names() -> set[str]:
    return {f"FLYWHEEL_{name.upper()}" for name in Settings.model_fields}


def test_compose_has_api_worker_postgres_and_a_shared_model_volume() -> None:
    doc = compose()
    assert {"api", "worker", "postgres"} <= set(doc["services"])
    assert "models" in doc["volumes"]
    api, worker = doc["services"]["api"], doc["services"]["worker"]
    data_dir = api["environment"]["FLYWHEEL_DATA_DIR"]
    assert f"models:{data_dir}" in api["volumes"]
    assert f"models:{data_dir}" in worker["volumes"]


def test_compose_services_run_real_cli_commands() -> None:
    doc = compose()
    commands = cli_commands()
    for name in ("api", "worker"):
        cmd = doc["services"][name]["command"]
        assert cmd[0] == "flywheel"
        assert cmd[1] in commands, f"{name} runs unknown sub-command {cmd[1]!r}"
    assert doc["services"]["api"]["command"][1] == "serve"
    assert doc["services"]["worker"]["command"][1] == "worker"


def test_compose_environment_names_are_real_settings_and_point_at_postgres() -> None:
    doc = compose()
    known = setting_env_names()
    for name in ("api", "worker"):
        env = doc["services"][name]["environment"]
        assert set(env) <= known, f"unknown settings in {name}: {set(env) - known}"
        assert env["FLYWHEEL_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["FLYWHEEL_DATABASE_URL"]
        assert "FLYWHEEL_ADMIN_TOKEN" in env, "binding 0.0.0.0 needs an admin token"
    assert doc["services"]["worker"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_api_binds_all_interfaces_only_with_an_admin_token_and_publishes_its_port() -> None:
    api = compose()["services"]["api"]
    cmd = api["command"]
    port = cmd[cmd.index("--port") + 1]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert f"{port}:{port}" in api["ports"]


def test_dockerfile_pins_the_same_torch_as_pyproject_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch"))
    assert torch_pin == "torch==2.13.0"
    assert f'"{torch_pin}"' in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    parts = yaml.safe_load(cmd.group(1))
    assert parts[0] == "flywheel" and parts[1] in cli_commands()
    for path in ("app", "migrations", "alembic.ini", "pyproject.toml"):
        assert re.search(rf"^COPY .*{re.escape(path)}", dockerfile, re.M), f"Dockerfile does not copy {path}"

"""Shared fixtures: a tiny random BERT, a migrated database (SQLite or the real PostgreSQL),
settings pointing at both, and the app behind a real HTTP-shaped client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from app.core.config import Settings
import httpx
from sqlalchemy.orm import Session, sessionmaker

from support import (
    ADMIN, ADMIN_TOKEN, CHINESE_SAMPLE, make_settings, pg_available, postgres_or_skip, scratch_pg_database,
    truncate_all,
)
from support.api import create_task
from support.learning import migrated
from support.live import serve_in_thread
from support.tiny_model import tiny_bert

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 32) with a small word-piece vocab, saved like a hub model."""
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_chinese_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny BERT with a vocabulary that also holds every character of CHINESE_SAMPLE:
    a Chinese-capable encoder, loaded by path and offline like any other."""
    chars = sorted({c for c in CHINESE_SAMPLE if not c.isspace()})
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert-zh"), chars)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A fresh, migrated PostgreSQL database for this test run (dropped at the end), or None."""
    if not pg_available():
        yield None
        return
    from app.db.migrate import upgrade
    from app.db.session import make_engine

    with scratch_pg_database("flywheel_test") as url:
        eng = make_engine(url)
        upgrade(eng)
        eng.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes this runs once on SQLite and once on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'flywheel.db'}"
        return
    url = postgres_or_skip(request.getfixturevalue("pg_database"))
    yield url
    truncate_all(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'flywheel.db'}"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, tiny_model_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", db_url, tiny_model_dir)


@pytest.fixture
def client(settings: Settings) -> Iterator["TestClient"]:  # noqa: F821
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        yield c


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--screenshots", default=None, metavar="DIR",
                     help="test_console_browser.py saves a PNG of each console page into DIR")


@pytest.fixture
def browser(client):
    """The test client without the API's Authorization header: a person with a browser."""
    del client.headers["Authorization"]
    return client


@pytest.fixture
def factory(db_url: str) -> sessionmaker[Session]:
    """A freshly migrated database (SQLite and PostgreSQL) as a sessionmaker."""
    return migrated(db_url)


@pytest.fixture
def task(client) -> dict:
    """The `tickets` task (three labels), created through the API."""
    return create_task(client)


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on a loopback socket chosen by the OS."""
    with serve_in_thread(settings) as base:
        yield base


@pytest.fixture
def http(live: str) -> Iterator[httpx.Client]:
    """An admin HTTP client of the live app."""
    with httpx.Client(base_url=live, headers=ADMIN, timeout=60) as c:
        yield c

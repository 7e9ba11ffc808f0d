"""What tests share besides fixtures: the admin token and header, the settings every test app
runs with, the tiny model's vocabulary, and how to reach the test PostgreSQL.  Fixtures live in
conftest.py; tests import these from here (never from conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.core.config import Settings

PG_ADMIN_URL = os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"  # an admin token needs 32 characters or more
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

WORDS = """
i my me you your we it is was are the a an and or not no yes to of in on for with at this that
lost card credit stolen missing wallet bank account money charged twice bill billing invoice
payment refund fee weather rain sunny cold hot tomorrow today forecast snow wind
good great love loved wonderful excellent amazing best happy fun enjoyed brilliant
bad terrible awful hate hated boring worst sad poor dull waste movie film plot acting
please help can could would what why how when where who need want tell show find
""".split()


# The characters of the Chinese tests' texts, labels and descriptions: the Chinese tiny model's
# vocabulary has each of them (as bert-base-chinese does, one token a character).
CHINESE_SAMPLE = """
体育 财经 比赛 球队 进球 冠军 足球 篮球 联赛 教练 球员 胜利 国足 昨晚 三比零 战胜 对手 主场 客场 决赛
股市 大涨 投资 者 信心 增强 银行 利率 基金 经济 增长 央行 降息 上涨 下跌 公司 利润 市场 价格
人名 地名 张伟 李娜 王芳 在 上海 北京 广州 办公室 工作 去 了 和 的 是 今天 我们 他 她 说
这部电影太好看了，我非常喜欢 服务态度很差，再也不来了 。、！？：；“”（）
"""

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def pg_available() -> bool:
    try:
        eng = create_engine(PG_ADMIN_URL)
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        return True
    except Exception:
        return False


# An unreachable PostgreSQL fails the suite: CI has one, and a silently skipped half of the
# database tests would hide its failures.  A developer without one opts out explicitly.
PG_OPT_OUT = os.environ.get("FLYWHEEL_TEST_POSTGRES", "") == "skip"


def postgres_or_skip(url: str | None) -> str:
    """The PostgreSQL URL for a test's PostgreSQL variant.  Unreachable: a failure, or, with
    FLYWHEEL_TEST_POSTGRES=skip, a skip that says so (the SQLite variant still runs)."""
    if url is not None:
        return url
    if PG_OPT_OUT:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} and FLYWHEEL_TEST_POSTGRES=skip is set; "
                    "the SQLite variant of this test ran")
    pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN_URL}: start it, point FLYWHEEL_TEST_POSTGRES_URL at one, "
                "or set FLYWHEEL_TEST_POSTGRES=skip to run the SQLite variants only", pytrace=False)


def scratch_pg_database(prefix: str):
    """A throw-away database on the test PostgreSQL server (see app.db.session)."""
    from app.db.session import scratch_postgres_database

    return scratch_postgres_database(PG_ADMIN_URL, prefix)


def make_settings(data_dir: Path, db_url: str, base_model: Path | str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        data_dir=data_dir,
        database_url=db_url,
        base_model=str(base_model),
        admin_token=ADMIN_TOKEN,
        user_hash_key="test-user-hash-key-0123456789abcdef",
        embedded_worker=False,
        watch_interval_s=0.1,
        max_wait_ms=2.0,
        max_seq_len=32,
        torch_threads=1,
        rate_limit_delay_s=0.0,  # 429s at once; tests/api/test_rate_limits.py pins the delay
        # The suite pins the CPU so its expectations (engine names, a run's device, exact scores)
        # hold on a GPU machine too; the CUDA path is exercised by scripts/gpu/.
        device="cpu",
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def truncate_all(url: str) -> None:
    """Empty every table of the test PostgreSQL database at `url` (ids restart)."""
    from app.db.tables import Base

    eng = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    eng.dispose()

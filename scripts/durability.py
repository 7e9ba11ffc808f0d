"""What durable SQLite costs: one-row commits per second (a feedback POST is one) with
`synchronous=FULL` (the default: the write-ahead log is synced at every commit, so an
acknowledged write survives a power cut) against `NORMAL` (synced at checkpoints only: a crash
of the process loses nothing, a power cut can lose the last commits).

Rounds alternate between the two on the same disk, so the ratio is taken in one run.

    .venv/bin/python scripts/durability.py --commits 2000 --rounds 3 [--dir /path/on/the/disk/to/test]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, text

from app.db.migrate import upgrade
from app.db.session import make_engine
from app.db.tables import Feedback
from app.kinds import KINDS


def commits_per_s(db: Path, durable: bool, commits: int) -> float:
    engine = make_engine(f"sqlite:///{db}", durable=durable)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tasks (id, name, kind, labels, descriptions, lambda_data, feedback_loss, "
                              "finetune, quantize, policy, created_at) VALUES (1, 't', :kind, '[]', "
                              "'{}', 0.5, 'bounded', 'full', false, '{}', CURRENT_TIMESTAMP)"),
                         {"kind": next(iter(KINDS))})  # any kind: only the feedback rows are timed
            conn.execute(text("INSERT INTO model_versions (id, task_id, version, status, path, sha256, metrics, "
                              "data_counts, engines, created_at) VALUES (1, 1, 0, 'active', 'p', 'x', '{}', '{}', "
                              "'{}', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO predictions (id, task_id, model_version_id, text, label, scores, "
                              "created_at) VALUES ('p', 1, 1, 'a text', 'a', '{}', CURRENT_TIMESTAMP)"))
        started = time.perf_counter()
        for _ in range(commits):
            with engine.begin() as conn:
                conn.execute(insert(Feedback).values(prediction_id="p", task_id=1, signal=1))
        return commits / (time.perf_counter() - started)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go (default: a temp dir)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"FULL": [], "NORMAL": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for mode in (("FULL", "NORMAL") if r % 2 == 0 else ("NORMAL", "FULL")):
                rate = commits_per_s(Path(tmp) / f"{mode}-{r}.db", mode == "FULL", args.commits)
                rates[mode].append(rate)
                print(f"round {r + 1} {mode:<6} {rate:8.0f} commits/s")
    full, normal = statistics.median(rates["FULL"]), statistics.median(rates["NORMAL"])
    print(f"median: FULL {full:.0f}/s, NORMAL {normal:.0f}/s; FULL runs at {full / normal:.2f} of NORMAL "
          f"({args.rounds} rounds of {args.commits} one-row commits)")


if __name__ == "__main__":
    main()

"""Soak: a real `flywheel serve` (embedded worker) on a fresh PostgreSQL database, mixed traffic
from several client keys (one of them abusive) for a fixed time, then five measurements:

1. acknowledged writes lost: every prediction, feedback and example the server acknowledged
   (2xx) to this client, looked up in the database at the end (0 expected);
2. answers that differ from the version's own answer: every stored prediction of a client key
   against what the same server answers for that text alone, per version, asked once per
   distinct (version, text) at the end with nothing else running (0 expected);
3. the server's RSS (psutil over its process tree, every 10 s): after warm-up, the max and slope;
4. per key p50/p99 of predict, unloaded (no abuser) and then loaded, and their ratio;
5. every status code per key and request kind.

    .venv/bin/python scripts/soak.py --tiny --minutes 2        # a quick check, tiny random BERT
    .venv/bin/python scripts/soak.py                           # the real MiniLM, 30 minutes loaded

Talks only to 127.0.0.1 (the server it starts, PostgreSQL); stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from app import __version__
from app.tools.bench.driving import TASK, drive_until_stopped, pct, ratio, wait_served_engine
from app.tools.bench.machine import machine_info, versions
from app.tools.bench.store import active_row, db_sessions
from app.tools.client import Answer, ApiError, FlywheelClient
from app.tools.datasets import find_shared, read_records
from app.process.launch import LocalService

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
CLINC_LABELS = {"translate": "translate a word or a sentence into another language",
                "weather": "the weather forecast: rain, sun, temperature",
                "book_flight": "book a plane ticket for a flight",
                "transfer": "transfer money between bank accounts"}
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
CLIENT_PAGES = ("/ui", f"/ui/tasks/{TASK}/review", f"/ui/tasks/{TASK}/try", "/ui/predictions/{id}/explain")
ADMIN_PAGES = ("/ui", f"/ui/tasks/{TASK}", f"/ui/tasks/{TASK}/runs", f"/ui/tasks/{TASK}/review", "/ui/clients")
NEAR_TIE = 0.005  # top-two score margin under which float noise alone can flip a label
SCORE_DIFF = 0.05  # a stored score this far from the version's own is a different answer


# ---------------------------------------------------------------- data


@dataclass
class Data:
    labels: dict[str, str]  # label -> description (zero-shot version 0 reads it)
    seed: list[tuple[str, str]]  # uploaded before traffic
    uploads: list[tuple[str, str]]  # uploaded during traffic, a few at a time
    traffic: list[tuple[str, str]]  # texts predicted (with their true label, for feedback)
    source: str


def load_data() -> Data:
    """CLINC150 (4 intents) from the shared data folder beside the project, else built-in sentences."""
    folder = find_shared("clinc150")
    if folder is not None and (folder / "train.csv").is_file() and (folder / "test.csv").is_file():
        train = clinc_rows(folder / "train.csv")
        random.Random(0).shuffle(train)
        return Data(dict(CLINC_LABELS), train[:120], train[120:],
                    clinc_rows(folder / "test.csv") + clinc_rows(folder / "val.csv"),
                    f"{folder} ({', '.join(CLINC_LABELS)})")
    subjects = {"billing": ["my bill", "the invoice", "this payment", "the fee", "my refund"],
                "weather": ["the weather", "the forecast", "rain tomorrow", "snow today", "the wind"],
                "card": ["my credit card", "my card", "the stolen card", "my wallet", "the bank card"]}
    frames = ["what about {}", "please help with {}", "tell me about {}", "i need {} now", "why is {} so bad",
              "can you show {}", "{} is wrong", "where is {}"]
    made = [(f.format(s), label) for label, subs in subjects.items() for s in subs for f in frames]
    random.Random(0).shuffle(made)
    return Data({k: k for k in subjects}, made[:30], made[30:60], made[60:], "built-in sentences")


def clinc_rows(path: Path) -> list[tuple[str, str]]:
    return [(r.text, r.value) for r in read_records(path) if r.value in CLINC_LABELS]


def tiny_model(root: Path) -> Path:
    """The test suite's tiny random BERT (tests/support/tiny_model.py), built into `root`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.tiny_model import tiny_bert

    root.mkdir(parents=True, exist_ok=True)
    return tiny_bert(root)


# ---------------------------------------------------------------- the server


class EmbeddedService(LocalService):
    """LocalService's child `flywheel serve`, but with its embedded worker (the default a user runs)."""

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        super()._spawn(name, ["--worker" if a == "--no-worker" else a for a in args], env)

    def tree(self) -> list[psutil.Process]:
        try:
            api = psutil.Process(self.api.pid)
            return [api, *api.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def rss_sample(srv: EmbeddedService) -> dict[str, float]:
    """MiB of resident memory: the API process, everything below it (the worker), the sum."""
    out = {"api": 0.0, "children": 0.0}
    for i, p in enumerate(srv.tree()):
        try:
            out["api" if i == 0 else "children"] += p.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    out["total"] = out["api"] + out["children"]
    return out


# ---------------------------------------------------------------- what the client saw


@dataclass
class KeyLog:
    """One key's requests: status counts per request kind, predict latencies, acknowledged ids."""

    name: str
    statuses: Counter = field(default_factory=Counter)  # (kind, status) -> n
    latency: list[tuple[float, float, str]] = field(default_factory=list)  # single-text predict: (t, s, phase)
    predictions: list[str] = field(default_factory=list)
    feedback: list[tuple[int, str, int]] = field(default_factory=list)  # (id, prediction id, signal)
    examples: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loadgen_cpu_s: float = 0.0  # the abuser's load generator processes: CPU and wall seconds
    loadgen_wall_s: float = 0.0

    def count(self, kind: str, status: int) -> None:
        self.statuses[(kind, status)] += 1


@dataclass
class Soak:
    url: str
    admin_token: str
    data: Data
    rate: float
    stop: threading.Event = field(default_factory=threading.Event)
    events: list[dict[str, Any]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def event(self, what: str, **info: Any) -> None:
        self.events.append({"t_s": round(time.monotonic() - self.t0, 1), "event": what, **info})
        print(f"[{time.monotonic() - self.t0:7.1f}s] {what} {info if info else ''}", flush=True)

    def sleep_until(self, t: float) -> bool:
        """False when the soak is being stopped."""
        return not self.stop.wait(max(0.0, t - time.monotonic()))


def _post(http: httpx.Client, log: KeyLog, kind: str, path: str, **kw: Any) -> httpx.Response | None:
    try:
        r = http.post(path, **kw)
    except httpx.HTTPError as exc:
        log.count(kind, 0)
        if len(log.errors) < 20:
            log.errors.append(f"{kind}: {exc!r}"[:300])
        return None
    log.count(kind, r.status_code)
    return r


class ConsoleUser:
    """A browser on the console, logged in with a client key: page loads and the try form."""

    def __init__(self, url: str, key: str, log: KeyLog) -> None:
        self.http = httpx.Client(base_url=url, timeout=60.0, follow_redirects=False)
        self.key, self.log = key, log
        self.logged_in = False

    def get(self, path: str) -> httpx.Response | None:
        try:
            r = self.http.get(path)
        except httpx.HTTPError as exc:
            self.log.count("console_page", 0)
            if len(self.log.errors) < 20:
                self.log.errors.append(f"console {path}: {exc!r}"[:300])
            return None
        self.log.count("console_page", r.status_code)
        if r.status_code == 303 and "/ui/login" in r.headers.get("location", ""):
            self.logged_in = False
        return r

    def login(self) -> None:
        page = self.get("/ui/login")
        m = CSRF_RE.search(page.text) if page is not None else None
        if m is None:
            return
        r = _post(self.http, self.log, "console_login", "/ui/login",
                  data={"csrf": m.group(1), "token": self.key, "next": "/ui"})
        self.logged_in = r is not None and r.status_code == 303

    def visit(self, rng: random.Random, text: str) -> None:
        """One of a client's pages (an explanation of its latest prediction among them); on the try
        page, now and then the form too (a prediction and an explanation)."""
        if not self.logged_in:
            self.login()
        path = rng.choice(CLIENT_PAGES if self.log.predictions else CLIENT_PAGES[:3])
        page = self.get(path.replace("{id}", self.log.predictions[-1] if self.log.predictions else ""))
        if path.endswith("/try") and page is not None and (m := CSRF_RE.search(page.text)) and rng.random() < 0.3:
            _post(self.http, self.log, "console_try", path, data={"csrf": m.group(1), "text": text})

    def close(self) -> None:
        self.http.close()


# ---------------------------------------------------------------- traffic


def client_loop(soak: Soak, key: str, log: KeyLog, phase: str, until: float, seed: int) -> None:
    """One well-behaved client: predictions (feedback on half of them), explanations and console
    visits, as Poisson arrivals at `soak.rate` a second, until `until`."""
    rng = random.Random(seed)
    http = httpx.Client(base_url=soak.url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)
    ui = ConsoleUser(soak.url, key, log)
    users = [f"{log.name}-user-{i}" for i in range(10)]
    next_t = time.monotonic()
    try:
        for _ in range(int(soak.rate * (until - time.monotonic()) * 3) + 10):  # bounded
            if soak.stop.is_set() or time.monotonic() >= until:
                return
            text, truth = rng.choice(soak.data.traffic)
            op = rng.random()
            if op < 0.08:
                _post(http, log, "explain", f"/v1/tasks/{TASK}/explain", json={"text": text})
            elif op < 0.16:
                ui.visit(rng, text)
            else:
                predict_once(http, log, rng, phase, text, truth, users, soak.data.traffic)
            next_t += rng.expovariate(soak.rate)
            if not soak.sleep_until(next_t):
                return
            next_t = max(next_t, time.monotonic() - 1.0)  # running late: do not burst to catch up
    finally:
        http.close()
        ui.close()


def predict_once(http: httpx.Client, log: KeyLog, rng: random.Random, phase: str, text: str, truth: str,
                 users: list[str], pool: list[tuple[str, str]]) -> None:
    """A prediction (one text, or three: those are not timed), and feedback on half of them."""
    multi = rng.random() < 0.1
    body: dict[str, Any] = {"texts": [text] + [t for t, _ in rng.sample(pool, 2)]} if multi else {"text": text}
    if rng.random() < 0.5:
        body["user_id"] = rng.choice(users)
    t = time.monotonic()
    r = _post(http, log, "predict_multi" if multi else "predict", f"/v1/tasks/{TASK}/predict", json=body)
    if r is None or r.status_code != 200:
        return
    if not multi:
        log.latency.append((t, time.monotonic() - t, phase))
    answers = [Answer.from_json(p) for p in r.json()["predictions"]]
    log.predictions += [a.id for a in answers]
    first = answers[0]
    if rng.random() < 0.5:
        fb: dict[str, Any] = {"signal": 1 if first.label == truth else -1}
        if fb["signal"] < 0 and rng.random() < 0.6:
            fb["correction"] = truth
        if "user_id" in body:
            fb["user_id"] = body["user_id"]
        f = _post(http, log, "feedback", f"/v1/predictions/{first.id}/feedback", json=fb)
        if f is not None and f.status_code == 201:
            log.feedback.append((int(f.json()["id"]), first.id, fb["signal"]))


def abuser_loop(soak: Soak, key: str, log: KeyLog, until: float, concurrency: int) -> None:
    """Predict and explain as fast as `concurrency` connections each allow, in 20-second pieces
    of the light load generator (app.tools.bench.loadgen, its own process), so its records stay small."""
    auth = {"Authorization": f"Bearer {key}"}
    predicts = [[f"/v1/tasks/{TASK}/predict", json.dumps({"text": t})] for t, _ in soak.data.traffic]
    explains = [[f"/v1/tasks/{TASK}/explain", json.dumps({"text": t})] for t, _ in soak.data.traffic]
    while not soak.stop.is_set() and time.monotonic() < until - 1.0:
        try:
            with drive_until_stopped(soak.url, predicts, concurrency=concurrency, headers=auth) as p, \
                    drive_until_stopped(soak.url, explains, concurrency=concurrency, headers=auth) as e:
                soak.sleep_until(min(until, time.monotonic() + 20.0))
        except RuntimeError as exc:  # the load generator failed: say so, go on
            log.errors.append(repr(exc)[:300])
            continue
        for kind, out in (("predict", p), ("explain", e)):
            for t, dt, status, _ in out["records"]:
                log.count(kind, status)
                if kind == "predict" and status == 200:
                    log.latency.append((t, dt, "loaded"))
            log.loadgen_cpu_s += out["cpu_s"]
            log.loadgen_wall_s += out["wall_s"]


def admin_loop(soak: Soak, api: FlywheelClient, log: KeyLog, until: float, every_s: float, n: int) -> None:
    """The admin uploads `n` new labelled examples every `every_s` seconds and looks at the
    console's admin pages."""
    pool, round_ = list(soak.data.uploads), 0
    ui = ConsoleUser(soak.url, soak.admin_token, log)
    ui.login()
    while soak.sleep_until(min(until, time.monotonic() + every_s)) and time.monotonic() < until:
        for path in ADMIN_PAGES:
            ui.get(path)
        rows = [(t if round_ * n < len(pool) else f"{t} (again {round_})", lab)
                for t, lab in (pool[(round_ * n + i) % len(pool)] for i in range(n))]
        round_ += 1
        r = _post(api.http, log, "examples", f"/v1/tasks/{TASK}/examples",
                  json={"examples": [{"text": t, "label": lab} for t, lab in rows]})
        if r is not None and r.status_code == 201:
            log.examples += rows
    ui.close()


def scenario(soak: Soak, api: FlywheelClient, start: float, length: float) -> None:
    """A retrain a quarter of the way in, then a rollback: back to the version before if the run
    was promoted; if it was rejected, its candidate is activated by hand and then rolled back."""
    if not soak.sleep_until(start + 0.25 * length):
        return
    try:
        before = api.served_versions().get(TASK)
        run_id, _ = api.retrain(TASK)
        soak.event("retrain queued", run=run_id, serving=before)
        try:
            run = api.wait_run(run_id, timeout_s=max(10.0, start + 0.7 * length - time.monotonic()), poll_s=2.0)
        except TimeoutError:
            api.http.post(f"/v1/runs/{run_id}/cancel")
            soak.event("retrain did not finish in time: cancelled", run=run_id)
            return
        ids = {v["id"]: v["version"] for v in api.versions(TASK)}
        new = ids.get(run.get("candidate_version_id"))
        soak.event(f"retrain {run['status']}", run=run_id, candidate=new, duration_s=run.get("duration_s"),
                   error=run.get("error"))
        if new is None or before is None:
            return
        if run["status"] != "promoted":
            api.activate(TASK, new)
            soak.event("activated the candidate by hand", version=new)
        api.wait_served(TASK, new, timeout_s=300)
        soak.event("serving the new version", version=new)
        if not soak.sleep_until(max(time.monotonic() + min(60.0, 0.1 * length), start + 0.5 * length)):
            return
        api.activate(TASK, before)
        soak.event("rollback", version=before)
        api.wait_served(TASK, before, timeout_s=300)
        soak.event("serving the old version again", version=before)
    except (ApiError, httpx.HTTPError, TimeoutError) as exc:
        soak.event("scenario error", error=repr(exc)[:300])


def sampler_loop(soak: Soak, srv: EmbeddedService, api: FlywheelClient, samples: list[dict], every_s: float) -> None:
    while True:
        row = {"t_s": round(time.monotonic() - soak.t0, 1), **{k: round(v, 1) for k, v in rss_sample(srv).items()}}
        try:
            ready = api.http.get("/readyz", timeout=10).json()
            row.update(version=ready.get("models", {}).get(TASK), engine=ready.get("engines", {}).get(TASK))
        except (httpx.HTTPError, ValueError):
            row["version"] = None
        row["loadavg"] = round(os.getloadavg()[0], 2)
        samples.append(row)
        if soak.stop.wait(every_s):
            return


def run_threads(targets: list[tuple[Any, tuple]]) -> None:
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------- the checks at the end


def lost_writes(db_url: str, logs: list[KeyLog]) -> dict[str, Any]:
    """Every acknowledged prediction, feedback and example, looked up in the database."""
    from sqlalchemy import select

    from app.db.tables import Example, Feedback, Prediction, Task
    from app.core.texts import text_hash

    preds = [i for log in logs for i in log.predictions]
    fbs = {f[0]: f for log in logs for f in log.feedback}
    examples = {text_hash(t): lab for log in logs for t, lab in log.examples}
    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s:
            found_p: set[str] = set()
            for i in range(0, len(preds), 1000):
                found_p |= set(s.scalars(select(Prediction.id).where(Prediction.id.in_(preds[i:i + 1000]))))
            stored_f: dict[int, tuple[str, int]] = {}
            ids = list(fbs)
            for i in range(0, len(ids), 1000):
                stored_f.update({r.id: (r.prediction_id, r.signal) for r in s.execute(
                    select(Feedback.id, Feedback.prediction_id, Feedback.signal).where(Feedback.id.in_(ids[i:i + 1000])))})
            task_id = s.scalar(select(Task.id).where(Task.name == TASK))
            stored_e = dict(s.execute(select(Example.text_hash, Example.label).where(Example.task_id == task_id)).all())
    finally:
        engine.dispose()
    return {
        "predictions_acknowledged": len(preds), "predictions_missing": len(set(preds) - found_p),
        "feedback_acknowledged": len(fbs), "feedback_missing": sum(1 for i in fbs if i not in stored_f),
        "feedback_changed": sum(1 for i, (_, p, sig) in fbs.items() if i in stored_f and stored_f[i] != (p, sig)),
        "examples_acknowledged": len(examples), "examples_missing": sum(1 for h in examples if h not in stored_e),
        "examples_changed": sum(1 for h, lab in examples.items() if h in stored_e and stored_e[h] != lab),
    }


def version_answers(db_url: str, api: FlywheelClient) -> dict[str, Any]:
    """Every stored prediction of a client key against what the same server, serving the same
    version with the same engine, answers for that text alone: per version, activate it, wait
    until it serves, and ask each distinct text once (one request at a time, nothing else running)."""
    from sqlalchemy import select

    from app.db.tables import ModelVersion, Prediction, Task

    engine, sessions = db_sessions(db_url)
    try:
        with sessions() as s:
            task_id = s.scalar(select(Task.id).where(Task.name == TASK))
            number = dict(s.execute(select(ModelVersion.id, ModelVersion.version)
                                    .where(ModelVersion.task_id == task_id)).all())
            mine = (Prediction.task_id == task_id) & Prediction.client_id.is_not(None)  # not the check's own
            pairs = s.execute(select(Prediction.model_version_id, Prediction.text).where(mine).distinct()).all()
            texts: dict[int, list[str]] = {}
            for vid, text in pairs:
                texts.setdefault(number[vid], []).append(text)
            own: dict[tuple[int, str], Answer] = {}
            engines: dict[str, Any] = {}
            for version, vtexts in sorted(texts.items()):
                api.activate(TASK, version)
                api.wait_served(TASK, version, timeout_s=300)
                engines[str(version)] = api.http.get("/readyz").json().get("engines", {}).get(TASK)
                for text in vtexts:
                    _, (answer,) = api.predict(TASK, [text])
                    own[(version, text)] = answer
            out = {"versions_checked": sorted(texts), "engines": engines, "distinct_version_texts": len(own),
                   "predictions_checked": 0, "label_differs": 0, "label_differs_near_tie": 0,
                   "scores_differ": 0, "max_score_diff": 0.0, "examples": []}
            query = select(Prediction.id, Prediction.model_version_id, Prediction.text, Prediction.label,
                           Prediction.scores).where(mine).execution_options(yield_per=2000)
            for pid, vid, text, label, scores in s.execute(query):
                out["predictions_checked"] += 1
                alone = own[(number[vid], text)]
                diff = max((abs(float(scores.get(k, 0.0)) - float(v)) for k, v in alone.scores.items()), default=0.0)
                out["max_score_diff"] = max(out["max_score_diff"], diff)
                out["scores_differ"] += diff > SCORE_DIFF
                if label != alone.label:
                    top = sorted(alone.scores.values(), reverse=True)
                    near = len(top) > 1 and top[0] - top[1] < NEAR_TIE
                    out["label_differs"] += 1
                    out["label_differs_near_tie"] += near
                    if len(out["examples"]) < 10:
                        out["examples"].append({"prediction": pid, "version": number[vid], "text": text[:80],
                                                "stored": label, "alone": alone.label, "score_diff": round(diff, 4),
                                                "near_tie": near})
    finally:
        engine.dispose()
    return out


# ---------------------------------------------------------------- the report


def latency_table(logs: list[KeyLog], retrain: tuple[float, float] | None) -> dict[str, Any]:
    out = {}
    for log in logs:
        by: dict[str, list[float]] = {"unloaded": [], "loaded": [], "loaded_outside_retrain": []}
        for t, dt, phase in log.latency:
            by[phase].append(1000 * dt)
            if phase == "loaded" and (retrain is None or not retrain[0] <= t <= retrain[1]):
                by["loaded_outside_retrain"].append(1000 * dt)
        row = {f"{ph}_{k}": v for ph, vals in by.items()
               for k, v in (("n", len(vals)), ("p50_ms", pct(vals, 50)), ("p99_ms", pct(vals, 99)))}
        row["p99_ratio_loaded_to_unloaded"] = ratio(row["loaded_p99_ms"], row["unloaded_p99_ms"])
        row["p99_ratio_outside_retrain"] = ratio(row["loaded_outside_retrain_p99_ms"], row["unloaded_p99_ms"])
        out[log.name] = row
    return out


def memory(samples: list[dict], warm_until_s: float) -> dict[str, Any]:
    """RSS at the end of warm-up, then the max and the least-squares slope (MiB/hour) after it."""
    after = [s for s in samples if s["t_s"] >= warm_until_s]
    out: dict[str, Any] = {"warm_up_ends_s": round(warm_until_s, 1), "samples_after_warm_up": len(after)}
    for part in ("total", "api", "children"):
        out[part] = {"warm_up_mib": after[0][part] if after else None,
                     "max_after_warm_up_mib": max((s[part] for s in after), default=None),
                     "end_mib": after[-1][part] if after else None, "slope_mib_per_h": slope(after, part)}
    return out


def slope(samples: list[dict], key: str) -> float | None:
    if len(samples) < 3:
        return None
    xs, ys = [s["t_s"] / 3600 for s in samples], [s[key] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den, 1) if den else None


def summary(res: dict[str, Any]) -> str:
    lost, ans, mem, api = res["lost_writes"], res["version_answers"], res["memory"]["total"], res["memory"]["api"]
    cfg = res["config"]
    lines = [(f"soak {res['name']}: {cfg['minutes']:g} min loaded after {cfg['unloaded_minutes']:g} min "
              f"unloaded, model {cfg['model']}, {res['duration_s'] / 60:.1f} min in all")]
    lines.append(f"1. acknowledged writes lost: predictions {lost['predictions_missing']}/"
                 f"{lost['predictions_acknowledged']}, feedback {lost['feedback_missing']}/"
                 f"{lost['feedback_acknowledged']} (changed {lost['feedback_changed']}), examples "
                 f"{lost['examples_missing']}/{lost['examples_acknowledged']} (changed {lost['examples_changed']})")
    lines.append(f"2. answers differing from the version's own: {ans['label_differs']} of "
                 f"{ans['predictions_checked']} (near ties {ans['label_differs_near_tie']}; scores off by > "
                 f"{SCORE_DIFF}: {ans['scores_differ']}, max diff {ans['max_score_diff']:.2g}; versions "
                 f"{ans['versions_checked']}, engines {ans['engines']})")
    lines.append(f"3. server RSS (API + worker): {mem['warm_up_mib']} MiB after warm-up, max "
                 f"{mem['max_after_warm_up_mib']} MiB, end {mem['end_mib']} MiB, slope {mem['slope_mib_per_h']} "
                 f"MiB/h (API alone: {api['warm_up_mib']} -> max {api['max_after_warm_up_mib']}, "
                 f"{api['slope_mib_per_h']} MiB/h)")
    lines.append("4. predict latency per key (ms)   unloaded p50/p99    loaded p50/p99   ratio p99 (outside retrain)")

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for name, r in res["latency"].items():
        lines.append(f"   {name:<10} {f(r['unloaded_p50_ms']):>10} / {f(r['unloaded_p99_ms']):<8} "
                     f"{f(r['loaded_p50_ms']):>8} / {f(r['loaded_p99_ms']):<8} "
                     f"{f(r['p99_ratio_loaded_to_unloaded']):>6} ({f(r['p99_ratio_outside_retrain'])})"
                     f"   n={r['unloaded_n']}/{r['loaded_n']}")
    lines.append("5. status codes per key")
    for name, by in res["statuses"].items():
        lines.append(f"   {name:<10} " + "; ".join(f"{kind} {dict(sorted(c.items()))}" for kind, c in by.items()))
    lines.append(f"   server log: {res['server_log']['tracebacks']} tracebacks, {res['server_log']['errors']} ERROR lines; "
                 f"CPU seconds: {res['cpu_s']}")
    return "\n".join(lines)


def statuses(logs: list[KeyLog]) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for log in logs:
        by: dict[str, dict[str, int]] = {}
        for (kind, status), n in sorted(log.statuses.items()):
            by.setdefault(kind, {})[str(status)] = n
        out[log.name] = by
    return out


def scan_log(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace") if path.exists() else ""
    errors = [line for line in text.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    return {"tracebacks": text.count("Traceback (most recent call last)"), "errors": len(errors),
            "first_errors": errors[:5]}


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="loaded phase (abuser, uploads, retrain, rollback)")
    p.add_argument("--unloaded-minutes", type=float, default=1.0, help="unloaded phase first: the same clients, "
                   "no abuser")
    p.add_argument("--tiny", action="store_true", help="a tiny random BERT instead of MiniLM (a quick check)")
    p.add_argument("--clients", type=int, default=3, help="well-behaved client keys")
    p.add_argument("--rate", type=float, default=4.0, help="requests a second per well-behaved key (Poisson)")
    p.add_argument("--abuse-concurrency", type=int, default=8, help="abuser's connections for predict and for "
                   "explain each")
    p.add_argument("--upload-every-s", type=float, default=60.0, help="the admin's examples uploads and console "
                   "visits (at most a tenth of the loaded phase apart)")
    p.add_argument("--postgres", default=DEFAULT_PG_ADMIN, help="admin URL where a fresh database is created "
                   "and dropped (127.0.0.1 only)")
    p.add_argument("--name", default=None, help="report name (default soak-<model>-<minutes>min-<UTC time>)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default reports/soak/<name>.json)")
    args = p.parse_args()
    from sqlalchemy.engine import make_url

    if make_url(args.postgres).host not in LOCAL_HOSTS:
        p.error("--postgres must be on 127.0.0.1: the soak talks to nothing else")
    return args


def main() -> None:
    from app.db.session import scratch_postgres_database

    args = parse_args()
    started, stamp = time.monotonic(), datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    model_name = "tiny-random-bert" if args.tiny else "all-MiniLM-L6-v2"
    name = args.name or f"soak-{'tiny' if args.tiny else 'minilm'}-{args.minutes:g}min-{stamp}"
    out_path = args.out or ROOT / "reports" / "soak" / f"{name}.json"
    data = load_data()
    admin_token = secrets.token_urlsafe(32)  # 43 characters
    res: dict[str, Any] = {"name": name, "machine": machine_info(), "versions": versions(__version__),
                           "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                      "model": model_name, "data": data.source, "labels": list(data.labels)}}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flywheel-soak-")))
        base_model = str(tiny_model(tmp / "tiny-bert")) if args.tiny else _default_base_model()
        pg_url = stack.enter_context(scratch_postgres_database(args.postgres, "flywheel_soak"))
        env = {"FLYWHEEL_ADMIN_TOKEN": admin_token, "FLYWHEEL_BASE_MODEL": base_model,
               "FLYWHEEL_DATABASE_URL": pg_url, "FLYWHEEL_LOG_LEVEL": "warning"}
        srv = EmbeddedService(tmp / "data", env=env, startup_timeout_s=300.0, stop_timeout_s=60.0).start()
        stack.callback(stop_all, srv)
        api = stack.enter_context(FlywheelClient(srv.url, admin_token, timeout_s=120.0))
        soak = Soak(srv.url, admin_token, data, args.rate)
        soak.event("server up", url=srv.url, database=pg_url.rsplit("/", 1)[-1])
        keys = setup(soak, api, args.clients, pg_url)
        samples: list[dict] = []
        sampler = threading.Thread(target=sampler_loop, args=(soak, srv, api, samples, 10.0), daemon=True)
        sampler.start()
        logs = [KeyLog(f"client-{i}") for i in range(args.clients)]
        abuser, admin = KeyLog("abuser"), KeyLog("admin")
        try:
            unloaded_end = time.monotonic() + 60 * args.unloaded_minutes
            soak.event("unloaded phase", minutes=args.unloaded_minutes)
            run_threads([(client_loop, (soak, keys[i], logs[i], "unloaded", unloaded_end, i))
                         for i in range(args.clients)])
            loaded_start = time.monotonic()
            loaded_end = loaded_start + 60 * args.minutes
            soak.event("loaded phase", minutes=args.minutes)
            run_threads([(client_loop, (soak, keys[i], logs[i], "loaded", loaded_end, 100 + i))
                         for i in range(args.clients)]
                        + [(abuser_loop, (soak, keys[-1], abuser, loaded_end, args.abuse_concurrency)),
                           (admin_loop, (soak, api, admin, loaded_end, min(args.upload_every_s, 6 * args.minutes), 8)),
                           (scenario, (soak, api, loaded_start, loaded_end - loaded_start))])
            soak.event("traffic stopped")
        finally:
            soak.stop.set()
            sampler.join(30)
        res["lost_writes"] = lost_writes(pg_url, logs + [admin])
        soak.event("writes checked", **{k: v for k, v in res["lost_writes"].items() if k.endswith("missing")})
        res["version_answers"] = version_answers(pg_url, api)
        soak.event("answers checked", differ=res["version_answers"]["label_differs"])
        retrain = _retrain_window(soak)
        res["latency"] = latency_table(logs + [abuser], retrain)
        res["statuses"] = statuses(logs + [abuser, admin])
        res["client_errors"] = {log.name: log.errors for log in logs + [abuser, admin] if log.errors}
        warm = loaded_start - soak.t0 + min(300.0, 20 * args.minutes)  # 5 min, or a third of a short run
        res["memory"] = memory(samples, warm)
        res["rss_samples"] = samples
        res["events"] = soak.events
        res["runs"] = [{k: r[k] for k in ("id", "status", "trigger", "duration_s", "candidate_version_id", "error")}
                       for r in api.http.get(f"/v1/tasks/{TASK}/runs").json()]
        res["versions_after_check"] = [{"id": v["id"], "version": v["version"], "status": v["status"],
                                   "engine": v["engines"].get("chosen")} for v in api.versions(TASK)]
        res["server_log"] = scan_log(srv.logs["api"])
        res["cpu_s"] = {"this_driver": round(time.process_time(), 1), "abuser_load_generators": round(
            abuser.loadgen_cpu_s, 1), "server_tree_since_start": round(sum(sum(p.cpu_times()[:4]) for p in srv.tree()), 1)}
    res["duration_s"] = time.monotonic() - started
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=2, default=str))
    print(summary(res))
    print(f"wrote {out_path}")


def setup(soak: Soak, api: FlywheelClient, n_clients: int, pg_url: str) -> list[str]:
    """The task (retrains only when asked), seed examples, the keys (the last one abuses), and
    version 0 serving with the engine the worker chose for it."""
    policy = {"min_new_signals": 1_000_000_000, "max_interval_s": None}  # as app/tools/simulate does
    api.create_task({"name": TASK, "labels": list(soak.data.labels), "descriptions": soak.data.labels,
                     "policy": policy})
    api.http.post(f"/v1/tasks/{TASK}/examples", json={"examples": [{"text": t, "label": lab}
                                                                    for t, lab in soak.data.seed]}).raise_for_status()
    keys = [api.create_client(f"soak-client-{i}", [TASK]) for i in range(n_clients)]
    keys.append(api.create_client("soak-abuser", [TASK]))
    api.wait_served(TASK, 0, timeout_s=300)
    deadline = time.monotonic() + 900
    while not (record := active_row(pg_url).engines) and time.monotonic() < deadline:
        time.sleep(2.0)  # the worker prepares version 0's engines (export, parity, timing)
    soak.event("version 0 engines", chosen=record.get("chosen"), served=wait_served_engine(api, record, 300.0))
    return keys


def _retrain_window(soak: Soak) -> tuple[float, float] | None:
    """Monotonic times from the retrain's start to the rollback's serving (or the last event of it)."""
    ts = [e["t_s"] for e in soak.events if e["event"].startswith(("retrain", "activated", "serving", "rollback"))]
    return (soak.t0 + ts[0], soak.t0 + ts[-1]) if ts else None


def _default_base_model() -> str:
    from app.core.config import default_base_model

    return default_base_model()


def stop_all(srv: EmbeddedService) -> None:
    """SIGTERM to the server (it stops its worker); whatever of its tree is left after that is killed."""
    below = srv.tree()[1:]
    srv.stop()
    _, alive = psutil.wait_procs(below, timeout=30)
    for p in alive:
        print(f"killing process {p.pid}, left behind by the server", flush=True)
        p.kill()


if __name__ == "__main__":
    main()

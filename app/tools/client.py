"""The one HTTP client for a running Flywheel: the admin calls and the client calls that the
CLI (`flywheel retrain`), the simulator and the benchmark make, over httpx (sync).

It talks to the server only through its public HTTP contract, so it imports nothing from the
app but the run states: anything that drives a Flywheel from outside can use it without
pulling in the database, the models or torch.
"""

from __future__ import annotations

import json

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from app.core.statuses import FINAL_RUN_STATUSES

Json = dict[str, Any]


class ApiError(RuntimeError):
    """The server answered with an unexpected status.  `body` is the decoded problem document
    (or the raw text when the answer was not JSON), so callers can show its `detail`."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.method, self.path, self.status, self.body = method, path, status, body
        text = body if isinstance(body, str) else str(body)
        super().__init__(f"{method} {path} -> {status}: {text[:500]}")

    @property
    def detail(self) -> str | None:
        """The problem document's human-readable `detail`, or the raw body."""
        if isinstance(self.body, dict):
            return self.body.get("detail")
        return self.body or None


@dataclass(frozen=True)
class Answer:
    """One prediction: its id (to send feedback on), the label the model chose, and whether the
    server asks for the user's word on it (`feedback_wanted`; False from a server that does not
    send the key)."""

    id: str
    label: str  # the answer as text: the label, a score on a scale ("2.5"), a set of spans as JSON
    scores: Mapping[str, float]
    feedback_wanted: bool = False
    score: float | None = None  # the score, for a kind that scores on a scale

    @classmethod
    def from_json(cls, p: Mapping[str, Any]) -> Answer:
        """One entry of a predict answer's `predictions` (a label and its scores, a score on a
        scale, or a set of spans)."""
        if "spans" in p:  # the stored form: spans without text or score, in order, compact
            spans = sorted(({"start": x["start"], "end": x["end"], "label": x["label"]} for x in p["spans"]),
                           key=lambda x: (x["start"], x["end"]))
            return cls(p["id"], json.dumps(spans, separators=(",", ":"), ensure_ascii=False), {},
                       bool(p.get("feedback_wanted", False)))
        if "score" in p:
            return cls(p["id"], format(float(p["score"]), ".6g"), {}, bool(p.get("feedback_wanted", False)),
                       float(p["score"]))
        return cls(p["id"], p["label"], p.get("scores", {}), bool(p.get("feedback_wanted", False)))


def _body(r: httpx.Response) -> Any:
    if not r.content:
        return None
    if r.headers.get("content-type", "").split(";")[0].endswith("json"):  # also application/problem+json
        try:
            return r.json()
        except ValueError:
            pass
    return r.text


def _expect(r: httpx.Response, *ok: int) -> Any:
    """The decoded body when the status is one of `ok`; an ApiError otherwise."""
    if r.status_code not in ok:
        raise ApiError(r.request.method, r.request.url.path, r.status_code, _body(r))
    return _body(r)


class FlywheelClient:
    """Admin calls go with the admin token (none: a loopback server in development mode);
    client calls (predict, feedback) with the client key given per call, or the admin token.

    Use as a context manager, or call `close()`.
    """

    def __init__(self, url: str, admin_token: str | None = None, *, timeout_s: float = 60.0,
                 predict_attempts: int = 20) -> None:
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)
        self.predict_attempts = predict_attempts

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FlywheelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ admin

    def create_task(self, spec: Mapping[str, Any]) -> Json:
        """POST /v1/tasks.  A mapping, not keywords: the task body has a field named `lambda`."""
        return _expect(self.http.post("/v1/tasks", json=dict(spec)), 201)

    def task(self, name: str) -> Json:
        return _expect(self.http.get(f"/v1/tasks/{name}"), 200)

    def create_client(self, name: str, tasks: list[str], scopes: list[str] | None = None,
                      trusted: bool = False) -> str:
        """A new client's API key for `tasks` (the server shows it only this once); `scopes`
        default to the server's (predict, feedback, read); `trusted`: its feedback is known truth
        to the noise model (an internal QA team)."""
        body: Json = {"name": name, "tasks": tasks, **({"scopes": scopes} if scopes is not None else {}),
                      **({"trusted": True} if trusted else {})}
        return _expect(self.http.post("/v1/clients", json=body), 201)["key"]

    def retrain(self, task: str) -> tuple[int, bool]:
        """(run id, whether this call queued it).  The server keeps one open run per task and
        answers a second request with 409 and that run's id; the caller joins that run."""
        r = self.http.post(f"/v1/tasks/{task}/retrain")
        if r.status_code == 409:
            body = _body(r)
            if isinstance(body, dict) and "run_id" in body:
                return int(body["run_id"]), False
        return int(_expect(r, 202)["run_id"]), True

    def run(self, run_id: int) -> Json:
        return _expect(self.http.get(f"/v1/runs/{run_id}"), 200)

    def wait_run(self, run_id: int, *, timeout_s: float | None = None, poll_s: float = 0.5,
                 on_poll: Callable[[Json], None] | None = None) -> Json:
        """Poll the run until it is promoted, rejected or failed; the final run.  `on_poll` sees
        every poll (progress display).  TimeoutError after `timeout_s` (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            run = self.run(run_id)
            if on_poll is not None:
                on_poll(run)
            if run["status"] in FINAL_RUN_STATUSES:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout_s:g}s")
            time.sleep(poll_s)

    def versions(self, task: str, *, page_size: int = 500) -> list[Json]:
        """Every version of the task, following the pages (`Link: rel="next"`)."""
        out: list[Json] = []
        r = self.http.get(f"/v1/tasks/{task}/models", params={"limit": page_size})
        while True:
            out += _expect(r, 200)
            nxt = r.links.get("next", {}).get("url")
            if not nxt:
                return out
            r = self.http.get(nxt)

    def activate(self, task: str, version: int) -> Json:
        """Make `version` the active one.  The API process loads it in the background: use
        `wait_served` before relying on answers from it."""
        return _expect(self.http.post(f"/v1/tasks/{task}/models/{version}/activate"), 200)

    def served_versions(self) -> dict[str, int]:
        """Task -> version number the API process serves now (from /readyz; empty while not ready)."""
        r = self.http.get("/readyz")
        return dict(r.json().get("models", {})) if r.status_code == 200 else {}

    def wait_served(self, task: str, version: int, *, timeout_s: float = 120.0, poll_s: float = 0.1) -> None:
        """Until the API serves `version` of `task`: activation (by an admin or the gate) is
        stored at once but loaded in the background.  TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (served := self.served_versions().get(task)) != version:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API still serves version {served} of {task!r}, not {version}, "
                                   f"after {timeout_s:g}s")
            time.sleep(poll_s)

    def metrics(self) -> str:
        """The Prometheus exposition text of /metrics."""
        return _expect(self.http.get("/metrics"), 200)

    # ------------------------------------------------------------ clients

    def predict(self, task: str, texts: Sequence[str], *, key: str | None = None,
                batch: int = 64) -> tuple[list[int], list[Answer]]:
        """(model version of each answer, answers), `batch` texts per request (at most the
        server's FLYWHEEL_MAX_TEXTS_PER_REQUEST, 64 by default)."""
        versions: list[int] = []
        answers: list[Answer] = []
        for s in range(0, len(texts), batch):
            chunk = list(texts[s: s + batch])
            body = self._predict_once(task, chunk, key)
            versions += [int(body["model_version"])] * len(chunk)
            answers += [Answer.from_json(p) for p in body["predictions"]]
        return versions, answers

    def _predict_once(self, task: str, texts: list[str], key: str | None) -> Json:
        """One request.  A 503 means "not now" (model still loading, queue full): retried after
        its Retry-After, up to `predict_attempts` times."""
        for _ in range(max(1, self.predict_attempts)):
            r = self.http.post(f"/v1/tasks/{task}/predict", json={"texts": texts}, headers=self._auth(key))
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
        return _expect(r, 200)

    def feedback(self, prediction_id: str, body: Mapping[str, Any], *, key: str | None = None) -> Json:
        """POST the signal (+1 / -1, optionally a correction) on one prediction."""
        return _expect(self.http.post(f"/v1/predictions/{prediction_id}/feedback", json=dict(body),
                                      headers=self._auth(key)), 201)

    @staticmethod
    def _auth(key: str | None) -> dict[str, str]:
        """Per-request headers override the client's: a client key replaces the admin token."""
        return {"Authorization": f"Bearer {key}"} if key else {}

"""The few Flywheel endpoints the simulator uses, over HTTP (httpx), nothing else."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import httpx

FINAL = ("promoted", "rejected", "failed")


class ApiError(RuntimeError):
    pass


def _check(r: httpx.Response, *ok: int) -> Any:
    if r.status_code not in ok:
        raise ApiError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:500]}")
    return r.json() if r.content else None


@dataclass(frozen=True)
class Answer:
    id: str
    label: str


class FlywheelAPI:
    """Admin calls with the admin token; client calls with the key given per call."""

    def __init__(self, url: str, admin_token: str, timeout: float = 600.0) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self._max_texts: int | None = None

    def close(self) -> None:
        self.http.close()

    # -- admin

    def create_task(self, payload: dict[str, Any]) -> dict[str, Any]:
        return _check(self.http.post("/v1/tasks", json=payload, headers=self.admin), 201)

    def task(self, name: str) -> dict[str, Any]:
        return _check(self.http.get(f"/v1/tasks/{name}", headers=self.admin), 200)

    def create_client(self, name: str) -> str:
        """A new client's API key."""
        return _check(self.http.post("/v1/clients", json={"name": name}, headers=self.admin), 201)["key"]

    def retrain(self, task: str) -> int:
        """Queue a run (or join the one already queued or running); its id."""
        r = self.http.post(f"/v1/tasks/{task}/retrain", headers=self.admin)
        if r.status_code == 409 and "run_id" in r.json():
            return int(r.json()["run_id"])
        return int(_check(r, 202)["run_id"])

    def run(self, run_id: int) -> dict[str, Any]:
        return _check(self.http.get(f"/v1/runs/{run_id}", headers=self.admin), 200)

    def wait_run(self, run_id: int, *, timeout_s: float, poll_s: float = 0.5,
                 on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(run_id)
            if on_poll is not None:
                on_poll(run)
            if run["status"] in FINAL:
                return run
            if time.monotonic() > deadline:
                raise ApiError(f"run {run_id} still {run['status']} after {timeout_s:g}s")
            time.sleep(poll_s)

    def versions(self, task: str) -> list[dict[str, Any]]:
        return _check(self.http.get(f"/v1/tasks/{task}/models", headers=self.admin), 200)

    def activate(self, task: str, version: int) -> None:
        _check(self.http.post(f"/v1/tasks/{task}/models/{version}/activate", headers=self.admin), 200)

    def served_versions(self) -> dict[str, int]:
        """Task -> version number the API process serves now (from /readyz)."""
        r = self.http.get("/readyz")
        return dict(r.json().get("models", {})) if r.status_code == 200 else {}

    def wait_served(self, task: str, version: int, *, timeout_s: float = 120.0) -> None:
        """Until the API serves `version` of `task` (a promoted version is loaded in the background)."""
        deadline = time.monotonic() + timeout_s
        while self.served_versions().get(task) != version:
            if time.monotonic() > deadline:
                raise ApiError(f"the API still serves {self.served_versions().get(task)} of {task!r}, "
                               f"not version {version}, after {timeout_s:g}s")
            time.sleep(0.1)

    # -- clients

    def predict(self, task: str, texts: Sequence[str], key: str, batch: int) -> tuple[list[int], list[Answer]]:
        """(model version of each answer, answers), in batches of `batch` texts per request."""
        versions: list[int] = []
        answers: list[Answer] = []
        for s in range(0, len(texts), batch):
            chunk = list(texts[s: s + batch])
            body = self._predict_once(task, chunk, key)
            versions += [int(body["model_version"])] * len(chunk)
            answers += [Answer(p["id"], p["label"]) for p in body["predictions"]]
        return versions, answers

    def _predict_once(self, task: str, texts: list[str], key: str, attempts: int = 20) -> dict[str, Any]:
        """One request; a 503 (model loading, queue full) is retried after its Retry-After."""
        for _ in range(attempts):
            r = self.http.post(f"/v1/tasks/{task}/predict", json={"texts": texts},
                               headers={"Authorization": f"Bearer {key}"})
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
        return _check(r, 200)

    def feedback(self, prediction_id: str, body: dict[str, Any], key: str) -> None:
        _check(self.http.post(f"/v1/predictions/{prediction_id}/feedback", json=body,
                              headers={"Authorization": f"Bearer {key}"}), 201)

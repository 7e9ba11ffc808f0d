"""The OpenAPI document tells the truth: it validates as OpenAPI 3.1, every reference resolves,
every operation documents its problem+json errors, and schemathesis, sending generated requests
to a live server as the admin and as a client key, finds no server error and no answer that
breaks the document (status, content type, headers, body schema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from support import ADMIN, ADMIN_TOKEN, make_settings
from support.live import serve_in_thread

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection", "missing_required_header", "unsupported_method",
    "allow_header_conformance", "ignored_auth",
])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_the_document_is_valid_and_every_reference_resolves(client) -> None:
    doc = client.get("/openapi.json").json()
    validate(doc)
    for ref in set(_refs(doc)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref


def test_every_operation_documents_its_problem_answers(client) -> None:
    doc = client.get("/openapi.json").json()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            errors = {code: r for code, r in op["responses"].items() if code.startswith(("4", "5"))}
            assert "503" in errors and "413" in errors, (method, path)
            if path.startswith("/v1/"):
                assert {"401", "403", "422", "429"} <= set(errors), (method, path)
            for code, r in errors.items():
                assert list(r["content"]) == ["application/problem+json"], (method, path, code)
            assert "HTTPValidationError" not in str(op)


def test_a_405_allows_every_method_of_the_path(client) -> None:
    r = client.put("/v1/tasks")
    assert r.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["allow"].split(",")}
    assert "GET" in r.json()["detail"] and "POST" in r.json()["detail"]


@pytest.fixture
def live(tmp_path: Path, sqlite_url: str, tiny_model_dir: Path) -> Iterator[tuple[str, str]]:
    """A live server with one task and a client key for it; rate limits off (schemathesis sends
    thousands of requests as fast as it can)."""
    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir, rate_limit_per_s=0)
    with serve_in_thread(settings) as base:
        with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as c:
            c.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}).raise_for_status()
            key = c.post("/v1/clients", json={"name": "fuzz", "tasks": ["tickets"]}).json()["key"]
        yield base, key


@pytest.mark.faults
@pytest.mark.parametrize("who", ["admin", "client"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(live, who: str, tmp_path: Path) -> None:
    base, key = live
    token = ADMIN_TOKEN if who == "admin" else key
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    done = subprocess.run(
        [cli, "run", f"{base}/openapi.json", "-H", f"Authorization: Bearer {token}", "--checks", CHECKS,
         "--max-examples", "25", "--seed", "1", "--no-color", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    summary = done.stdout[done.stdout.find("SUMMARY"):]
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "passed" in summary and "failures" not in summary.lower().split("warnings")[0], summary

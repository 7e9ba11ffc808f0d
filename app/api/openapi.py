"""The OpenAPI document, made to tell the truth about errors: every operation lists the
problem+json answers it can give (RFC 9457, one `Problem` schema), instead of FastAPI's
default `422 HTTPValidationError` that no route of ours ever sends, and schemas the hand-written
request bodies point at live under `components/schemas` where their `$ref`s lead."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.api.problems import MEDIA_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:flywheel:problem:<slug>, stable per kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What is wrong, in words a person can act on."},
        "instance": {"type": "string"},
        "field": {"type": "string", "description": "The field, header or parameter at fault."},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}

WHY = {
    400: "A body that cannot be decoded (not UTF-8 JSON)",
    401: "No or an unknown API key",
    403: "The key may not do this (admin only, a missing scope, or development mode refusing a web page)",
    404: "No such task, prediction, run, version or client (or not this key's)",
    405: "Method not allowed",
    409: "Conflicts with the current state",
    413: "Body over the size limit",
    415: "Unsupported media type",
    422: "Invalid input; `field` names it, nothing was changed",
    429: "Over a rate limit; see Retry-After",
    503: "Database unavailable, model not loaded or queue full; see Retry-After",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

# What every call can meet before its route runs (body limit, development-mode guard, auth, limits,
# outage); then what each kind of operation adds.
EVERY_CALL = (403, 413, 503)
AUTHENTICATED = (401, 403, 422, 429)
EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/tasks"): (409,),
    ("post", "/v1/tasks/{task}/retrain"): (404, 409),
    ("post", "/v1/runs/{run_id}/cancel"): (404, 409),
    ("post", "/v1/tasks/{task}/examples"): (404, 415),
    ("post", "/v1/predictions/{prediction_id}/feedback"): (404, 409),
    ("post", "/v1/tasks/{task}/predict"): (409,),  # user-erased: its user was erased while it was in flight
}


def _statuses(method: str, path: str) -> set[int]:
    codes = set(EVERY_CALL)
    if path.startswith("/v1/"):
        codes.update(AUTHENTICATED)
        if "{" in path:
            codes.add(404)
    if method in ("post", "put", "patch"):
        codes.add(400)
    codes.update(EXTRA.get((method, path), ()))
    return codes


def _component_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """The models' JSON schemas with their nested definitions pulled up beside them, every
    reference pointing into components/schemas."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def install(app: FastAPI, *, body_models: tuple[type[BaseModel], ...] = ()) -> None:
    """Replace `app.openapi` with the truthful document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["Problem"] = PROBLEM_SCHEMA
        schemas.update(_component_schemas(*body_models))
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                for code in sorted(_statuses(method, path)):
                    answer: dict[str, Any] = {
                        "description": WHY[code],
                        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    }
                    if code in (429, 503):
                        answer["headers"] = RETRY_AFTER
                    responses[str(code)] = answer
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

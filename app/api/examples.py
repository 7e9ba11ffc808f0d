"""POST /v1/tasks/{task}/examples: JSON {"examples": [...]}, JSON lines, or a CSV with text,label
(text,score)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminDep, StateDep, TaskName
from app.api.problems import Problem, field_path
from app.api.schemas import ExampleIn, ExamplesOut, ExamplesRequest
from app.core.errors import Invalid, TooLarge
from app.services.examples import Row, import_examples, parse_csv

router = APIRouter(tags=["examples"])

EXAMPLES_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ExamplesRequest"}},
            "text/csv": {"schema": {"type": "string", "description": "CSV with a text,label (or text,score) header"}},
            "application/jsonl": {"schema": {"type": "string", "description": "one example object per line"}},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        }
    }
}


async def rows_from_request(request: Request, limit: int) -> list[Row]:
    """The example rows in the body, whatever its media type; nothing past `limit` bytes is taken."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise Invalid("file", "The form needs a 'file' part holding the CSV.")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"The file exceeds {limit} bytes.", field="file", title="Upload too large")
        return parse_csv(data)
    body = await request.body()
    if len(body) > limit:
        raise TooLarge(f"The body exceeds {limit} bytes.", field="body", title="Upload too large")
    if ctype in ("text/csv", "application/csv", "text/plain"):
        return parse_csv(body)
    if ctype in JSON_LINES:
        return parse_json_lines(body)
    if ctype in ("application/json", ""):
        try:
            parsed = ExamplesRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise _refused(exc) from None
        return [_row(e, f"examples[{i}]") for i, e in enumerate(parsed.examples)]
    raise Problem(415, "unsupported-media-type", "Unsupported media type",
                  f"Send application/json, application/jsonl, text/csv or multipart/form-data, not {ctype!r}.",
                  field="Content-Type")


JSON_LINES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines", "application/jsonlines")


def parse_json_lines(body: bytes) -> list[Row]:
    """One example object per line (the format of the shared data sets, e.g. {"text", "spans"});
    blank lines skipped; the first bad line is named."""
    rows: list[Row] = []
    for n, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(_row(ExampleIn.model_validate_json(line), f"line {n}"))
        except ValidationError as exc:
            raise _refused(exc, f"line {n}") from None
    if not rows:
        raise Invalid("body", "The JSON lines body holds no example.", slug="validation")
    return rows


def _row(example: ExampleIn, where: str) -> Row:
    name, value = example.answer()
    return Row(example.text, value, where, name)


def _refused(exc: ValidationError, where: str = "") -> Invalid:
    """The first validation error as a 422 naming its field (below `where`, a line of JSON lines)."""
    err = exc.errors()[0]
    path = field_path(tuple(err["loc"])) if err["loc"] or not where else ""
    field = ".".join(p for p in (where, path) if p)
    malformed = err["type"] == "json_invalid"
    return Invalid(field, f"{field}: {err['msg']}; nothing was imported.",
                   slug="malformed-json" if malformed else "validation",
                   title="Malformed JSON" if malformed else "Invalid request")


@router.post("/v1/tasks/{task}/examples", status_code=status.HTTP_201_CREATED, response_model=ExamplesOut,
             openapi_extra=EXAMPLES_BODY)
async def upload_examples(task: TaskName, request: Request, _: AdminDep, state: StateDep) -> ExamplesOut:
    """Import labelled examples; one bad row and nothing is imported (the row is named)."""
    # The body is read here, after AdminDep: `BodyLimit` leaves this path's body unread, so an
    # anonymous upload is refused before a byte of it is read; the limit and the shared budget
    # still count every byte read below.
    rows = await rows_from_request(request, state.settings.max_upload_bytes)
    counts = await run_in_threadpool(import_examples, state, task=task, rows=rows)
    return ExamplesOut(**counts)


"""Which engine runs a version's forward, and how one earns the right to.

Engines: `torch-fp32`, `torch-int8` (dynamic, per channel; CPU), `torch-fp16` (CUDA),
`onnx-fp32` and `onnx-int8` (ONNX Runtime; int8 on CPU, fp32 on CUDA where ONNX Runtime has its
CUDA provider).  The worker prepares them for a version before it is activated, off the
request path (`prepare_engines`): it exports the ONNX files into the version's `engines/`
directory, runs every engine and PyTorch fp32 (the reference) on the task's validation texts,
keeps the engines whose answers agree (`PARITY`), times them, and records it all with the
version, the fastest that passed as `chosen`.  API processes then serve by `FLYWHEEL_ENGINE`
(`choose`): `auto` the chosen one, `onnx` the ONNX one that passed, `torch` PyTorch as before.
Any engine that cannot be loaded (a missing or corrupt file) falls back to PyTorch, logged,
without failing a request.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from app.db.versions import ActiveRow
from app.kinds import TaskKind, get_kind, load_version
from app.kinds.base import Answer
from app.model.store import ENGINES_DIR, CorruptVersion, read_meta, verify_version
from app.serving.scoring import LoadedModel, prepare_for_inference, score_texts
from app.serving.onnx import OrtModel, cuda_available, export_onnx, quantize_onnx

log = logging.getLogger("flywheel.engines")

ONNX_FP32, ONNX_INT8 = "onnx-fp32", "onnx-int8"
ONNX_FILES = {ONNX_FP32: "model.onnx", ONNX_INT8: "model-int8.onnx"}

# Parity with PyTorch fp32 on the probe texts.  An engine passes when, on the rows the reference
# is sure of (the kind's uncertainty at most CONFIDENT_UNCERTAINTY: for one label per text, a margin
# of at least 0.2 between the two likeliest labels), at least MIN_CONFIDENT_AGREEMENT of its answers
# are the reference's, and its scores differ by at most MAX_MEAN_GAP on average (the kind's
# `answer_gap`: the labels' probabilities, a score as a share of its scale, 0 or 1 per text).
# Rows near a tie may flip under int8 rounding without the model being any worse.
CONFIDENT_UNCERTAINTY = 0.8
MIN_CONFIDENT_AGREEMENT = 0.98
MAX_MEAN_GAP = 0.03
PROBE_MAX_TEXTS = 256
TIMING_ROUNDS = 2


@dataclass(frozen=True)
class Parity:
    rows: int
    agreement: float  # over every row
    confident_rows: int
    confident_agreement: float
    mean_gap: float
    max_gap: float

    @property
    def ok(self) -> bool:
        return self.confident_agreement >= MIN_CONFIDENT_AGREEMENT and self.mean_gap <= MAX_MEAN_GAP


def parity(kind: TaskKind, labels: Sequence[str], ref: Sequence[Answer], new: Sequence[Answer]) -> Parity:
    agree = [kind.same(labels, a.label, b.label) for a, b in zip(ref, new)]
    sure = [i for i, a in enumerate(ref) if kind.uncertainty(a) <= CONFIDENT_UNCERTAINTY]
    gaps = [kind.answer_gap(labels, a, b) for a, b in zip(ref, new)]
    return Parity(rows=len(ref), agreement=sum(agree) / max(1, len(agree)), confident_rows=len(sure),
                  confident_agreement=sum(agree[i] for i in sure) / len(sure) if sure else 1.0,
                  mean_gap=sum(gaps) / max(1, len(gaps)), max_gap=max(gaps, default=0.0))


def candidates_for(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["torch-fp16"] + ([ONNX_FP32] if cuda_available() else [])
    return ["torch-fp32", "torch-int8", ONNX_FP32, ONNX_INT8]


def torch_default(device: torch.device, quantize: bool) -> str:
    """What serves without a verified record: the PyTorch engine as configured per task."""
    if device.type == "cuda":
        return "torch-fp16"
    return "torch-int8" if quantize else "torch-fp32"


def choose(record: dict[str, Any], setting: str, device: torch.device, quantize: bool) -> tuple[str, str]:
    """(engine, why) for a version with engine `record` under FLYWHEEL_ENGINE=`setting`."""
    default = torch_default(device, quantize)
    if setting == "torch":
        return default, "FLYWHEEL_ENGINE=torch"
    if not record:
        return default, "no engines prepared for this version yet"
    if record.get("device") != device.type:
        return default, f"engines were prepared on {record.get('device')}, this process runs on {device.type}"
    passed = {n for n, c in record.get("candidates", {}).items() if c.get("ok")}
    if setting == "onnx":
        for name in (ONNX_INT8, ONNX_FP32):
            if name in passed:
                return name, "FLYWHEEL_ENGINE=onnx"
        return default, "no ONNX engine passed parity: " + "; ".join(
            f"{n}: {c.get('why')}" for n, c in record.get("candidates", {}).items() if n.startswith("onnx"))
    chosen: str | None = record.get("chosen")
    if chosen is not None and chosen in passed:
        return chosen, "the fastest engine that passed parity"
    return default, "no engine passed parity"


# ---------------------------------------------------------------- building an engine


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _onnx_model(version_dir: Path, name: str, device: torch.device, record: dict[str, Any] | None) -> OrtModel:
    """The ONNX session for `name`, its file checked against the sha256 in `record`."""
    path = version_dir / ENGINES_DIR / ONNX_FILES[name]
    if not path.is_file():
        raise CorruptVersion(f"{name}: {path} is missing")
    want = ((record or {}).get("candidates", {}).get(name) or {}).get("sha256")
    if want and file_sha256(path) != want:
        raise CorruptVersion(f"{name}: {path} does not match the sha256 recorded when it was made")
    return OrtModel(path, device)


def _torch_model(version_dir: Path, name: str, device: torch.device) -> Any:
    model, _, _ = load_version(version_dir, device=device)
    if name == "torch-fp16":
        return model.half()
    if name == "torch-int8":
        return prepare_for_inference(model, device, quantize=True)[0]
    return model


def _from_reference(name: str, reference: torch.nn.Module) -> Any:
    """A PyTorch engine made from the fp32 model already in memory (quantising copies it)."""
    if name == "torch-fp16":
        return copy.deepcopy(reference).half()
    if name == "torch-int8":  # a CPU engine
        return prepare_for_inference(reference, torch.device("cpu"), quantize=True)[0]
    return reference


def build(version_dir: Path, name: str, device: torch.device, record: dict[str, Any] | None = None) -> Any:
    if name.startswith("onnx"):
        return _onnx_model(version_dir, name, device, record)
    return _torch_model(version_dir, name, device)


def load_engine(row: ActiveRow, name: str, *, device: torch.device, max_len: int) -> LoadedModel:
    """The version in `row` on engine `name`, warmed (no fallback: an engine that will not load raises)."""
    path = Path(row.path)
    meta = read_meta(path)
    model = build(path, name, device, row.engines)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    loaded = LoadedModel(task_id=row.task_id, task=row.task, version_id=row.version_id, version=row.version,
                         kind=get_kind(meta.kind), labels=list(meta.labels), model=model, tokenizer=tokenizer,
                         device=device, max_len=min(max_len, meta.max_seq_len or max_len),
                         quantized=name.endswith("int8"), engine=name, wanted=name)
    score_texts(loaded, ["warm up the kernels"], chunk=1)  # first call allocates; keep it off the request path
    return loaded


def load_for_serving(row: ActiveRow, *, device: torch.device, max_len: int, engine: str = "auto") -> LoadedModel:
    """Verify the version and load it on the engine `choose` picks, or on PyTorch if that
    engine cannot be loaded (a missing or corrupt file: logged, never a failed request)."""
    verify_version(Path(row.path), row.sha256, f"version {row.version} of task {row.task}")
    wanted, why = choose(row.engines, engine, device, row.quantize)
    try:
        loaded = load_engine(row, wanted, device=device, max_len=max_len)
    except Exception as exc:
        fallback = torch_default(device, row.quantize)
        log.error("task %s version %d: engine %s cannot be loaded (%s); serving %s", row.task, row.version, wanted,
                  exc, fallback)
        loaded = load_engine(row, fallback, device=device, max_len=max_len)
        why = f"{wanted} would not load: {exc}"
    loaded.wanted = wanted
    log.info("task %s version %d serves on %s (%s)", row.task, row.version, loaded.engine, why)
    return loaded


# ---------------------------------------------------------------- preparing engines (the worker)


def prepare_engines(version_dir: Path, *, texts: Sequence[str], device: torch.device, max_len: int,
                    chunk: int = 32) -> dict[str, Any]:
    """Export, check and time every engine for the version in `version_dir`; the record to store
    with it.  Runs in the worker before the version is activated."""
    meta = read_meta(version_dir)
    kind = get_kind(meta.kind)
    labels = list(meta.labels)
    texts = list(texts)[:PROBE_MAX_TEXTS]
    tokenizer = AutoTokenizer.from_pretrained(version_dir / "tokenizer", local_files_only=True)
    max_len = min(max_len, meta.max_seq_len or max_len)

    def loaded(name: str, model: Any) -> LoadedModel:
        return LoadedModel(task_id=0, task=meta.task, version_id=0, version=0, kind=kind, labels=labels, model=model,
                           tokenizer=tokenizer, device=device, max_len=max_len, engine=name)

    def answers(lm: LoadedModel) -> list[Answer]:
        return [s.answer for s in score_texts(lm, texts, chunk=chunk)]

    reference_model, _, _ = load_version(version_dir, device=device)
    reference = answers(loaded("torch-fp32", reference_model))
    candidates: dict[str, dict[str, Any]] = {}
    models: dict[str, LoadedModel] = {}
    engines_dir = version_dir / ENGINES_DIR
    for name in candidates_for(device):
        entry: dict[str, Any] = {"ok": False}
        candidates[name] = entry
        try:
            if name == ONNX_FP32:  # exported from a CPU fp32 copy (the reference itself, on CPU)
                cpu_model = reference_model if device.type == "cpu" else copy.deepcopy(reference_model).cpu()
                export_onnx(cpu_model, engines_dir / ONNX_FILES[name])
            elif name == ONNX_INT8:
                quantize_onnx(engines_dir / ONNX_FILES[ONNX_FP32], engines_dir / ONNX_FILES[name])
            if name in ONNX_FILES:
                entry.update(file=f"{ENGINES_DIR}/{ONNX_FILES[name]}",
                             sha256=file_sha256(engines_dir / ONNX_FILES[name]))
            model = build(version_dir, name, device, None) if name in ONNX_FILES else _from_reference(name, reference_model)
            lm = loaded(name, model)
            p = parity(kind, labels, reference, answers(lm))
            entry["parity"] = {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(p).items()}
            entry["ok"] = p.ok
            if p.ok:
                models[name] = lm
            else:
                entry["why"] = (f"parity: confident agreement {p.confident_agreement:.3f} (needs "
                                f"{MIN_CONFIDENT_AGREEMENT}), mean gap {p.mean_gap:.4f} (at most {MAX_MEAN_GAP})")
        except Exception as exc:
            entry["why"] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("engine %s for %s: %s", name, version_dir.name, entry["why"])
    for r in range(TIMING_ROUNDS):  # alternate the order: the machine's noise falls on every engine alike
        for name in (list(models) if r % 2 == 0 else list(reversed(models))):
            started = time.perf_counter()
            answers(models[name])
            ms = 1000.0 * (time.perf_counter() - started) / max(1, len(texts))
            candidates[name]["ms_per_text"] = round(min(ms, candidates[name].get("ms_per_text", ms)), 4)
    timed = {n: c["ms_per_text"] for n, c in candidates.items() if c.get("ok") and "ms_per_text" in c}
    chosen = min(timed, key=timed.__getitem__) if timed else None
    return {"device": device.type, "reference": "torch-fp32", "texts": len(texts), "chosen": chosen,
            "thresholds": {"confident_uncertainty": CONFIDENT_UNCERTAINTY,
                           "min_confident_agreement": MIN_CONFIDENT_AGREEMENT, "max_mean_gap": MAX_MEAN_GAP},
            "candidates": candidates}

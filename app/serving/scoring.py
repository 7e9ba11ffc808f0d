"""Running a loaded version: how a model is prepared for inference on its device, and how a
micro-batch of texts becomes one answer per text (tokenise once, forward length-sorted chunks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from app.kinds import TaskKind
from app.kinds.base import Answer
from app.model.encoder import encode_texts, pad_ids


@dataclass
class LoadedModel:
    task_id: int
    task: str
    version_id: int
    version: int
    kind: TaskKind
    labels: list[str]
    model: Any  # a torch module, or anything called the same way (app/serving/onnx.OrtModel)
    tokenizer: Any
    device: torch.device
    max_len: int
    quantized: bool = False
    engine: str = "torch-fp32"  # what runs the forward (app/serving/engines.py)
    wanted: str = "torch-fp32"  # what the version's record asked for (differs after a fallback)


@dataclass(frozen=True)
class Scored:
    """One text's answer and the exact version that gave it."""

    model: LoadedModel
    answer: Answer


def prepare_for_inference(model: torch.nn.Module, device: torch.device, quantize: bool) -> tuple[torch.nn.Module, bool]:
    """fp16 on CUDA; optional int8 dynamic quantisation of the Linear layers on CPU.

    Weights are quantised per output channel: with one scale per tensor, zero-shot SST-2
    lost about 2 accuracy points against fp32; per channel it stays within a fraction of a
    point and runs as fast (see docs/bench.md)."""
    if device.type == "cuda":
        return model.half(), False
    if quantize:
        import warnings

        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}), True
    return model, False


# Padded tokens per forward on CPU.  A micro-batch of 32 SST-2-like texts (25 tokens on
# average, up to ~60) padded as one block spends a third of its compute on padding; cut into
# length-sorted chunks of at most this many padded tokens it runs 35-50% faster on a 2-core
# CPU (docs/bench.md).  On CUDA one big block is better, so there the count limit alone holds.
CPU_CHUNK_TOKENS = 512


def chunk_bounds(lengths: Sequence[int], *, max_rows: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """Cut rows sorted by ascending length into [start, end) chunks of at most `max_rows` rows
    and at most `max_tokens` padded tokens (rows x longest row); a single row always fits."""
    bounds, start = [], 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and end - start < max_rows and (
            max_tokens is None or (end - start + 1) * lengths[end] <= max_tokens
        ):
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def score_texts(loaded: LoadedModel, texts: Sequence[str], *, chunk: int,
                max_tokens: int | None = None) -> list[Scored]:
    """Tokenise once, forward in length-sorted chunks (little padding), answers in the original order.

    An int8 engine forwards one text at a time: dynamic quantisation takes each activation's
    scale from the whole input tensor, so in a batch a text's answer would depend on the texts
    it happened to share the batch with (the soak saw 16 of 95,929 labels differ from the same
    version's answer alone).  On CPU a row alone costs little more (scripts/batch_invariance.py)."""
    if loaded.quantized:
        chunk = 1
    tok = loaded.tokenizer
    encoded = encode_texts(tok, texts, loaded.max_len, offsets=loaded.kind.token_level)
    ids = [e.ids for e in encoded]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    if max_tokens is None and loaded.device.type == "cpu":
        max_tokens = CPU_CHUNK_TOKENS
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[Scored | None] = [None] * len(texts)
    for start, end in chunk_bounds([len(ids[i]) for i in order], max_rows=chunk, max_tokens=max_tokens):
        idx = order[start:end]
        outputs = forward_ids(loaded.model, [ids[i] for i in idx], pad_id=pad_id, device=loaded.device)
        answers = loaded.kind.decode(outputs, loaded.labels, [encoded[i] for i in idx])
        for i, answer in zip(idx, answers):
            out[i] = Scored(loaded, answer)
    return out  # type: ignore[return-value]


@torch.inference_mode()
def forward_ids(model: torch.nn.Module, ids: Sequence[Sequence[int]], *, pad_id: int,
                device: torch.device) -> torch.Tensor:
    """Head outputs for already tokenised rows, on the CPU as float32."""
    return model(**pad_ids(ids, pad_id=pad_id, device=device)).float().cpu()



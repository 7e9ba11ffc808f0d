"""Why a model gave its answer: integrated gradients (Captum's LayerIntegratedGradients) on
the word embeddings, from a baseline where every word is [PAD] (the special tokens stay), to
the text, for the predicted label.  Each token's attribution is the sum over the embedding of
gradient × (input − baseline) along the path; positive pushed the answer towards the label,
negative against.  Cost: `steps` forwards and backwards of the PyTorch fp32 model (serving may
run a faster engine, which has no gradients)."""

from __future__ import annotations

import time
from typing import Any

import torch
from captum.attr import LayerIntegratedGradients

from app.model.encoder import encode_texts
from app.serving.engine import LoadedModel

STEPS = 32
METHOD = (f"integrated gradients (Captum LayerIntegratedGradients) on the word embeddings, {STEPS} steps "
          "from an all-[PAD] baseline, for the predicted label")


def explain(loaded: LoadedModel, text: str, *, steps: int = STEPS) -> dict[str, Any]:
    """{label, score, attributions: [{start, end, text, weight}], method, ms}; weights scaled so
    the largest magnitude is 1, one entry per token that covers characters of the text."""
    started = time.perf_counter()
    model, tok = loaded.model, loaded.tokenizer
    [enc] = encode_texts(tok, [text], loaded.max_len, offsets=True)
    ids = torch.tensor([enc.ids], device=loaded.device)
    mask = torch.ones_like(ids)
    special = set(tok.all_special_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    baseline = torch.tensor([[i if i in special else pad for i in enc.ids]], device=loaded.device)
    with torch.no_grad():
        probs = torch.softmax(model(ids, mask).float(), dim=-1)[0]
    target = int(probs.argmax())
    lig = LayerIntegratedGradients(lambda i, m: model(i, m).float(), model.encoder.get_input_embeddings())
    attributions = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask,), target=target,
                                 n_steps=steps, internal_batch_size=steps)
    per_token = attributions.sum(dim=-1)[0].detach().cpu()
    covered = [(k, s, e) for k, (s, e) in enumerate(enc.offsets) if e > s]
    scale = max((abs(float(per_token[k])) for k, _, _ in covered), default=0.0) or 1.0
    return {
        "label": loaded.labels[target],
        "score": round(float(probs[target]), 6),
        "attributions": [{"start": s, "end": e, "text": text[s:e], "weight": round(float(per_token[k]) / scale, 4)}
                         for k, s, e in covered],
        "method": METHOD if steps == STEPS else METHOD.replace(f"{STEPS} steps", f"{steps} steps"),
        "ms": round(1000 * (time.perf_counter() - started), 1),
    }

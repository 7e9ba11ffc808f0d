"""`tagging`: which spans of a text are a person, a company, a place (entity extraction).

Spans are character offsets into the text as sent (Unicode code points, `end` exclusive),
whatever the tokenizer does to it: the model tags sub-word tokens with BIO tags (O, B-x, I-x
per label x) and the tokenizer's offset mapping carries them back to characters.  A stored
label is the canonical JSON of the spans, `[{"start": 0, "end": 5, "label": "person"}]`
(sorted; `[]` for a text without entities).  A signal on one span of an answer is stored with
that span's index and trains only that span's tokens.

Head: logits = τ·cos(token state, w_tag) + b_tag.  Version 0 (no examples): B-x and I-x start
as the embedding of the label's name (and description), O as a near-orthogonal vector whose
bias is τ·ZERO_SHOT_THRESHOLD, so a token is tagged x when its state is closer to the name of
x than the threshold — label-name similarity per token.  Fine-tuning trains the same head.

Losses per row (tokens outside the row's scope, and special tokens, are ignored):
  data:      mean token cross-entropy on examples and corrections;
  feedback:  +1 → mean token cross-entropy on the tags shown (the answer, or the one span, is
             right); −1 → bounded (default) −log(1 − Π_t p(shown_t)): at least one token of the
             answer (or span) is wrong, with a floor of 0; signed: −mean CE, unbounded below;
             robust: Π_t p(shown_t), in [0, 1].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from app.core.errors import Invalid
from app.kinds.base import Answer, MetricNames, TaskKind, TaskSpec, UserMetrics
from app.kinds.classification import label_prompt
from app.model.encoder import Encoded, TokenTagger, hidden_size, load_base
from app.model.store import VersionMeta

ZERO_SHOT_SCALE = 20.0
ZERO_SHOT_THRESHOLD = 0.5  # cos(token, label name) above which version 0 tags the token
IGNORE = -100


# ---------------------------------------------------------------- spans and tags


Span = tuple[int, int, int]  # (start, end, label index)


@dataclass(frozen=True)
class TagTarget:
    """What a row says: these spans (label indices); `scope` None for the whole text, or the
    index of the one span a signal was about."""

    spans: tuple[Span, ...]
    scope: int | None = None


def tag_count(labels: Sequence[str]) -> int:
    return 1 + 2 * len(labels)


def dump_spans(spans: Sequence[Span], labels: Sequence[str]) -> str:
    """The canonical stored form (sorted, compact)."""
    return json.dumps([{"start": s, "end": e, "label": labels[j]} for s, e, j in sorted(spans)],
                      separators=(",", ":"), ensure_ascii=False)


def load_spans(label: str, labels: Sequence[str]) -> tuple[tuple[Span, ...], int | None]:
    """A stored label (a span list, or {"spans", "span"} for a signal on one span) as spans of
    label indices; ValueError for a label the task does not have."""
    data = json.loads(label)
    scope = None
    if isinstance(data, dict):
        data, scope = data["spans"], int(data["span"])
    spans = tuple(sorted((int(d["start"]), int(d["end"]), list(labels).index(d["label"])) for d in data))
    return spans, scope


def scoped(shown: str, span: int) -> str:
    """The stored label of a signal about span `span` of the answer `shown`."""
    return json.dumps({"spans": json.loads(shown), "span": span}, separators=(",", ":"), ensure_ascii=False)


def check_spans(value: Any, text: str, labels: Sequence[str], field: str) -> list[Span]:
    """Spans as sent, checked against the text and the task; Invalid naming the bad one."""
    if not isinstance(value, list):
        raise Invalid(field, f"{field} must be a list of spans {{start, end, label}}.", slug="bad-spans")
    out: list[Span] = []
    for i, sp in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(sp, dict) or set(sp) != {"start", "end", "label"}:
            raise Invalid(where, f"{where} must be {{start, end, label}}.", slug="bad-spans")
        start, end, label = sp["start"], sp["end"], sp["label"]
        for name, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise Invalid(f"{where}.{name}", f"{where}.{name} must be an integer.", slug="bad-spans")
        if not 0 <= start < end <= len(text):
            raise Invalid(f"{where}.end" if start >= 0 else f"{where}.start",
                          f"{where} [{start}, {end}) is not inside the text (0..{len(text)}) or is empty.",
                          slug="span-out-of-range")
        if label not in labels:
            raise Invalid(f"{where}.label", f"{where}.label {label!r} is not a label of this task.",
                          slug="unknown-label")
        out.append((start, end, list(labels).index(label)))
    out.sort()
    for a, b in zip(out, out[1:]):
        if b[0] < a[1]:
            raise Invalid(field, f"{field}: spans [{a[0]}, {a[1]}) and [{b[0]}, {b[1]}) overlap.",
                          slug="overlapping-spans")
    return out


def align(target: TagTarget, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Character spans -> one BIO tag per token (IGNORE for special tokens and, for a signal on
    one span, for every token outside it).  A token belongs to a span it overlaps."""
    tags: list[int] = []
    started: set[int] = set()
    for s, e in offsets:
        if e <= s:  # special token
            tags.append(IGNORE)
            continue
        k = next((k for k, (a, b, _) in enumerate(target.spans) if s < b and a < e), None)
        if k is None:
            tags.append(0 if target.scope is None else IGNORE)
            continue
        tag = 1 + 2 * target.spans[k][2] + (1 if k in started else 0)
        started.add(k)
        tags.append(tag if target.scope in (None, k) else IGNORE)
    return tags


def spans_of(tags: Sequence[int], offsets: Sequence[tuple[int, int]], probs: Sequence[float] | None = None
             ) -> list[tuple[int, int, int, float]]:
    """BIO tags per token -> (start, end, label index, mean token probability).  An I-x continues
    an open x; a B-x continues it only inside the same word (a sub-word piece); else it opens."""
    out: list[list[Any]] = []  # [start, end, label, probs] per span, lists while `cur` may still grow one
    cur: list[Any] | None = None
    for k, (tag, (s, e)) in enumerate(zip(tags, offsets)):
        if e <= s:
            continue
        p = probs[k] if probs is not None else 1.0
        if tag <= 0:
            cur = None
            continue
        label, inner = (tag - 1) // 2, (tag - 1) % 2 == 1
        if cur is not None and cur[2] == label and (inner or s == cur[1]):
            cur[1] = e
            cur[3].append(p)
            continue
        cur = [s, e, label, [p]]
        out.append(cur)
    return [(s, e, j, sum(ps) / len(ps)) for s, e, j, ps in out]


# ---------------------------------------------------------------- the head and version 0


class TagHead(nn.Module):
    """logits = scale · cos(token, w_tag) + b_tag, per token."""

    def __init__(self, hidden: int, num_tags: int, scale: float = ZERO_SHOT_SCALE) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_tags, hidden) * 0.02)
        self.bias = nn.Parameter(torch.zeros(num_tags))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()
        return self.log_scale.exp() * cos + self.bias


def tagger(encoder: nn.Module, labels: Sequence[str]) -> TokenTagger:
    return TokenTagger(encoder, TagHead(hidden_size(encoder), tag_count(labels)))


def build_zero_shot(base_model: str, labels: Sequence[str], descriptions: dict[str, str]) -> tuple[TokenTagger, Any]:
    encoder, tokenizer = load_base(base_model)
    model = tagger(encoder, labels)
    model.eval()
    emb = F.normalize(model.embed_texts(tokenizer, [label_prompt(lab, descriptions.get(lab)) for lab in labels]), dim=-1)
    head = model.head
    assert isinstance(head, TagHead)
    with torch.no_grad():
        # the O row is the one the label names do not set: drawn from a fixed seed, so version 0
        # is the same for the same task in any process, whatever the process drew before
        fixed = torch.Generator().manual_seed(0)
        head.weight[0].copy_(torch.randn(head.weight.shape[1], generator=fixed) * 0.02)
        for j in range(len(labels)):
            head.weight[1 + 2 * j].copy_(emb[j])
            head.weight[2 + 2 * j].copy_(emb[j])
            head.bias[2 + 2 * j] = -0.01  # a tie opens a span rather than continuing one
        head.bias[0] = ZERO_SHOT_SCALE * ZERO_SHOT_THRESHOLD
    return model, tokenizer


# ---------------------------------------------------------------- losses


def _shown_logprob(logits: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ log p(tag) over the tokens in scope, their count) per row.  (N, T, C), (N, T)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    mask = tags != IGNORE
    picked = lp.gather(-1, tags.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return picked.sum(-1), mask.sum(-1)


def data_losses(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy per row (rows with no token in scope: 0)."""
    s, n = _shown_logprob(logits, tags)
    return torch.where(n > 0, -s / n.clamp(min=1), torch.zeros_like(s))


def feedback_losses(logits: torch.Tensor, tags: torch.Tensor, signals: torch.Tensor, variant: str = "bounded"
                    ) -> torch.Tensor:
    s, n = _shown_logprob(logits, tags)
    mean_ce = torch.where(n > 0, -s / n.clamp(min=1), torch.zeros_like(s))
    if variant == "signed":
        return signals.float() * mean_ce
    if variant == "bounded":
        negative = -torch.log(-torch.expm1(s.clamp(max=-1e-6)))  # −log(1 − Π p), finite as Π p -> 1
    elif variant == "robust":
        negative = s.exp()
    else:
        raise ValueError(f"variant must be bounded, signed or robust, got {variant!r}")
    return torch.where(signals > 0, mean_ce, torch.where(n > 0, negative, torch.zeros_like(s)))


# ---------------------------------------------------------------- metrics


def entity_metrics(truth: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1 (exact span and label), micro over the rows."""
    tp = sum(len(set(t) & set(p)) for t, p in zip(truth, pred))
    n_true, n_pred = sum(len(t) for t in truth), sum(len(p) for p in pred)
    precision = tp / n_pred if n_pred else (1.0 if not n_true else 0.0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(truth), "entities": n_true, "predicted": n_pred, "precision": precision, "recall": recall,
            "f1": f1, "exact_rows": sum(set(t) == set(p) for t, p in zip(truth, pred)) / max(1, len(truth))}


# ---------------------------------------------------------------- the kind


class Tagging(TaskKind):
    name = "tagging"
    summary = "entity spans in the text"
    labels_meaning = "the entity types"
    value_field = "spans"
    answer_shape = "the full list of spans, each {start, end, label}"
    answer_input = "json"
    token_level = True
    min_labels = 1  # one entity type is a real tagging task
    ratio_name = "entity F1 (labelled and confirmed rows)"

    def build_model(self, encoder: nn.Module, meta: VersionMeta) -> TokenTagger:
        return tagger(encoder, meta.labels)

    def build_zero_shot(self, base_model: str, spec: TaskSpec) -> tuple[TokenTagger, Any]:
        return build_zero_shot(base_model, spec.labels, spec.descriptions)

    def target(self, spec: TaskSpec, label: str) -> TagTarget:
        spans, scope = load_spans(label, spec.labels)
        return TagTarget(spans, scope)

    def align(self, target: Any, encoded: Encoded) -> Any:
        return align(target, encoded.offsets)

    def target_tensor(self, targets: Sequence[Any]) -> torch.Tensor:
        width = max(len(t) for t in targets)
        return torch.tensor([list(t) + [IGNORE] * (width - len(t)) for t in targets], dtype=torch.long)

    data_losses = staticmethod(data_losses)  # the module's functions, documented there
    feedback_losses = staticmethod(feedback_losses)

    def decode(self, outputs: torch.Tensor, labels: Sequence[str], encoded: Sequence[Encoded] = ()) -> list[Answer]:
        answers = []
        for row, enc in zip(outputs, encoded):
            probs = torch.softmax(row[: len(enc.ids)].float(), dim=-1)
            best, tags = probs.max(-1)
            spans = spans_of(tags.tolist(), enc.offsets, best.tolist())
            real = [p for p, (s, e) in zip(best.tolist(), enc.offsets) if e > s]
            body = [{"start": s, "end": e, "label": labels[j], "text": enc.text[s:e], "score": round(p, 4)}
                    for s, e, j, p in spans]
            scores = {str(i): round(p, 6) for i, (_, _, _, p) in enumerate(spans)}
            scores["certainty"] = round(min(real), 6) if real else 1.0
            answers.append(Answer(dump_spans([(s, e, j) for s, e, j, _ in spans], labels), scores, {"spans": body}))
        return answers

    def answer_gap(self, labels: Sequence[str], a: Answer, b: Answer) -> float:
        """0 for the same spans, 1 otherwise."""
        return 0.0 if a.label == b.label else 1.0

    def uncertainty(self, answer: Answer) -> float:
        """1 − the least sure token's probability of its tag (an entity nearly missed or nearly found)."""
        return 1.0 - float(answer.scores.get("certainty", 1.0))

    def canonical(self, spec: TaskSpec, value: Any, *, text: str, field: str) -> str:
        return dump_spans(check_spans(value, text, spec.labels, field), spec.labels)

    def check_feedback(self, spec: TaskSpec, *, shown: str, signal: int, correction: str | None,
                       span: int | None = None) -> None:
        if span is not None:
            n = len(json.loads(shown))
            if correction is not None:
                raise Invalid("correction", "a correction is the full set of spans: send it without 'span'.",
                              slug="contradictory-feedback")
            if not 0 <= span < n:
                raise Invalid("span", f"span {span} is not one of the answer's {n} spans (0..{n - 1}).",
                              slug="unknown-span")
            return
        if correction is None:
            return
        if signal == 1 and correction != shown:
            raise Invalid("correction", "signal 1 says the spans shown were right, but the correction differs.",
                          slug="contradictory-feedback")
        if signal == -1 and correction == shown:
            raise Invalid("correction", "signal -1 says the spans shown were wrong, but the correction repeats "
                                        "them.", slug="contradictory-feedback")

    def read_answer(self, raw: str, *, field: str) -> Any:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise Invalid(field, f"Spans are a JSON list of {{start, end, label}}: {exc.msg} at character "
                                 f"{exc.pos}.", slug="invalid-spans") from None

    def answer_value(self, label: str) -> list[dict[str, Any]]:
        return json.loads(label)

    def category(self, label: str) -> str:
        types = sorted({str(d["label"]) for d in json.loads(label)})
        return "+".join(types) if types else "(none)"

    def scope_label(self, shown: str, span: int) -> str:
        return scoped(shown, span)

    def predicted_targets(self, outputs: Sequence[torch.Tensor], encoded: Sequence[Encoded] = ()) -> list[TagTarget]:
        out = []
        for row, enc in zip(outputs, encoded):
            tags = row[: len(enc.ids)].argmax(-1).tolist()
            out.append(TagTarget(tuple((s, e, j) for s, e, j, _ in spans_of(tags, enc.offsets))))
        return out

    def outcome(self, item: Any, predicted: Any) -> float | None:
        """Exact match of the whole answer (or, for a signal on one span, of that span)."""
        t: TagTarget = item.label
        if t.scope is None:
            right = set(predicted.spans) == set(t.spans)
        else:
            right = t.spans[t.scope] in predicted.spans
        if item.signal >= 0:
            return 1.0 if right else 0.0
        return 0.0 if right else None

    def ratio_terms(self, item: Any, predicted: Any) -> tuple[float, float] | None:
        """(2·TP, 2·TP + FP + FN) of this row, where its whole truth is known: a labelled row, or
        a +1 on the whole answer (the spans shown are the truth).  The gate decides on entity F1."""
        t: TagTarget = item.label
        if item.signal < 0 or t.scope is not None:
            return None
        tp = len(set(t.spans) & set(predicted.spans))
        return 2.0 * tp, float(len(t.spans) + len(predicted.spans))

    def confidence(self, item: Any, output: torch.Tensor, predicted: Any) -> float:
        """Π over tokens of the probability of the tag chosen (the whole answer right)."""
        if item.signal < 0 and self.outcome(item, predicted) == 0.0:
            return 0.0
        return float(torch.log_softmax(output.float(), -1).max(-1).values.sum().exp())

    def gate_metrics(self, items: Sequence[Any], predicted: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        """Entity precision/recall/F1 on validation examples and on corrections; for held-out
        feedback, how often answers keep what a +1 confirmed and what a −1 refuted.  `score` is
        the weighted share of known outcomes that are right."""
        metrics: dict[str, Any] = {"n": len(items)}
        for source, name in (("example", "examples"), ("correction", "corrections")):
            rows = [(it.label.spans, p.spans) for it, p in zip(items, predicted) if it.source == source]
            if rows:
                metrics[name] = entity_metrics(*map(list, zip(*rows)))
        pos = [self.outcome(it, p) for it, p in zip(items, predicted) if it.signal > 0]
        neg = [self.outcome(it, p) for it, p in zip(items, predicted) if it.signal < 0]
        if pos or neg:
            metrics["feedback"] = {"n_positive": len(pos), "n_negative": len(neg),
                                   # (a +1 row's outcome is always known)
                                   "kept_positive": sum(o for o in pos if o is not None) / len(pos) if pos else None,
                                   "kept_negative": sum(o == 0.0 for o in neg) / len(neg) if neg else None,
                                   "unknown_negative": sum(o is None for o in neg)}
        return {**metrics, **self.known_score(items, predicted)}

    def is_right(self, labels: Sequence[str], shown: str, gold: str) -> bool:
        return shown == gold

    def judge_parts(self, labels: Sequence[str], shown: str, gold: str) -> list[int]:
        """+1 on each span shown that is exactly right (start, end and label), −1 on each that is not."""
        right = json.loads(gold)
        return [1 if span in right else -1 for span in json.loads(shown)]

    metric_names = MetricNames(main="entity F1", main_detail="exact span and label, micro over the test texts",
                               second="share of texts exactly right")
    corrections_target = 0.9  # per-span ±1 say little about the spans a text lacks

    def score_answers(self, labels: Sequence[str], gold: Sequence[str], shown: Sequence[str]) -> UserMetrics:
        """Entity F1 (exact span and label, micro over the texts) and the share of texts whose
        spans are exactly right."""
        m = entity_metrics([load_spans(g, labels)[0] for g in gold], [load_spans(s, labels)[0] for s in shown])
        return UserMetrics(m["f1"], m["exact_rows"])

    # -- data files: JSON lines of {text, spans}

    data_shape = "spans"
    labels_are_answers = False  # a label names an entity type; an answer is a list of spans

    def task_from_data(self, answers: Sequence[Any]) -> dict[str, Any]:
        """The entity types the file's spans use."""
        return {"labels": sorted({str(s["label"]) for spans in answers for s in spans})}

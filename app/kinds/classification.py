"""`classification`: one label per text (sentiment, intent, topic).

The head is a cosine head, logits = scale · cos(pooled text, w_c).  Version 0 is zero-shot:
each row w_c starts as the embedding of the label's name (and description), so predicting is
"which label text is this text closest to"; fine-tuning trains the same encoder and head, so
version 0 and version N load and serve the same way.

Losses (per row; `app/learning/losses.py` mixes them by λ):
  data:      cross-entropy on examples and corrections;
  feedback:  see `feedback_losses` — bounded, the literal signed form, robust; and through
             `right_log_probs` the noise-aware corrected (default) and unbiased forms
             (`app/learning/losses.py`).
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from app.core.errors import Invalid
from app.kinds.base import Answer, MetricNames, TaskKind, TaskSpec, UserMetrics
from app.model.encoder import Encoded, EncoderWithHead, hidden_size, load_base, tokenize
from app.model.store import VersionMeta

ZERO_SHOT_SCALE = 20.0
VARIANTS = ("bounded", "signed", "robust")


# ---------------------------------------------------------------- the head and version 0


class CosineHead(nn.Module):
    """logits = scale · cos(x, w_c): a head whose rows can start as label-text embeddings."""

    def __init__(self, hidden: int, num_labels: int, scale: float = ZERO_SHOT_SCALE) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_labels, hidden) * 0.02)
        # Stored as a log so gradient steps keep it positive.
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=-1)
        w = F.normalize(self.weight, dim=-1)
        return self.log_scale.exp() * (x @ w.t())


def classifier(encoder: nn.Module, num_labels: int) -> EncoderWithHead:
    """Encoder + mean pooling + cosine head.  forward(ids, mask) -> logits (B, C)."""
    return EncoderWithHead(encoder, CosineHead(hidden_size(encoder), num_labels))


def label_prompt(label: str, description: str | None = None) -> str:
    """The text a label is embedded as for zero-shot: `card_lost` -> `card lost`."""
    name = label.replace("_", " ").replace("-", " ").strip()
    return f"{name}: {description}" if description else name


def build_zero_shot(base_model: str, labels: Sequence[str], descriptions: dict[str, str] | None = None
                    ) -> tuple[EncoderWithHead, Any]:
    """Zero-shot start: each label's head row is the embedding of its name/description."""
    encoder, tokenizer = load_base(base_model)
    model = classifier(encoder, len(labels))
    model.eval()
    descriptions = descriptions or {}
    emb = model.embed_texts(tokenizer, [label_prompt(lab, descriptions.get(lab)) for lab in labels])
    head = model.head
    assert isinstance(head, CosineHead)
    with torch.no_grad():
        head.weight.copy_(F.normalize(emb, dim=-1))
    return model, tokenizer


@torch.inference_mode()
def predict_proba(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, max_len: int,
                  device: torch.device) -> torch.Tensor:
    """Softmax probabilities (B, C) on the CPU as float32, for one padded batch."""
    logits = model(**tokenize(tokenizer, texts, max_len, device))
    return torch.softmax(logits.float(), dim=-1).cpu()


# ---------------------------------------------------------------- losses


def data_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy on labelled examples and corrections.  (N, C), (N,) -> (N,)."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def log_not(logits: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """log(1 − p(shown)) computed as logsumexp over the other classes − logsumexp over all.

    Stable where p → 1: it stays finite as long as the logits are, unlike log1p(−softmax).
    """
    others = logits.scatter(1, shown.unsqueeze(1), float("-inf"))
    return torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)


def feedback_losses(
    logits: torch.Tensor, shown: torch.Tensor, signals: torch.Tensor, variant: str = "bounded"
) -> torch.Tensor:
    """Per-row loss for a ±1 signal on the label that was shown.  (N, C), (N,), (N,) -> (N,).

    bounded: +1 -> −log p,  −1 -> −log(1 − p).  The gradient of the −1 branch fades as p -> 0.
    signed:  f·CE(shown) = −f·log p.  For −1 this is  log p, which has no lower bound: the
             optimiser can always lower it further by driving p towards 0 (kept to compare).
    robust:  +1 -> −log p,  −1 -> p.  The −1 branch is the probability still on the refuted label,
             bounded in [0, 1] (the MAE / "unhinged" complementary loss).  Its gradient on the
             shown logit is p(1 − p), which fades as p -> 1, whereas bounded's is p, its largest
             exactly there.  So a −1 that contradicts a confident answer, which is most often a
             noisy or hostile −1 once the model is mostly right, cannot outweigh the +1s.
             Symmetric losses like this one tolerate label noise (Ghosh et al., AAAI 2017;
             for complementary labels, Ishiguro et al., ICML 2022).
    """
    logits = logits.float()
    log_p = -F.cross_entropy(logits, shown, reduction="none")
    if variant == "bounded":
        return torch.where(signals > 0, -log_p, -log_not(logits, shown))
    if variant == "signed":
        return -signals.to(log_p.dtype) * log_p
    if variant == "robust":
        return torch.where(signals > 0, -log_p, log_p.exp())
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


# ---------------------------------------------------------------- metrics


def label_metrics(truth: Sequence[Hashable], pred: Sequence[Hashable], name: Any = str) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes seen in truth or prediction (as scikit-learn does), and
    recall per class present in truth, keyed by `name(class)`."""
    if len(truth) != len(pred) or not truth:
        raise ValueError(f"need equal, non-empty sequences, got {len(truth)} true and {len(pred)} predicted")
    classes = sorted(set(truth) | set(pred), key=str)
    recall: dict[str, float] = {}
    support_of: dict[str, int] = {}
    f1s: list[float] = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        support = sum(t == c for t in truth)
        predicted = sum(p == c for p in pred)
        if support:
            recall[name(c)] = tp / support
            support_of[name(c)] = support
        f1s.append(2 * tp / (support + predicted) if support + predicted else 0.0)
    return {
        "n": len(truth),
        "accuracy": sum(t == p for t, p in zip(truth, pred)) / len(truth),
        "macro_f1": sum(f1s) / len(f1s),
        "recall": recall,
        "support": support_of,
    }


def _weighted_rate(hits: Sequence[bool], weights: Sequence[float]) -> float:
    total = sum(weights)
    return sum(w for h, w in zip(hits, weights) if h) / total if total > 0 else 0.0


# ---------------------------------------------------------------- the kind


class Classification(TaskKind):
    name = "classification"
    summary = "one label per text"
    explainable = True

    def build_model(self, encoder: nn.Module, meta: VersionMeta) -> EncoderWithHead:
        return classifier(encoder, len(meta.labels))

    def build_zero_shot(self, base_model: str, spec: TaskSpec) -> tuple[EncoderWithHead, Any]:
        return build_zero_shot(base_model, spec.labels, spec.descriptions)

    def target(self, spec: TaskSpec, label: str) -> int:
        return spec.labels.index(label)  # ValueError for a label the task lacks

    def target_tensor(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.tensor(list(targets), dtype=torch.long)

    data_losses = staticmethod(data_losses)  # the module's functions, documented there
    feedback_losses = staticmethod(feedback_losses)

    def right_log_probs(self, outputs: torch.Tensor, shown: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(shown) and log(1 − p(shown)), both stable where p -> 0 or 1."""
        logits = outputs.float()
        return -F.cross_entropy(logits, shown, reduction="none"), log_not(logits, shown)

    def decode(self, outputs: torch.Tensor, labels: Sequence[str], encoded: Sequence[Encoded] = ()) -> list[Answer]:
        answers = []
        for row in torch.softmax(outputs.float(), dim=-1).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            scores = {lab: round(p, 6) for lab, p in zip(labels, row)}
            answers.append(Answer(labels[best], scores, {"label": labels[best], "scores": scores}))
        return answers

    def uncertainty(self, answer: Answer) -> float:
        """1 − the margin between the two most likely labels (0: sure; 1: a coin toss between two)."""
        top = sorted(answer.scores.values(), reverse=True)[:2]
        return 1.0 - (top[0] - (top[1] if len(top) > 1 else 0.0))

    def canonical(self, spec: TaskSpec, value: Any, *, text: str, field: str) -> str:
        if not isinstance(value, str):
            raise Invalid(field, f"{field} must be a label (a string), got {value!r}", slug="unknown-label")
        label = value.strip()
        if label not in spec.labels:
            raise Invalid(field, f"{label!r} is not a label of this task", slug="unknown-label")
        return label

    def check_feedback(self, spec: TaskSpec, *, shown: str, signal: int, correction: str | None,
                       span: int | None = None) -> None:
        if correction is None:
            return
        if correction not in spec.labels:
            raise Invalid("correction", f"{correction!r} is not a label of this task.", slug="unknown-label")
        if signal == -1 and correction == shown:
            raise Invalid("correction", f"signal -1 says {shown!r} was wrong, but the correction repeats it.",
                          slug="contradictory-feedback")
        if signal == 1 and correction != shown:
            raise Invalid("correction", f"signal 1 says {shown!r} was right, but the correction says "
                          f"{correction!r}.", slug="contradictory-feedback")

    def predicted_targets(self, outputs: Sequence[torch.Tensor], encoded: Sequence[Encoded] = ()) -> list[int]:
        return torch.stack(list(outputs)).argmax(-1).tolist()

    def outcome(self, item: Any, predicted: Any) -> float | None:
        if item.signal >= 0:  # a labelled row, or a +1: `label` is the right answer
            return 1.0 if predicted == item.label else 0.0
        return 0.0 if predicted == item.label else None  # a −1: only keeping the refuted label is known wrong

    def confidence(self, item: Any, output: torch.Tensor, predicted: Any) -> float:
        """p(answer); on a −1 row, renormalised without the refuted label, which is known wrong."""
        p = torch.softmax(output.float(), dim=-1)
        if item.signal < 0:
            if predicted == item.label:
                return 0.0
            rest = float(1.0 - p[item.label])
            return float(p[predicted]) / rest if rest > 0 else 0.0
        return float(p[predicted])

    def gate_metrics(self, items: Sequence[Any], predicted: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        """Labelled validation examples (accuracy, macro-F1, per-class recall and support),
        corrections (accuracy) and the held-out feedback, scored honestly: a +1'd label kept is
        right, changed is wrong; a −1'd label kept is wrong, changed is unknown (counted apart,
        never as right).  `score` is the weighted accuracy over every row whose outcome is known.
        Rows carry their per-client weights, so the cap on one client's share holds here too."""
        metrics: dict[str, Any] = {"n": len(items)}
        examples = [(it, p) for it, p in zip(items, predicted) if it.source == "example"]
        if examples:
            metrics["examples"] = label_metrics([it.label for it, _ in examples], [p for _, p in examples],
                                                name=lambda c: labels[c])
        corrections = [(it, p) for it, p in zip(items, predicted) if it.source == "correction"]
        if corrections:
            acc = _weighted_rate([p == it.label for it, p in corrections], [it.weight for it, _ in corrections])
            metrics["corrections"] = {"n": len(corrections), "accuracy": acc}
        feedback = [(it, p) for it, p in zip(items, predicted) if it.signal != 0]
        if feedback:
            pos = [(p == it.label, it.weight) for it, p in feedback if it.signal > 0]
            neg = [(p == it.label, it.weight) for it, p in feedback if it.signal < 0]
            metrics["feedback"] = {
                "n_positive": len(pos),
                "n_negative": len(neg),
                "kept_positive": _weighted_rate(*zip(*pos)) if pos else None,  # right
                "kept_negative": _weighted_rate(*zip(*neg)) if neg else None,  # known wrong
                "unknown_negative": sum(not kept for kept, _ in neg),  # changed a −1'd label: not known
            }
        return {**metrics, **self.known_score(items, predicted)}

    def is_right(self, labels: Sequence[str], shown: str, gold: str) -> bool:
        return shown == gold

    metric_names = MetricNames(main="accuracy", second="macro-F1")

    def score_answers(self, labels: Sequence[str], gold: Sequence[str], shown: Sequence[str]) -> UserMetrics:
        m = label_metrics(list(gold), list(shown))
        return UserMetrics(m["accuracy"], m["macro_f1"])

    # -- data files: text,label CSV

    data_shape = "label"
    answers_are_labels = True

    def task_from_data(self, answers: Sequence[Any]) -> dict[str, Any]:
        """The labels the file uses."""
        return {"labels": sorted(set(answers))}

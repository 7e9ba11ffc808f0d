"""The interface every task kind implements: what differs between classification, rating and
tagging, and nothing else.

Everything around a kind is shared and kind-agnostic: the micro-batcher, the served-model
cache and hot swap, training runs and their lifecycle, the gate's procedure, storage, the
HTTP plumbing, the console, the simulator and the bench.  They ask a kind through four small
protocols, one per concern; `TaskKind` is all four, and each kind module implements it:

- `KindModel`, model and losses: `build_model` (encoder + this kind's head) and
  `build_zero_shot` (version 0); `target` (a stored label -> what the loss compares with),
  `align`, `target_tensor`, `data_losses` and `feedback_losses` (per-row;
  `app/learning/losses.py` mixes them by λ), `right_log_probs`; `decode` (a batch of head
  outputs -> one `Answer` per text, what is stored and sent) and `uncertainty`;
- `KindAnswers`, answers, their schema and validation: what the API's schemas and the console's
  forms say of the kind (`summary`, `labels_meaning`, `options`: the task's own fields,
  `answer_shape`, `answer_input`), `define` and `describe` (a task's fields), `canonical` (an
  example's or correction's value -> the label string stored; `value_field` names it in
  requests), `read_answer` (what a person typed in a form), `answer_value`, `category`, `same`
  (do two stored labels say the same), `answer_gap`, `check_feedback` and `scope_label`;
- `KindMetrics`, the gate's view: `predicted_targets`, `outcome` (right, wrong or unknown per
  validation row; the gate's paired test runs on these), `confidence`, `gate_metrics` (a
  `score` in [0, 1] for display, plus whatever the kind can report; a per-class
  `recall`/`support` under `examples` is guarded), `ratio_terms` and `known_score`;
- `KindUser`, the simulated user: `is_right` (does a shown answer match the gold one),
  `judge_parts` (what it says of each part of a wrong answer), `score_answers` and
  `metric_names` (a version's answers on a test set, as the simulator and the bench report
  them), `corrections_target`; and which data files make a task of this kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Sequence

import torch

from app.core.errors import Invalid
from app.model.encoder import Encoded, EncoderWithHead
from app.model.store import VersionMeta


@dataclass(frozen=True)
class TaskSpec:
    """What a kind knows of a task: plain values from its row, no ORM."""

    name: str
    kind: str
    labels: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, task: Any) -> "TaskSpec":
        """From anything with a task's fields (a `Task` row), without importing the database."""
        return cls(name=task.name, kind=task.kind, labels=[str(lab) for lab in task.labels],
                   descriptions=dict(task.descriptions or {}))


@dataclass(frozen=True)
class TaskOption:
    """A field of a task that only some kinds have (a scale's range): given when the task is
    created, shown when it is read.  The API's task schemas are assembled from the kinds' options."""

    annotation: Any  # its type, as pydantic validates it (the API adds `| None`: it is optional)
    description: str  # what it is, for the API's schema (prefixed with the kinds that have it)


@dataclass(frozen=True)
class UserMetrics:
    """A version's answers to a test set, scored the way this kind's users judge them: `main`
    (higher is better), `second`, and `error` (lower is better) for a kind that has an error
    metric.  `KindUser.metric_names` says what each one is."""

    main: float
    second: float
    error: float | None = None


@dataclass(frozen=True)
class MetricNames:
    """What a kind's `UserMetrics` are called in reports: a short name each (an axis, a table
    heading), and for the main and the error metric how it is measured where the name does not say."""

    main: str
    second: str
    error: str | None = None  # None: the kind has no error metric
    main_detail: str | None = None
    error_detail: str | None = None


@dataclass(frozen=True)
class Answer:
    """One text's answer: `label` and `scores` are stored with the prediction; `body` is what the
    client gets beside the prediction's id."""

    label: str
    scores: dict[str, float]
    body: dict[str, Any]


class KindModel(ABC):
    """Model and losses: the head a kind puts on the encoder, what it trains towards and how it
    reads the head's outputs back into answers.  The trainer, the served model and the engines
    need only this."""

    name: ClassVar[str]
    token_level: ClassVar[bool] = False  # the head answers per token: decoding needs the tokens' offsets
    explainable: ClassVar[bool] = False  # one label per text, which attributions can be computed towards

    # -- architecture

    @abstractmethod
    def build_model(self, encoder: torch.nn.Module, meta: VersionMeta) -> EncoderWithHead:
        """The encoder with this kind's (untrained) head, shaped for the version `meta` describes."""

    @abstractmethod
    def build_zero_shot(self, base_model: str, spec: TaskSpec) -> tuple[EncoderWithHead, Any]:
        """Version 0 from the base encoder, before any example: (model, tokenizer)."""

    # -- training

    @abstractmethod
    def target(self, spec: TaskSpec, label: str) -> Any:
        """A stored label as the loss's target; KeyError/ValueError for one the task does not have."""

    def align(self, target: Any, encoded: Encoded) -> Any:
        """A row's target as the trainer feeds it, once the text is tokenised (token-level kinds
        map character spans to tokens here); by default the target itself."""
        return target

    @abstractmethod
    def target_tensor(self, targets: Sequence[Any]) -> torch.Tensor:
        """Targets of a batch as one tensor (first dimension: rows)."""

    @abstractmethod
    def data_losses(self, outputs: torch.Tensor, targets: torch.Tensor, /) -> torch.Tensor:
        """Per-row loss on labelled rows (examples, corrections).  (N, ...) -> (N,).  Arguments by
        position: a kind may plug in a module function whose parameters it names its own way."""

    @abstractmethod
    def feedback_losses(self, outputs: torch.Tensor, shown: torch.Tensor, signals: torch.Tensor,
                        variant: str, /) -> torch.Tensor:
        """Per-row loss for a ±1 signal on the answer that was shown.  -> (N,)."""

    def right_log_probs(self, outputs: torch.Tensor, shown: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log p, log(1 − p)) per row, p the model's probability that the answer shown was right:
        what the noise-aware feedback losses (`app/learning/losses.py`) observe through each
        client's flips.  None: this kind has no such probability, and those losses fall back to
        its bounded loss weighted by how much of a signal survives the flips."""
        return None

    # -- serving

    @abstractmethod
    def decode(self, outputs: torch.Tensor, labels: Sequence[str], encoded: Sequence[Encoded] = ()) -> list[Answer]:
        """Head outputs of a batch (on the CPU, float32) -> one answer per row; `encoded` holds each
        row's text, tokens and offsets (token-level kinds need them)."""

    @abstractmethod
    def uncertainty(self, answer: Answer) -> float:
        """How unsure the model was of this answer, in [0, 1] (1: no idea): what makes a label from
        the user worth asking for."""


class KindAnswers(ABC):
    """Answers: what a task of this kind is made of and what an answer to it may be — the task's
    fields, the stored label string, how the API shows it, and the checks on what clients send
    (each raises `app.core.errors.Invalid` naming the field)."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for a person choosing a kind: what a task of this kind answers
    # what a task's `labels` are when it is created, for the API's schema and the console's form;
    # None: this kind takes no labels (`define` derives the stored ones from its options)
    labels_meaning: ClassVar[str | None] = "the labels"
    min_labels: ClassVar[int] = 2
    options: ClassVar[Mapping[str, TaskOption]] = {}  # the task's fields only this kind has, by name
    value_field: ClassVar[str] = "label"  # what an example or a correction calls its answer in requests
    answer_shape: ClassVar[str] = "a label"  # what an answer is, in a few words, for the API's schema
    # how a person writes an answer in a form field or a CSV cell: one of the task's labels, a
    # number, or JSON (a structure, which a CSV cell does not take); the console picks its input by it
    answer_input: ClassVar[Literal["label", "number", "json"]] = "label"

    # -- the task

    def define(self, *, labels: list[str], descriptions: dict[str, str], options: Mapping[str, Any]
               ) -> tuple[list[str], dict[str, str]]:
        """A new task's stored (labels, descriptions) from what was asked for and the values of this
        kind's `options` (None where not given); Invalid naming the field that does not fit this
        kind.  By default: named labels, at least `min_labels` of them."""
        if len(labels) < self.min_labels:
            raise Invalid("labels", f"a {self.name} task needs at least {self.min_labels} label"
                                    f"{'s' if self.min_labels > 1 else ''}, got {len(labels)}.")
        unknown = sorted(set(descriptions) - set(labels))
        if unknown:
            raise Invalid("descriptions", f"descriptions name unknown labels: {', '.join(unknown)}.")
        return labels, descriptions

    def describe(self, spec: TaskSpec) -> dict[str, Any]:
        """The values of this kind's `options` for a task, which the API shows besides its labels
        and descriptions."""
        return {}

    # -- answers and the checks on them

    @abstractmethod
    def canonical(self, spec: TaskSpec, value: Any, *, text: str, field: str) -> str:
        """An example's or a correction's answer for `text`, as the label string stored (the same
        answer always gives the same string); Invalid naming `field` for one the task cannot learn."""

    def read_answer(self, raw: str, *, field: str) -> Any:
        """A person's answer typed in a form field (stripped, not empty; see `answer_input`) as a
        request would carry it, for `canonical` to judge; Invalid naming `field` when it cannot be
        read.  By default the text itself: a label."""
        return raw

    def answer_value(self, label: str) -> Any:
        """A stored label as the API shows it (a label; a rating's number; a tagging's spans)."""
        return label

    def category(self, label: str) -> str:
        """The class of a stored answer whose share drift monitoring follows (a label; a
        rating's scale point; for tagging, which entity types the text had)."""
        return label

    def same(self, labels: Sequence[str], a: str, b: str) -> bool:
        """Do two stored labels say the same about a text (classification: equal; rating: close)?"""
        return a == b

    def answer_gap(self, labels: Sequence[str], a: Answer, b: Answer) -> float:
        """How far apart two answers to one text are, in [0, 1], for checking that an inference
        engine answers as PyTorch fp32 does: by default the largest difference between their
        scores (for classification, the label probabilities)."""
        keys = [k for k in a.scores if k in b.scores]
        return max((abs(float(a.scores[k]) - float(b.scores[k])) for k in keys), default=0.0)

    @abstractmethod
    def check_feedback(self, spec: TaskSpec, *, shown: str, signal: int, correction: str | None,
                       span: int | None = None) -> None:
        """A signal (and correction) must make sense for the answer that was shown; `span`: the
        signal is about one part of the answer (tagging)."""

    def scope_label(self, shown: str, span: int) -> str:
        """The stored label a signal about part `span` of the answer `shown` trains on; Invalid
        naming `span` for a kind whose answers have no parts."""
        raise Invalid("span", f"a {self.name} answer has no parts to give feedback on.", slug="field-not-for-kind")


class KindMetrics(ABC):
    """Metrics: how the gate judges a model of this kind on validation rows — each row's outcome,
    the model's confidence in it, and the metrics shown beside the decision."""

    ratio_name: ClassVar[str] = "ratio"  # what the gate calls the metric `ratio_terms` gives
    # `confidence` is the model's belief, to be calibrated on the outcomes the gate knows (False:
    # it is already a probability from what the row allows, and calibrating it on the few rows
    # whose outcome a moved score leaves known would only add noise)
    calibrate_confidence: ClassVar[bool] = True

    @abstractmethod
    def predicted_targets(self, outputs: Sequence[torch.Tensor], encoded: Sequence[Encoded] = ()) -> list[Any]:
        """The answer of each row (one output row per text) as a target (comparable with `Item.label`)."""

    @abstractmethod
    def outcome(self, item: Any, predicted: Any) -> float | None:
        """Was `predicted` right for this validation row: 1.0, 0.0, or None when the row cannot tell
        (a −1 says what is wrong, not what is right)."""

    @abstractmethod
    def confidence(self, item: Any, output: torch.Tensor, predicted: Any) -> float:
        """The model's own probability that `predicted` is right for this validation row, taking
        into account what the row says (a −1 rules its label out): the gate's estimate of the
        outcomes it cannot know, after calibrating it on the outcomes it can."""

    @abstractmethod
    def gate_metrics(self, items: Sequence[Any], predicted: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        """Metrics of one model on validation items (`app.learning.dataset.Item`); `score` None when
        there are no items."""

    def ratio_terms(self, item: Any, predicted: Any) -> tuple[float, float] | None:
        """For a kind whose quality is a ratio over rows rather than a mean of per-row outcomes
        (tagging's entity F1 = Σ 2·TP / Σ (2·TP + FP + FN)): this row's (numerator, denominator)
        when its truth is known, else None (whatever `predicted` is).  The gate then compares the
        two models' ratio on those rows.  None for every row by default: per-row outcomes decide."""
        return None

    def known_score(self, items: Sequence[Any], predicted: Sequence[Any]) -> dict[str, Any]:
        """`known_rows` and `score`: the weighted share of right answers among the rows whose
        outcome is known (None without any), the part of `gate_metrics` every kind shares."""
        known = [(o, it.weight) for it, p in zip(items, predicted) if (o := self.outcome(it, p)) is not None]
        total = sum(w for _, w in known)
        return {"known_rows": len(known), "score": sum(o * w for o, w in known) / total if known and total > 0 else None}


class KindUser(ABC):
    """The simulated user: how a person using a task of this kind answers and judges what they
    are shown, for the simulator (`app/tools/simulate/`) and the bench (`app/tools/bench/`)."""

    @abstractmethod
    def is_right(self, labels: Sequence[str], shown: str, gold: str) -> bool:
        """Would a truthful user say +1 to `shown` when the right answer is `gold`?"""

    def judge_parts(self, labels: Sequence[str], shown: str, gold: str) -> list[int]:
        """What a truthful user who finds `shown` wrong, and does not correct it, says of each part
        of it: +1 or −1 per part, in order (sent as feedback on that `span`); [] when the answer
        has no parts, and then the user says −1 to the whole.  By default answers have no parts."""
        return []

    # -- what a simulated user reports of a version's answers on a test set (the simulator's and
    #    the bench's reports)

    metric_names: ClassVar[MetricNames]  # what `score_answers` measures
    # the share of the supervised arm's main metric that users sending ±1 and corrections must
    # reach at the last round: a target of its own for a kind whose bare ±1 teach too little to
    # be judged against supervised (None: the targets every kind shares are enough)
    corrections_target: ClassVar[float | None] = None

    @abstractmethod
    def score_answers(self, labels: Sequence[str], gold: Sequence[str], shown: Sequence[str]) -> UserMetrics:
        """The answers `shown` to a test set whose right answers are `gold` (stored labels, one
        per text), for a task whose labels are `labels`."""

    # -- data files (`app/tools/datasets.py`): which shape of file holds this kind's texts and
    #    answers ("label", "score" or "spans"; None: none of them), so a tool given a file can ask
    #    the registry for the kind (`app.kinds.kind_for_data`) and the kind for the task
    data_shape: ClassVar[str | None] = None
    # every answer is one of the task's labels: answers can be counted right against a file's
    # labels by equality (accuracy), as the bench's int8 and trainer comparisons do
    answers_are_labels: ClassVar[bool] = False
    # every one of the task's labels is itself an answer, so a correction that names one fits any
    # text (what the bench's feedback load sends)
    labels_are_answers: ClassVar[bool] = True

    def task_from_data(self, answers: Sequence[Any]) -> dict[str, Any]:
        """The create-task fields besides `name` and `kind` (labels, or this kind's options) that
        a data file's answers imply, as `app.tools.datasets` reads them.  By default none: a kind
        with no `data_shape` is not made from such a file."""
        raise ValueError(f"{type(self).__name__} reads no data file of texts and answers")


class TaskKind(KindModel, KindAnswers, KindMetrics, KindUser):
    """A task kind: all four concerns, which each kind module implements in one class and
    registers in `app.kinds.KINDS`.  Code that needs one concern only takes that protocol."""

    name: ClassVar[str]

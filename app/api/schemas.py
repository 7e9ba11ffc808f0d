"""Request and response bodies of the HTTP API (the policy's own schema is `app.core.policy.Policy`).
A task's fields that only some kinds have come from the kinds (`TaskKind.options`), and what the
kinds' labels and answers are from their declarations: no kind is named here."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional


from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, create_model, field_validator,
                      model_validator)

from app.kinds import DEFAULT_KIND, KINDS, options_of_every_kind
from app.services.clients import SCOPES
from app.core.policy import DEFAULT_FEEDBACK_LOSS, DEFAULT_FINETUNE, DEFAULT_LAMBDA, FeedbackLoss, Finetune, Policy
from app.core.texts import storable

TASK_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Text = Annotated[str, AfterValidator(storable)]

KIND_OPTIONS = options_of_every_kind()  # a task's fields only some kinds have: (option, the kinds that have it)


def _kind_fields() -> dict[str, Any]:
    """The kinds' options as optional pydantic fields, each described with the kinds that have it."""
    return {name: (Optional[option.annotation], Field(None, description=f"{', '.join(owners)}: {option.description}"))
            for name, (option, owners) in KIND_OPTIONS.items()}


LABELS_MEANING = "; ".join(f"{k.name}: {k.labels_meaning} (at least {k.min_labels})"
                           for k in KINDS.values() if k.labels_meaning is not None) + "."
ANSWER_SHAPES = "; ".join(f"{k.name}: {k.answer_shape}" for k in KINDS.values())


class TaskCreateFields(BaseModel):
    """The fields every task has; `TaskCreate` adds the kinds' options."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TASK_NAME, description="Lowercase letters, digits, '-' and '_'.")
    kind: Literal[tuple(KINDS)] = DEFAULT_KIND  # type: ignore[valid-type]
    labels: list[Text] = Field(default_factory=list, max_length=1000, description=LABELS_MEANING)
    descriptions: dict[str, Text] = Field(default_factory=dict, description="Optional text per label.")
    lambda_data: float = Field(DEFAULT_LAMBDA, ge=0, le=1, alias="lambda",
                               description="λ in L = λ·L_data + (1−λ)·L_feedback")
    feedback_loss: FeedbackLoss = DEFAULT_FEEDBACK_LOSS
    finetune: Finetune = DEFAULT_FINETUNE
    quantize: bool = Field(False, description="Serve with int8 dynamic quantisation (CPU).")
    policy: Policy = Field(default_factory=Policy)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        cleaned = [lab.strip() for lab in v]
        for i, lab in enumerate(cleaned):
            if not lab or len(lab) > 128:
                raise ValueError(f"label {i} must be 1 to 128 characters")
        dupes = sorted({lab for lab in cleaned if cleaned.count(lab) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; repeated: {', '.join(dupes)}")
        return cleaned

    def options(self) -> dict[str, Any]:
        """The kinds' options as given (None: not given), for the chosen kind to take or refuse."""
        return {name: getattr(self, name, None) for name in KIND_OPTIONS}


if TYPE_CHECKING:
    TaskCreate = TaskCreateFields
else:
    TaskCreate = create_model("TaskCreate", __base__=TaskCreateFields, **_kind_fields())


class VersionOut(BaseModel):
    id: int
    version: int
    status: str
    parent_id: int | None
    sha256: str
    training_run_id: int | None
    metrics: dict[str, Any]
    data_counts: dict[str, Any]
    engines: dict[str, Any] = Field(description="Inference engines prepared for this version: each one's "
                                    "parity against PyTorch fp32 on the task's validation texts, its measured "
                                    "speed, its files' sha256, and `chosen`, the fastest that passed.")
    reason: str | None
    created_at: datetime
    activated_at: datetime | None


class TaskOutFields(BaseModel):
    """The fields every task shows; `TaskOut` adds the kinds' options (null for a kind without)."""

    name: str
    kind: str
    labels: list[str] = Field(description="The task's labels as its kind stores them: the names given, or for a "
                                          "kind that scores on a scale, its points (the ends and the anchors' values).")
    descriptions: dict[str, str]
    lambda_: float = Field(serialization_alias="lambda")
    feedback_loss: str
    finetune: str
    quantize: bool
    policy: dict[str, Any]
    active_version: VersionOut | None
    counts: dict[str, Any]
    created_at: datetime


if TYPE_CHECKING:
    TaskOut = TaskOutFields
else:
    TaskOut = create_model("TaskOut", __base__=TaskOutFields, **_kind_fields())


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text | None = None
    texts: list[Text] | None = Field(None, min_length=1, description="Several texts at once (at least one).")
    user_id: Text | None = Field(None, min_length=1, max_length=256, description="Your end user; stored hashed.")

    @model_validator(mode="after")
    def _one_of(self) -> "PredictRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self


class PredictionOut(BaseModel):
    id: str
    label: str
    scores: dict[str, float]
    feedback_wanted: bool = Field(description="A label from your user would teach the model most here: ask "
                                              "for it.  True on at most the task's policy.feedback_budget "
                                              "share of predictions.")


class PredictResponse(BaseModel):
    model_version: int
    predictions: list[PredictionOut]


class ReviewItem(BaseModel):
    prediction_id: str
    text: str
    label: str = Field(description="The answer that was given.")
    scores: dict[str, float]
    signal: int | None = Field(description="The latest feedback signal on it (−1), or null if none yet.")
    value: float = Field(description="How much a correction would teach: the kind's uncertainty of the answer "
                                     "(0..1) times a boost of up to 2 for a label with few labelled rows.")
    reason: Literal["refuted without a correction", "uncertain", "rare label"]
    created_at: datetime


class ReviewResponse(BaseModel):
    task: str
    items: list[ReviewItem] = Field(description="Best first: −1s without a correction (most recent first), "
                                                "then by value.")


class SpanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: int = Field(description="First character (Unicode code point), from 0.")
    end: int = Field(description="One past the last character.")
    label: Text


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: Literal[1, -1] = Field(description="1: the answer was right; -1: it was wrong.")
    correction: Text | float | list[SpanIn] | None = Field(
        None, description=f"The right answer, when known, as the task's kind takes it ({ANSWER_SHAPES}).")
    span: int | None = Field(None, ge=0, description="For a kind whose answers have parts: the signal is about "
                                                     "this part of the answer (its index), not the whole answer.")
    user_id: Text | None = Field(None, min_length=1, max_length=256)

    @field_validator("signal", mode="before")
    @classmethod
    def _not_a_bool(cls, v: object) -> object:
        if isinstance(v, bool):  # JSON true would otherwise pass as 1
            raise ValueError("signal must be the number 1 or -1, not a boolean")
        return v

    @field_validator("correction", mode="before")
    @classmethod
    def _correction_not_a_bool(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("correction must be a label, a number or spans, not a boolean")
        return v

    def correction_value(self) -> Any:
        """The correction as plain data (spans as dicts), for the task's kind to judge."""
        if isinstance(self.correction, list):
            return [s.model_dump() for s in self.correction]
        return self.correction


class FeedbackOut(BaseModel):
    id: int
    prediction_id: str
    signal: int
    correction: str | float | list[dict[str, Any]] | None = Field(
        description=f"The correction as stored, as the task's kind shows it ({ANSWER_SHAPES}).")
    span: int | None = None
    created_at: datetime


class ExampleIn(BaseModel):
    """One labelled text and its answer, under the name the task's kind gives it (`label`, `score` or `spans`)."""

    model_config = ConfigDict(extra="forbid")

    text: Text
    label: Text | None = None
    score: float | None = None
    spans: list[SpanIn] | None = None

    @model_validator(mode="after")
    def _one_answer(self) -> "ExampleIn":
        given = [n for n in ("label", "score", "spans") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of 'label', 'score' or 'spans', not {' and '.join(given)}")
        return self

    def answer(self) -> tuple[str | None, Any]:
        """(what the example called its answer, the answer as plain data); (None, None) when it
        has none (the task's kind names what is missing)."""
        if self.spans is not None:
            return "spans", [s.model_dump() for s in self.spans]
        if self.score is not None:
            return "score", self.score
        return ("label", self.label) if self.label is not None else (None, None)


class ExamplesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: list[ExampleIn] = Field(min_length=1)


class ExamplesOut(BaseModel):
    imported: int
    train: int
    validation: int


Scope = Literal[SCOPES]  # type: ignore[valid-type]


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=128)
    tasks: list[Annotated[str, Field(pattern=TASK_NAME)]] = Field(
        min_length=1, max_length=1000, description="The tasks this key may use; it sees no other.")
    scopes: list[Scope] = Field(default_factory=lambda: list(SCOPES), min_length=1,
                                description="What the key may do on its tasks: predict, give feedback on "
                                            "its own predictions, read the task and its review queue.")
    trusted: StrictBool = Field(False, description="An admin vouches for this key's feedback (an internal QA team): "
                                             "the noise model takes its votes as known truth for the others.")


class ClientUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trusted: StrictBool = Field(description="Vouch for this key's feedback, or stop.")


class ClientOut(BaseModel):
    id: int
    name: str
    key_prefix: str
    tasks: list[str]
    scopes: list[str]
    trusted: bool
    created_at: datetime
    revoked_at: datetime | None


class ClientRevoked(ClientOut):
    purged_feedback: int = Field(description="Feedback signals deleted with the key (0 without ?purge=true).")


class ClientCreated(ClientOut):
    key: str = Field(description="Shown once; only its hash is stored.")


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1)


class Attribution(BaseModel):
    start: int
    end: int
    text: str
    weight: float = Field(description="Towards the label (> 0) or against it (< 0); the largest magnitude is 1.")


class ExplainResponse(BaseModel):
    task: str
    model_version: int
    label: str
    score: float
    attributions: list[Attribution]
    method: str
    ms: float = Field(description="What this explanation cost, in milliseconds.")


class PredictionExplanation(ExplainResponse):
    prediction_id: str
    prediction_version: int = Field(description="The version that answered the prediction; `model_version` "
                                                "is the one served now, which the explanation is of.")
    text: str


class NoiseEvidence(BaseModel):
    known: int = Field(description="Votes compared with known truth: a labelled example, the admin's or the "
                                   "review queue's word, a trusted key's vote.")
    anchors: int = Field(description="Votes on answers the model was almost sure of (its own error corrected for).")
    peers: int = Field(description="Votes compared with the other clients' majority on the same answer.")


class NoiseEstimate(BaseModel):
    rate: float = Field(description="Posterior mean probability that a ±1 is flipped.")
    low: float = Field(description="90 % interval, lower end.")
    high: float = Field(description="90 % interval, upper end.")
    evidence: NoiseEvidence
    trusted: bool
    adversarial: bool = Field(description="The interval lies above ½: it says the opposite more often than not.")
    careless: bool = Field(description="A narrow interval that covers ½: it answers at random.")


class ClientNoise(NoiseEstimate):
    client_id: int
    name: str


class NoiseResponse(BaseModel):
    task: str
    pooled: NoiseEstimate = Field(description="All untrusted clients together; each client is shrunk toward it.")
    clients: list[ClientNoise]

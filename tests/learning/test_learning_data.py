"""A task's dataset from the database: contradictions resolved, one client capped, a
deterministic split, corrections used as labels, and the watermark the policy counts from."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.db.tables import Task
from app.db.training_rows import current_watermark, new_signals_since
from app.learning.dataset import Vote, auc, client_reliability, client_weights, resolve
from app.runs.execute import gather_dataset
from app.core.texts import normalize_text, split_for, text_hash
from support.learning import LABELS, add_client, add_examples, add_feedback, create_task, synthetic

BANK, WEATHER = 0, 1


@pytest.fixture
def task_id(factory: sessionmaker[Session], settings: Settings) -> int:
    return create_task(factory, settings, policy={"feedback_validation_fraction": 0.0})


def _dataset(factory: sessionmaker[Session], task_id: int):
    with factory() as s:
        return gather_dataset(s, s.get(Task, task_id))


def _feedback_rows(ds) -> list:
    return [it for it in ds.train + ds.validation if it.source != "example"]


def test_split_is_deterministic_by_normalised_text() -> None:
    assert normalize_text("  Lost  MY\tcard ") == "lost my card"
    assert text_hash("Lost my card") == text_hash("lost   my card ")
    assert split_for("Lost my card") == split_for("  lost my CARD")
    sides = [split_for(f"text number {i}") for i in range(2000)]
    assert sides == [split_for(f"text number {i}") for i in range(2000)]
    assert 0.15 < sides.count("validation") / len(sides) < 0.25  # the default 20%, by hash
    assert split_for("anything", 0.0) == "train" and split_for("anything", 1.0) == "validation"


def test_feedback_follows_the_text_split(factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings, policy={"feedback_validation_fraction": 0.5})
    pairs = synthetic(30, seed=3)
    for text, label in pairs:
        add_feedback(factory, task_id, text, label, +1)
    first, second = _dataset(factory, task_id), _dataset(factory, task_id)
    assert [it.text for it in first.validation] == [it.text for it in second.validation]
    assert {it.text for it in first.validation} == {t for t, _ in pairs if split_for(t, 0.5) == "validation"}
    assert first.validation and first.train


def test_corrections_are_used_as_labels(factory: sessionmaker[Session], task_id: int) -> None:
    add_feedback(factory, task_id, "rain today", "bank", -1, correction="weather")
    add_examples(factory, task_id, [("lost my card", "bank")], split="train")
    ds = _dataset(factory, task_id)
    (corr,) = [it for it in ds.train if it.source == "correction"]
    assert (corr.text, corr.label, corr.signal) == ("rain today", WEATHER, 0)
    assert ds.counts["corrections"] == 1 and ds.counts["examples"] == 1 and ds.counts["negative"] == 0


def test_latest_signal_wins_when_no_majority_disagrees(factory: sessionmaker[Session], task_id: int) -> None:
    a, b = add_client(factory, "a"), add_client(factory, "b")
    add_feedback(factory, task_id, "Lost card", "bank", +1, client_id=a)
    add_feedback(factory, task_id, "lost  CARD", "bank", -1, client_id=b)  # same text once normalised
    (row,) = _feedback_rows(_dataset(factory, task_id))
    assert (row.label, row.signal, row.client_id) == (BANK, -1, b)


def test_majority_beats_the_latest_signal(factory: sessionmaker[Session], task_id: int) -> None:
    clients = [add_client(factory, f"c{i}") for i in range(4)]
    for c in clients[:3]:
        add_feedback(factory, task_id, "lost card", "bank", +1, client_id=c)
    add_feedback(factory, task_id, "lost card", "bank", -1, client_id=clients[3])
    ds = _dataset(factory, task_id)
    rows = _feedback_rows(ds)
    assert {(r.signal, r.client_id) for r in rows} == {(+1, c) for c in clients[:3]}
    assert ds.counts["conflicts_dropped"] == 1


def test_a_client_changing_its_mind_counts_once(factory: sessionmaker[Session], task_id: int) -> None:
    a, b = add_client(factory, "a"), add_client(factory, "b")
    add_feedback(factory, task_id, "lost card", "bank", +1, client_id=a)
    for _ in range(3):  # b repeats itself: still one vote
        add_feedback(factory, task_id, "lost card", "bank", -1, client_id=b)
    add_feedback(factory, task_id, "lost card", "bank", +1, client_id=b)  # and then agrees
    rows = _feedback_rows(_dataset(factory, task_id))
    assert sorted((r.signal, r.client_id) for r in rows) == [(+1, a), (+1, b)]


def test_resolve_keeps_compatible_claims() -> None:
    votes = [Vote("not", "bank", 1, 1, "t", "feedback"), Vote("not", "weather", 2, 2, "t", "feedback")]
    kept, dropped = resolve(votes)
    assert kept == votes and dropped == 0  # "not bank" and "not weather" can both be true
    votes.append(Vote("is", "weather", 3, 3, "t", "correction"))
    kept, dropped = resolve(votes)
    assert [v.order for v in kept] == [1, 3] and dropped == 1


def test_one_client_is_capped_to_its_share(factory: sessionmaker[Session], task_id: int) -> None:
    loud, quiet = add_client(factory, "loud"), add_client(factory, "quiet")
    pairs = synthetic(40, seed=5)
    for text, label in pairs[:30]:
        add_feedback(factory, task_id, text, label, +1, client_id=loud)
    for text, label in pairs[30:]:
        add_feedback(factory, task_id, text, label, +1, client_id=quiet)
    ds = _dataset(factory, task_id)
    weight = {c: sum(r.weight for r in _feedback_rows(ds) if r.client_id == c) for c in (loud, quiet)}
    assert weight[loud] / (weight[loud] + weight[quiet]) == pytest.approx(0.5)
    assert all(r.weight == 1.0 for r in _feedback_rows(ds) if r.client_id == quiet)
    assert ds.counts["capped_clients"] == 1


def test_client_weights_cap_several_clients_and_spare_the_rest() -> None:
    w = client_weights({"a": 60, "b": 30, "c": 5, "d": 5}, cap=0.3)
    mass = {c: w[c] * n for c, n in {"a": 60, "b": 30, "c": 5, "d": 5}.items()}
    total = sum(mass.values())
    assert mass["a"] / total == pytest.approx(0.3) and mass["b"] / total == pytest.approx(0.3)
    assert w["c"] == w["d"] == 1.0
    assert client_weights({"a": 10}, cap=0.5) == {"a": 1.0}  # alone, there is nothing to share against
    equal = client_weights({"a": 10, "b": 2}, cap=0.1)  # below 1/n: equal shares
    assert equal["a"] * 10 == pytest.approx(equal["b"] * 2)


def test_watermark_and_new_signals_since(factory: sessionmaker[Session], task_id: int) -> None:
    add_examples(factory, task_id, synthetic(3))
    add_feedback(factory, task_id, "rain", "weather", +1)
    with factory() as s:
        wm = current_watermark(s, task_id)
        assert new_signals_since(s, task_id, None) == 4
        assert new_signals_since(s, task_id, wm) == 0
    add_feedback(factory, task_id, "snow", "weather", -1)
    add_examples(factory, task_id, [("my bill", "bank")])
    with factory() as s:
        assert new_signals_since(s, task_id, wm) == 2


def test_unknown_labels_are_dropped_not_trained_on(factory: sessionmaker[Session], task_id: int) -> None:
    add_feedback(factory, task_id, "hello", "bank", -1, correction="greeting")
    ds = _dataset(factory, task_id)
    assert not _feedback_rows(ds) and ds.counts["unknown_label_dropped"] == 1
    assert ds.labels == LABELS


def test_tiny_model_dir_is_usable(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert "[UNK]" not in tok.tokenize("lost card weather")


# ---------------------------------------------------------------- per-client reliability


def _vote(claim: str, label: str, client: int | None, text: str, p: float | None = None,
          source: str = "feedback") -> Vote:
    return Vote(claim, label, 0, client, text, source, p)


def test_auc_is_the_mann_whitney_statistic() -> None:
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9]) == 0.0
    assert auc([0.5, 0.5], [0.5]) == 0.5  # ties count half
    assert auc([], [0.1]) is None


def test_a_client_that_contradicts_known_labels_loses_its_weight() -> None:
    known = {text_hash(f"t{i}"): "bank" for i in range(20)}
    honest = [_vote("is", "bank", 1, f"t{i}") for i in range(10)]
    liar = [_vote("not", "bank", 2, f"t{i}") for i in range(10, 20)]
    trust = client_reliability(honest + liar, known)
    assert trust[1].weight == pytest.approx(1.0 - 2 / 12)  # r = (10+1)/(10+2): prior keeps it below 1
    assert trust[2].weight == 0.0 and (trust[2].agree, trust[2].disagree) == (0, 10)


def test_a_client_whose_plus_ones_fall_on_unlikely_answers_loses_its_weight() -> None:
    """The model's confidence in the shown label (logged as the propensity) separates right answers
    from wrong ones for honest users; a client that flips every signal shows the opposite ranking."""
    votes = []
    for client in (1, 2):  # honest: +1 on confident answers, −1 on unsure ones
        votes += [_vote("is", "bank", client, f"h{client}-{i}", 0.9) for i in range(12)]
        votes += [_vote("not", "bank", client, f"l{client}-{i}", 0.2) for i in range(12)]
    votes += [_vote("not", "bank", 3, f"a{i}", 0.9) for i in range(12)]  # flips: −1 on confident answers
    votes += [_vote("is", "bank", 3, f"b{i}", 0.2) for i in range(12)]
    trust = client_reliability(votes, {})
    assert trust[1].weight == trust[2].weight == 1.0
    assert trust[3].auc == 0.0 and trust[3].weight == 0.0


def test_too_little_evidence_changes_nothing() -> None:
    votes = [_vote("not", "bank", 5, "t1", 0.9), _vote("is", "bank", 5, "t2", 0.1)]
    assert client_reliability(votes, {text_hash("t1"): "bank"})[5].weight == 1.0


def test_a_client_the_noise_model_finds_adversarial_is_left_out_of_the_dataset(
        factory: sessionmaker[Session], settings: Settings) -> None:
    task_id = create_task(factory, settings, policy={"feedback_validation_fraction": 0.0, "max_client_share": 1.0})
    pairs = synthetic(40, seed=6)
    add_examples(factory, task_id, pairs, split="train")
    honest, hostile = add_client(factory, "honest"), add_client(factory, "hostile")
    for text, label in pairs[:20]:
        add_feedback(factory, task_id, text, label, +1, client_id=honest)
    for text, label in pairs[20:]:
        add_feedback(factory, task_id, text, label, -1, client_id=hostile)  # the example's label, called wrong
    ds = _dataset(factory, task_id)
    rows = _feedback_rows(ds)
    assert {it.client_id for it in rows} == {honest} and len(rows) == 20
    assert ds.counts["excluded_clients"] == 1 and ds.counts["excluded_rows"] == 20
    assert ds.counts["noise"]["clients"][str(hostile)]["adversarial"] is True
    # the honest key's signals carry its (small) flip rate, shrunk toward a pooled rate the liar raised
    assert all(0.0 < it.flip < 0.5 for it in rows)


def test_at_most_max_rows_are_read_the_newest_of_each_kind_and_the_rest_is_counted(
        factory: sessionmaker[Session], task_id: int) -> None:
    add_examples(factory, task_id, [(f"lost my card number {i}", "bank") for i in range(30)], split="train")
    for i in range(10):
        add_feedback(factory, task_id, f"rain on day {i}", "weather", +1)
    with factory() as s:
        everything = gather_dataset(s, s.get(Task, task_id))
        capped = gather_dataset(s, s.get(Task, task_id), max_rows=8)
        watermark = current_watermark(s, task_id)
    assert everything.counts["examples_left_out"] == everything.counts["feedback_left_out"] == 0
    assert len(everything.train + everything.validation) == 40
    # 40 rows, 8 read: 6 examples and 2 feedback rows (their 3:1 share), the newest of each.
    assert capped.counts["examples_left_out"] == 24 and capped.counts["feedback_left_out"] == 8
    assert sorted(it.text for it in capped.train + capped.validation) == sorted(
        [f"lost my card number {i}" for i in range(24, 30)] + ["rain on day 8", "rain on day 9"])
    assert capped.watermark == everything.watermark == watermark  # what was left out is not "new" later


def test_a_runs_data_counts_record_the_noise_it_was_trained_under(factory: sessionmaker[Session],
                                                                  task_id: int) -> None:
    """Each key's flip rate, as the noise model saw the run's rows, goes into data_counts (and so onto
    the version): here a key that says −1 to every labelled answer, and a trusted one that agrees."""
    liar, qa = add_client(factory, "liar"), add_client(factory, "qa")
    pairs = synthetic(12, seed=8)
    add_examples(factory, task_id, pairs)
    for text, label in pairs:
        add_feedback(factory, task_id, text, label, -1, client_id=liar)
        add_feedback(factory, task_id, text, label, +1, client_id=qa)
    noise = _dataset(factory, task_id).counts["noise"]
    assert set(noise) == {"pooled", "clients"}
    assert noise["clients"][str(liar)]["evidence"]["known"] == 12
    assert noise["clients"][str(liar)]["adversarial"] is True
    assert noise["clients"][str(qa)]["rate"] < 0.2 and noise["clients"][str(qa)]["trusted"] is False

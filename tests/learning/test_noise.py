"""The per-client noise model (app/learning/noise.py) on simulated clients whose flip rates are known."""

from __future__ import annotations

import random

from app.db.training_rows import ExampleRow
from app.db.training_rows import FeedbackRow as Signal
from app.learning.noise import estimate_noise

RATES = {0.0: "honest", 0.1: "a little noisy", 0.3: "noisy", 1.0: "hostile", 0.5: "careless"}


def simulate(rates: dict[int, float], votes: int, seed: int, *, anchors: bool = True, trusted_share: float = 0.0,
             shared: bool = False) -> list[Signal]:
    """Each client answers `votes` predictions of a calibrated model (the shown answer is right with its
    propensity p; half of them anchors, p >= 0.95, when `anchors`), flipping its ±1 with its rate.  With
    `trusted_share` the review queue (client None) also says the truth on that share of the texts; with
    `shared` every client votes on the same texts."""
    rng = random.Random(seed)
    rows: list[Signal] = []
    truths = {}
    for client, rho in rates.items():
        for j in range(votes):
            text = f"text {j}" if shared else f"client {client} text {j}"
            if text not in truths:
                p = rng.uniform(0.95, 1.0) if anchors and rng.random() < 0.5 else rng.uniform(0.3, 0.9)
                truths[text] = (p, rng.random() < p)
            p, right = truths[text]
            says = right if rng.random() >= rho else not right
            rows.append(Signal(len(rows) + 1, client, 1 if says else -1, None, text, "a", p if anchors else None))
            if rng.random() < trusted_share:
                rows.append(Signal(len(rows) + 1, None, 1 if right else -1, None, text, "a", p))
    return rows


def many_clients(per_rate: int = 6) -> dict[int, float]:
    return {i * len(RATES) + k + 1: rho for i in range(per_rate) for k, rho in enumerate(RATES)}


def test_with_no_trusted_row_each_flip_rate_lies_in_its_interval_and_hostile_and_careless_are_flagged() -> None:
    rates = many_clients()
    report = estimate_noise(feedback=simulate(rates, 400, seed=22))
    covered = careless = 0
    for client, rho in rates.items():
        est = report.clients[client]
        covered += est.low <= rho <= est.high
        assert est.evidence["known"] == 0 and est.evidence["anchors"] > 150
        assert abs(est.rate - rho) < 0.1, (client, rho, est)
        if rho == 1.0:
            assert est.adversarial and not est.careless, (client, est)
        elif rho == 0.5:
            careless += est.careless  # a random client's interval misses ½ one time in ten
        else:
            assert not est.adversarial and not est.careless, (client, rho, est)
    assert covered >= 0.8 * len(rates)  # a 90 % interval: most, not all, of 30 clients
    assert careless >= 4  # of 6
    assert 0.3 < report.pooled.rate < 0.45  # (0 + .1 + .3 + 1 + .5) / 5 = 0.38


def test_a_client_with_three_votes_is_shrunk_to_near_the_pooled_rate() -> None:
    rates = many_clients(2)
    rows = simulate(rates, 300, seed=5)
    rows += [Signal(100_000 + i, 99, 1, None, f"small {i}", "a", 0.99) for i in range(3)]  # 3 anchors, all +1
    report = estimate_noise(feedback=rows)
    small = report.clients[99]
    assert small.evidence["anchors"] == 3
    assert abs(small.rate - report.pooled.rate) < 0.12
    assert small.low < report.pooled.rate < small.high
    assert not small.adversarial and not small.careless
    honest = report.clients[1]  # the same votes, 300 of them, say its own rate
    assert honest.rate < 0.05


def test_trusted_rows_narrow_the_interval() -> None:
    rates = {1: 0.3, 2: 0.1}
    plain = estimate_noise(feedback=simulate(rates, 300, seed=9, anchors=False))
    reviewed = estimate_noise(feedback=simulate(rates, 300, seed=9, anchors=False, trusted_share=0.5))
    for client, rho in rates.items():
        before, after = plain.clients[client], reviewed.clients[client]
        assert after.evidence["known"] > 100
        assert after.high - after.low < before.high - before.low
        assert after.low <= rho <= after.high


def test_a_trusted_key_is_known_truth_for_the_others_and_is_judged_itself() -> None:
    rows = simulate({1: 0.0, 2: 0.3}, 400, seed=3, anchors=False, shared=True)
    report = estimate_noise(feedback=rows, trusted=[1])
    assert report.clients[1].trusted and not report.clients[2].trusted
    assert report.clients[2].evidence["known"] == 400
    assert report.clients[2].low <= 0.3 <= report.clients[2].high
    assert report.clients[1].evidence["known"] == 0  # nobody else is trusted: it is judged by its peer
    assert report.clients[1].evidence["peers"] == 400


def test_peers_on_the_same_texts_are_evidence_corrected_for_the_pooled_rate() -> None:
    rates = {1: 0.0, 2: 0.1, 3: 0.1, 4: 0.2, 5: 0.05, 6: 0.3, 7: 0.0}
    report = estimate_noise(feedback=simulate(rates, 600, seed=11, anchors=False, shared=True))
    covered = sum(report.clients[c].low <= rho <= report.clients[c].high for c, rho in rates.items())
    assert covered >= 5
    for client, rho in rates.items():
        assert report.clients[client].evidence["peers"] > 550  # a tie among the six others is no reference
        assert abs(report.clients[client].rate - rho) < 0.08


def test_examples_are_known_truth_and_the_kinds_same_decides_agreement() -> None:
    """A rating's +1 on 3.0 agrees with a labelled 3.1 when the kind says the two are the same."""
    rows = [Signal(i + 1, 1, 1, None, f"t{i}", "3.0", 0.5) for i in range(40)]
    examples = [ExampleRow(f"t{i}", "3.1", "train") for i in range(40)]
    close = estimate_noise(feedback=rows, examples=examples, same=lambda a, b: abs(float(a) - float(b)) <= 0.25)
    exact = estimate_noise(feedback=rows, examples=examples)
    assert close.clients[1].evidence["known"] == 40 and close.clients[1].rate < 0.1
    assert exact.clients[1].rate > 0.9 and exact.clients[1].adversarial


def test_a_span_signal_is_judged_on_its_span_not_the_whole_answer() -> None:
    """A whole-text label says nothing of one span; the review queue's word on that span does."""
    rows = [Signal(2 * i + 1, None, 1, None, f"t{i}", "span-label", None, span=0) for i in range(30)]
    rows += [Signal(2 * i + 2, 1, -1, None, f"t{i}", "span-label", None, span=0) for i in range(30)]
    report = estimate_noise(feedback=rows, examples=[ExampleRow(f"t{i}", "whole", "train") for i in range(30)])
    assert report.clients[1].evidence == {"known": 30, "anchors": 0, "peers": 0}
    assert report.clients[1].adversarial


def test_the_estimates_in_numbers() -> None:
    """What the coverage test sees, printed for the record (pytest -s)."""
    rates = many_clients(1)
    report = estimate_noise(feedback=simulate(rates, 400, seed=22))
    for client, rho in rates.items():
        est = report.clients[client]
        print(f"{RATES[rho]:>15}: true {rho:.2f}, estimated {est.rate:.3f} [{est.low:.3f}, {est.high:.3f}]")
    assert report.clients


def test_the_rates_training_uses_leave_trusted_keys_at_zero_and_name_the_adversarial_ones() -> None:
    rates = {1: 0.2, 2: 1.0, 3: 0.0}
    report = estimate_noise(feedback=simulate(rates, 300, seed=4), trusted=[3])
    flips = report.flip_rates()
    assert flips[3] == 0.0 and flips[None] == 0.0  # a trusted key and the admin flip nothing
    assert abs(flips[1] - 0.2) < 0.1
    assert report.adversarial() == {2}


def test_with_no_evidence_about_anyone_no_noise_is_assumed() -> None:
    """Plain ±1 with no known truth, no near-certain answer and no shared text: the posterior is
    the flat prior's ½, which as a flip rate would make every signal teach nothing."""
    rows = [Signal(i, 1 + i % 2, 1 if i % 3 else -1, None, f"text {i}", "a", 0.5) for i in range(60)]
    report = estimate_noise(feedback=rows)
    assert not any(report.pooled.evidence.values()) and abs(report.clients[1].rate - 0.5) < 0.05
    assert set(report.flip_rates().values()) == {0.0}

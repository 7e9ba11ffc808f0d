"""The combined loss on tiny tensors: each property the learning loop relies on."""

from __future__ import annotations

import math

import pytest
import torch

from app.kinds.classification import Classification, feedback_losses
from app.learning.losses import combined_loss as _combined
from app.learning.losses import feedback_term

KIND = Classification()


def combined_loss(*args, **kwargs):
    return _combined(KIND, *args, **kwargs)

EMPTY_LOGITS = torch.zeros(0, 3)
EMPTY_IDX = torch.zeros(0, dtype=torch.long)


def _p_shown_after_one_step(signal: int, variant: str = "bounded") -> tuple[float, float]:
    torch.manual_seed(0)
    logits = torch.randn(1, 3, requires_grad=True)
    shown = torch.tensor([1])
    before = torch.softmax(logits, -1)[0, 1].item()
    opt = torch.optim.SGD([logits], lr=0.5)
    loss = combined_loss(EMPTY_LOGITS, EMPTY_IDX, logits, shown, torch.tensor([signal]), lam=0.0, variant=variant)
    loss.backward()
    opt.step()
    return before, torch.softmax(logits, -1)[0, 1].item()


@pytest.mark.parametrize("variant", ["bounded", "signed", "robust"])
def test_positive_signal_raises_p_of_shown_label(variant: str) -> None:
    before, after = _p_shown_after_one_step(+1, variant)
    assert after > before


@pytest.mark.parametrize("variant", ["bounded", "signed", "robust"])
def test_negative_signal_lowers_p_of_shown_label(variant: str) -> None:
    before, after = _p_shown_after_one_step(-1, variant)
    assert after < before


def test_bounded_negative_loss_is_finite_as_p_goes_to_one() -> None:
    logits = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)  # p(shown) == 1.0 in float32
    assert torch.softmax(logits, -1)[0, 0].item() == 1.0
    loss = feedback_losses(logits, torch.tensor([0]), torch.tensor([-1]), "bounded").sum()
    loss.backward()
    assert math.isfinite(loss.item())
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().max().item() <= 1.0 + 1e-6  # gradient of −log(1−p) stays bounded


def test_lambda_one_ignores_feedback() -> None:
    logits_d = torch.randn(2, 3)
    targets = torch.tensor([0, 2])
    logits_f = torch.randn(2, 3, requires_grad=True)
    loss = combined_loss(logits_d, targets, logits_f, torch.tensor([0, 1]), torch.tensor([1, -1]), lam=1.0)
    data_only = combined_loss(logits_d, targets, EMPTY_LOGITS, EMPTY_IDX, EMPTY_IDX, lam=1.0)
    assert loss.item() == pytest.approx(data_only.item())
    assert not loss.requires_grad or torch.autograd.grad(loss, logits_f, allow_unused=True)[0] is None


def test_lambda_zero_ignores_data() -> None:
    logits_d = torch.randn(2, 3, requires_grad=True)
    logits_f = torch.randn(2, 3)
    shown, signals = torch.tensor([0, 1]), torch.tensor([1, -1])
    loss = combined_loss(logits_d, torch.tensor([0, 2]), logits_f, shown, signals, lam=0.0)
    fb_only = combined_loss(EMPTY_LOGITS, EMPTY_IDX, logits_f, shown, signals, lam=0.0)
    assert loss.item() == pytest.approx(fb_only.item())
    assert not loss.requires_grad or torch.autograd.grad(loss, logits_d, allow_unused=True)[0] is None


def test_missing_term_contributes_zero_not_nan() -> None:
    logits_d = torch.randn(2, 3)
    targets = torch.tensor([0, 2])
    no_fb = combined_loss(logits_d, targets, EMPTY_LOGITS, EMPTY_IDX, EMPTY_IDX, lam=0.5)
    expected = 0.5 * torch.nn.functional.cross_entropy(logits_d, targets).item()
    assert no_fb.item() == pytest.approx(expected)
    logits_f = torch.randn(1, 3)
    no_data = combined_loss(EMPTY_LOGITS, EMPTY_IDX, logits_f, torch.tensor([1]), torch.tensor([1]), lam=0.5)
    assert math.isfinite(no_data.item()) and no_data.item() > 0
    nothing = combined_loss(EMPTY_LOGITS, EMPTY_IDX, EMPTY_LOGITS, EMPTY_IDX, EMPTY_IDX, lam=0.5)
    assert nothing.item() == 0.0


def test_weights_scale_each_rows_influence() -> None:
    logits_d = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([0, 0])  # row 0 right (low CE), row 1 wrong (high CE)
    right_only = combined_loss(logits_d, targets, EMPTY_LOGITS, EMPTY_IDX, EMPTY_IDX, lam=1.0,
                               data_weights=torch.tensor([1.0, 0.0]))
    assert right_only.item() == pytest.approx(torch.nn.functional.cross_entropy(logits_d[:1], targets[:1]).item())


def test_signed_negative_is_unbounded_below_while_bounded_stays_non_negative() -> None:
    def optimise(variant: str) -> list[float]:
        logits = torch.zeros(1, 3, requires_grad=True)
        opt = torch.optim.SGD([logits], lr=5.0)
        values = []
        for _ in range(200):
            opt.zero_grad()
            loss = combined_loss(EMPTY_LOGITS, EMPTY_IDX, logits, torch.tensor([0]), torch.tensor([-1]), 0.0, variant)
            loss.backward()
            opt.step()
            values.append(loss.item())
        return values

    signed = optimise("signed")
    bounded = optimise("bounded")
    # signed: log p keeps falling, one nat after another, with no floor to stop it
    assert signed[-1] < -20 and signed[-1] < signed[100] - 5
    # bounded: −log(1−p) >= 0 always, and it settles near 0 once p(shown) is small
    assert min(bounded) >= 0.0 and bounded[-1] < 0.01


def test_robust_negative_is_the_probability_left_on_the_refuted_label() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    shown, signals = torch.tensor([0, 2]), torch.tensor([-1, -1])
    p = torch.softmax(logits, -1)[[0, 1], [0, 2]]
    assert torch.allclose(feedback_losses(logits, shown, signals, "robust"), p)
    assert torch.allclose(feedback_losses(logits, shown, torch.tensor([1, 1]), "robust"),
                          feedback_losses(logits, shown, torch.tensor([1, 1]), "bounded"))


def test_robust_negative_pushes_least_where_the_answer_is_confident() -> None:
    """A −1 against a confident answer (p -> 1) is most often noise once the model is mostly right:
    robust's push fades there (gradient p(1−p)), bounded's is at its largest (gradient p)."""
    def push(variant: str, z: float) -> float:
        logits = torch.tensor([[z, 0.0, 0.0]], requires_grad=True)
        feedback_losses(logits, torch.tensor([0]), torch.tensor([-1]), variant).sum().backward()
        return logits.grad[0, 0].item()

    assert push("robust", 8.0) < 0.01 < 0.99 < push("bounded", 8.0)
    assert push("robust", 0.0) == pytest.approx((1 / 3) * (2 / 3), rel=1e-4)
    for z in (-5.0, 0.0, 5.0, 50.0):
        loss = feedback_losses(torch.tensor([[z, 0.0, 0.0]]), torch.tensor([0]), torch.tensor([-1]), "robust")
        assert 0.0 <= loss.item() <= 1.0


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        feedback_losses(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([1]), "negated")


# ---------------------------------------------------------------- noisy feedback


def _rows(n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    return torch.randn(n, 3) * 3, torch.tensor([0, 1, 2] * (n // 3)), torch.tensor([1, -1] * (n // 2))


def test_corrected_is_the_bounded_loss_for_a_client_that_never_flips() -> None:
    logits, shown, signals = _rows()
    clean = feedback_term(KIND, logits, shown, signals, "corrected", torch.zeros(6))
    assert torch.allclose(clean, feedback_losses(logits, shown, signals, "bounded"), atol=1e-6)
    assert torch.allclose(feedback_term(KIND, logits, shown, signals, "corrected"), clean)  # no flips given: none


def test_corrected_pulls_less_on_a_confident_answer_the_noisier_the_client_and_not_at_all_at_a_coin_toss() -> None:
    def pull(rho: float) -> float:
        logits = torch.tensor([[6.0, 0.0, 0.0]], requires_grad=True)  # sure of label 0 ...
        loss = feedback_term(KIND, logits, torch.tensor([0]), torch.tensor([-1]), "corrected", torch.tensor([rho]))
        loss.backward()  # ... which a −1 calls wrong
        return float(logits.grad.abs().sum())

    assert pull(0.0) > pull(0.1) > pull(0.3) > pull(0.45) > 0.0
    assert pull(0.5) == pytest.approx(0.0, abs=1e-7)


def test_unbiased_loss_is_the_clean_loss_in_expectation_over_the_flips_weighted_by_how_much_survives() -> None:
    logits, shown, signals = _rows()
    rho = torch.full((6,), 0.3)
    clean = feedback_losses(logits, shown, signals, "bounded")
    kept = feedback_term(KIND, logits, shown, signals, "unbiased", rho)
    flipped = feedback_term(KIND, logits, shown, -signals, "unbiased", rho)
    assert torch.allclose(0.7 * kept + 0.3 * flipped, clean * (1 - 2 * 0.3) ** 2, atol=1e-5)
    # a client answering at random teaches nothing, rather than ten times its noise
    coin = feedback_term(KIND, logits, shown, signals, "unbiased", torch.full((6,), 0.5))
    assert torch.count_nonzero(coin) == 0


def test_a_kind_without_a_right_probability_weighs_noisy_signals_by_what_survives_the_flips() -> None:
    from app.kinds.tagging import Tagging

    tagging = Tagging()
    logits = torch.randn(2, 4, 3)  # 2 texts, 4 tokens, tags O, B-place, I-place
    shown = torch.zeros(2, 4, dtype=torch.long)
    signals = torch.tensor([1, -1])
    bounded = tagging.feedback_losses(logits, shown, signals, "bounded")
    noisy = feedback_term(tagging, logits, shown, signals, "corrected", torch.tensor([0.25, 0.5]))
    assert torch.allclose(noisy, bounded * torch.tensor([0.5, 0.0]))

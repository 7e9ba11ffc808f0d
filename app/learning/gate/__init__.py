"""The validation gate: nothing is promoted on faith, and nothing on a lucky draw.

Candidate and active answer the same validation rows: labelled validation examples and
corrections, and a held-out slice of feedback.  Each row's outcome is scored honestly by the
task kind (`TaskKind.outcome`): a labelled row is right or wrong; a +1'd answer is right, so
keeping it is right and changing it is wrong; a −1'd answer is wrong, so keeping it is wrong,
but changing it is *unknown* (the new answer may be right or wrong).  Per row, the candidate's
advantage d = right(candidate) − right(active) is then known, or only bounded: an unknown
outcome is counted as wrong for the candidate and right for the active in the pessimistic
bound (d_lo), and the other way round in the optimistic one (d_hi).  Two models giving the
same answer tie, whatever the truth.

The decision is a one-sided paired test on those rows, by bootstrap over rows (each row
weighted as in training, so one client's cap holds here too) at `confidence`:
  promote       the lower bound of mean(d_est) is ≥ −tolerance: not worse beyond the tolerance;
  reject        the upper bound of mean(d_est) is < −tolerance: worse; or a class's recall
                (classes with ≥ MIN_RECALL_SUPPORT validation examples) fell by more than
                `max_recall_drop`;
  inconclusive  neither (or fewer than `min_rows` rows with a known outcome): keep collecting.
With no validation rows at all there is nothing to compare, and the candidate is not promoted.

Noisy feedback: a held-out signal from a client whose estimated flip rate ρ is above 0
(`Item.flip`, from `app/learning/noise.py`) is read through its flips, by the unbiased estimator
in `advantage_rows`, so a candidate that fixes answers a noisy crowd mislabelled is not charged
for disagreeing with the noise (before, under 30 % flips, every better candidate looked worse).

The parts, in the order a run uses them:
  evaluation   run one model over the validation rows (`evaluate`): answers, metrics, confidence;
  advantage    per row, the candidate's advantage and the row's weight (`advantage_rows`);
  bootstrap    the paired comparison with its confidence bounds (`compare`, `compare_ratio`);
  decide       the verdict (`judge`) and the confidence a later look needs (`look_confidence`).
"""

from __future__ import annotations

from app.learning.gate.advantage import advantage_rows, calibration, informative, row_weight
from app.learning.gate.bootstrap import Comparison, bootstrap_bounds, compare, compare_ratio
from app.learning.gate.decide import MAX_LOOKS, Verdict, judge, look_confidence, recall_drops
from app.learning.gate.evaluation import Evaluation, evaluate, model_outputs, predict_targets

__all__ = ["MAX_LOOKS", "Comparison", "Evaluation", "Verdict", "advantage_rows", "bootstrap_bounds", "calibration",
           "compare", "compare_ratio", "evaluate", "informative", "judge", "look_confidence", "model_outputs",
           "predict_targets", "recall_drops", "row_weight"]

"""CORAL: the loss weighs the score term exactly as `score_loss_weight` says, and the label is
always the one the reported distribution implies (its median)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_finetune_units import _tiny_sentiment

from finpipe.finetune.sentiment import SentimentModel, class_probabilities, predicted_class


def _model(target: str, weight: float) -> SentimentModel:
    torch.manual_seed(0)
    return _tiny_sentiment(target, weight).eval()


def test_label_is_the_median_of_the_reported_distribution():
    rng = np.random.default_rng(0)
    # unordered thresholds included: raw sigmoids then rise again, which training allows
    logits = rng.normal(0, 3, size=(2000, 4))
    probs = class_probabilities(logits, "ordinal")
    assert np.allclose(probs.sum(1), 1) and (probs >= 0).all()
    median = (np.cumsum(probs, axis=1) < 0.5).sum(1)  # first class whose cumulative mass reaches 1/2
    assert (predicted_class(logits, "ordinal") == median).all()


def test_unordered_thresholds_cannot_pass_a_threshold_the_distribution_denies():
    # P(y > 0) = 0.38 but P(y > 1) = 0.62: counting raw logits > 0 said class 1 while the
    # reported distribution puts 62 % of its mass on class 0
    logits = np.array([[-0.5, 0.5, -3.0, -3.0]])
    probs = class_probabilities(logits, "ordinal")
    assert probs[0].argmax() == 0 and predicted_class(logits, "ordinal").tolist() == [0]


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_score_weight_is_relative_to_the_per_example_class_loss(weight):
    model = _model("ordinal", weight)
    ids = torch.randint(5, 50, (6, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    labels = torch.tensor([0, 1, 2, 3, 4, 2])
    scores = torch.tensor([-0.9, -0.3, 0.0, 0.4, 0.8, 0.1])
    out = model(ids, mask, labels=labels, scores=scores)
    # CORAL's loss of one example: the sum of its K - 1 binary cross-entropies (Cao et al.),
    # on the scale of a K-class cross-entropy; the batch loss is its mean over examples
    targets = (labels.unsqueeze(-1) > torch.arange(4)).float()
    bce = F.binary_cross_entropy_with_logits(out.logits, targets, reduction="none").sum(-1).mean()
    mse = F.mse_loss(out.score, scores)
    assert float(out.loss.detach()) == pytest.approx(float((bce + weight * mse).detach()), rel=1e-5)
    assert float(model(ids, mask, labels=labels).loss.detach()) == pytest.approx(float(bce.detach()), rel=1e-5)


def test_ordinal_and_softmax_losses_start_on_one_scale():
    """At uninformative outputs the ordinal loss is (K-1) ln 2 per example, the softmax loss
    ln K: the same order of magnitude, so one score_loss_weight means the same for both."""
    k = 5
    zeros = torch.zeros(3, k - 1)
    labels = torch.tensor([0, 2, 4])
    ordinal = _model("ordinal", 0.0).class_loss(zeros, labels)
    softmax = _model("classes", 0.0).class_loss(torch.zeros(3, k), labels)
    assert float(ordinal) == pytest.approx((k - 1) * np.log(2), rel=1e-6)
    assert float(softmax) == pytest.approx(np.log(k), rel=1e-6)


@pytest.mark.parametrize("change", [{"loss": "weighted_cross_entropy"}, {"label_smoothing": 0.1}])
@pytest.mark.parametrize("target", ["ordinal", "score"])
def test_class_loss_options_are_refused_where_the_loss_ignores_them(change, target):
    from finpipe.config import SentimentTask, parse
    from finpipe.errors import UserError

    with pytest.raises(UserError, match="apply to target: classes only"):
        parse(SentimentTask, {"dataset": "d", "target": target, **change}, prefix="finetune.sentiment.tasks.h")
    parse(SentimentTask, {"dataset": "d", "target": "classes", **change})

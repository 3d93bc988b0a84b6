"""Every evaluation metric against values computed by hand on tiny inputs, and the bootstrap
on cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import f1_score

from finpipe.finetune import metrics as fm


def test_class_metrics_by_hand():
    # gold: a a b b c ; pred: a b b b a
    m = fm.class_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"], ordered=True)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # a: P 1/2 R 1/2 F 1/2; b: P 2/3 R 1 F 0.8; c: P 0 R 0 F 0 -> macro 1.3/3
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8) and m["per_class"]["b"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx(1.3 / 3, abs=1e-6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["mae_steps"] == pytest.approx((0 + 1 + 0 + 0 + 2) / 5)
    # Spearman by hand: ranks of gold (1.5,1.5,3.5,3.5,5), pred (2.5,4,4,4,... ) -> Pearson of ranks
    g = np.array([1.5, 1.5, 3.5, 3.5, 5.0])
    p = np.array([1.5, 4.0, 4.0, 4.0, 1.5])
    assert m["spearman"] == pytest.approx(np.corrcoef(g, p)[0, 1], abs=1e-6)
    assert "mae_steps" not in fm.class_metrics([0, 1], [0, 1], ["a", "b"], ordered=False)


def test_score_metrics_by_hand():
    gold, pred = [0.5, -0.5, 1.0], [0.5, 0.0, 0.5]
    m = fm.score_metrics(gold, pred)
    # cosine: (0.25 + 0 + 0.5) / (sqrt(1.5) * sqrt(0.5))
    assert m["cosine"] == pytest.approx(0.75 / math.sqrt(0.75), abs=1e-6)
    assert m["mse"] == pytest.approx((0 + 0.25 + 0.25) / 3, abs=1e-6)
    assert m["pearson"] == pytest.approx(np.corrcoef(gold, pred)[0, 1], abs=1e-6)
    assert fm.cosine(np.zeros(3), np.ones(3)) == 0.0


def test_ner_metrics_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-ORG"], ["B-LOC", "O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "O", "B-ORG", "O"]]
    # gold entities: PER, ORG, LOC, ORG(2 tokens) = 4; pred: PER, LOC, ORG(1 token) = 3; correct: PER, LOC = 2
    m = fm.ner_metrics(gold, pred)
    assert m["micro_precision"] == pytest.approx(2 / 3, abs=1e-6) and m["micro_recall"] == pytest.approx(0.5)
    assert m["micro_f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), abs=1e-6)
    assert m["per_type"]["PER"]["f1"] == 1.0 and m["per_type"]["LOC"]["f1"] == 1.0 and m["per_type"]["ORG"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["per_type"]["ORG"]["support"] == 2


def test_count_shortcuts_equal_the_libraries():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    assert fm.macro_f1_from_pairs(gold, pred, 4) == pytest.approx(f1_score(gold, pred, average="macro"))
    tags = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    g = [[tags[i] for i in rng.integers(0, 5, 12)] for _ in range(50)]
    p = [[tags[i] for i in rng.integers(0, 5, 12)] for _ in range(50)]
    assert fm.micro_f1_from_counts(fm.entity_counts(g, p)) == pytest.approx(seqeval_f1(g, p))


def _mean_stat(idx, run):
    return float(run[idx].mean())


def test_bootstrap_known_answers():
    n = 200
    same = np.arange(n, dtype=float)
    r = fm.paired_bootstrap(_mean_stat, [same], [same], n, resamples=500, seed=1, confidence=0.95)
    assert r["difference"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0 and not r["excludes_zero"]
    right, wrong = np.ones(n), np.zeros(n)  # always right vs always wrong: the difference is 1 in every resample
    r = fm.paired_bootstrap(_mean_stat, [right], [wrong], n, resamples=500, seed=1, confidence=0.95)
    assert r["difference"] == 1 and r["ci_low"] == 1 and r["ci_high"] == 1 and r["excludes_zero"]


def test_bootstrap_interval_matches_the_normal_theory_for_a_mean_difference():
    # per-item differences d_i with known mean and spread: the bootstrap interval of the mean
    # difference is close to mean +- 1.96 sd / sqrt(n)
    rng = np.random.default_rng(7)
    n = 2000
    a = rng.normal(0.3, 1.0, n)
    b = np.zeros(n)
    r = fm.paired_bootstrap(_mean_stat, [a], [b], n, resamples=2000, seed=3, confidence=0.95)
    half = 1.96 * a.std(ddof=1) / math.sqrt(n)
    assert r["difference"] == pytest.approx(a.mean(), abs=1e-6)
    assert r["ci_low"] == pytest.approx(a.mean() - half, abs=0.1 * half)
    assert r["ci_high"] == pytest.approx(a.mean() + half, abs=0.1 * half)
    assert r["excludes_zero"]
    again = fm.paired_bootstrap(_mean_stat, [a], [b], n, resamples=2000, seed=3, confidence=0.95)
    assert again == r  # seeded


def test_bootstrap_averages_seeds_before_differencing():
    n = 50
    a_runs = [np.ones(n), np.zeros(n)]  # two seeds: mean 0.5
    b_runs = [np.full(n, 0.25)]
    r = fm.paired_bootstrap(_mean_stat, a_runs, b_runs, n, resamples=400, seed=0, confidence=0.9)
    assert r["difference"] == pytest.approx(0.25)
    # drawing both seeds of `a` alike (p = 1/4 each way) reaches the extremes of the seed spread
    assert r["ci_low"] == pytest.approx(-0.25) and r["ci_high"] == pytest.approx(0.75)


def test_two_level_bootstrap_covers_seed_spread():
    """Every item scores alike within a run, so resampling items alone gives a zero-width
    interval; the seeds disagree (differences 0.1, 0.3, 0.5), and the interval must show it."""
    n = 40
    a_runs = [np.full(n, x) for x in (0.6, 0.8, 1.0)]
    b_runs = [np.full(n, 0.5)] * 3
    r = fm.paired_bootstrap(_mean_stat, a_runs, b_runs, n, resamples=1000, seed=0, confidence=0.95)
    assert r["difference"] == pytest.approx(0.3) and r["resampled"] == "seeds and test items"
    assert 0.1 <= r["ci_low"] < 0.25 and 0.35 < r["ci_high"] <= 0.5
    one = fm.paired_bootstrap(_mean_stat, a_runs[:1], b_runs[:1], n, resamples=100, seed=0, confidence=0.95)
    assert one["resampled"] == "test items only, one seed per variant" and one["ci_low"] == one["ci_high"] == pytest.approx(0.1)


def test_seed_pairs_stay_paired():
    """Seeds move both variants alike (a shared seed effect); adapted is 0.1 better at every
    seed. Drawn as pairs the difference is 0.1 in every resample; drawn apart it is not."""
    n = 30
    effect = [0.0, 0.4, 0.8]
    a_runs = [np.full(n, 0.1 + e) for e in effect]
    b_runs = [np.full(n, e) for e in effect]
    paired = fm.paired_bootstrap(_mean_stat, a_runs, b_runs, n, resamples=300, seed=0, confidence=0.95)
    assert paired["ci_low"] == pytest.approx(0.1) and paired["ci_high"] == pytest.approx(0.1)
    apart = fm.paired_bootstrap(_mean_stat, a_runs, b_runs, n, resamples=300, seed=0, confidence=0.95, paired_seeds=False)
    assert apart["ci_high"] - apart["ci_low"] > 0.3


def test_ner_macro_f1_in_resamples_is_seqevals():
    """Inside a resample, an entity type absent from both gold and predictions is dropped from
    the macro average, as seqeval drops it: never counted as F1 = 0."""
    from seqeval.metrics import classification_report

    from finpipe.evaluation import Run, bootstrap_arrays, statistic

    rows = [
        {"id": "1", "gold": ["B-ORG", "I-ORG", "O"], "tags": ["B-ORG", "I-ORG", "O"]},
        {"id": "2", "gold": ["B-PER", "O"], "tags": ["O", "O"]},
        {"id": "3", "gold": ["B-LOC", "O"], "tags": ["B-LOC", "O"]},  # the only LOC
        {"id": "4", "gold": ["O", "B-ORG"], "tags": ["O", "B-PER"]},
    ]
    run = Run("ner", "t", "adapted", 1, {}, rows)
    arrays = bootstrap_arrays(run)
    macro = statistic("ner", "macro_f1", 0)
    rng = np.random.default_rng(0)
    draws = [np.array([0, 1, 3, 3]), np.array([0, 0, 1, 3])] + [rng.integers(0, 4, 4) for _ in range(30)]
    for idx in draws:
        gold, pred = [rows[i]["gold"] for i in idx], [rows[i]["tags"] for i in idx]
        expected = classification_report(gold, pred, output_dict=True, zero_division=0)["macro avg"]["f1-score"]
        assert macro(idx, arrays) == pytest.approx(expected), idx

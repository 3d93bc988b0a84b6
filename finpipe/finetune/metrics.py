"""Task metrics and the paired bootstrap. scikit-learn and seqeval compute the reported
numbers; the bootstrap works on per-item counts so 1000+ resamples stay cheap, and a test
checks those counts against seqeval/scikit-learn on the full set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from seqeval.metrics import classification_report as seqeval_report
from seqeval.metrics.sequence_labeling import get_entities
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def _r(x: float) -> float:
    return round(float(x), 6)


def class_metrics(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str], ordered: bool) -> dict[str, Any]:
    gold, pred = np.asarray(gold), np.asarray(pred)
    k = range(len(labels))
    p, r, f, support = precision_recall_fscore_support(gold, pred, labels=list(k), zero_division=0)
    out: dict[str, Any] = {
        "accuracy": _r(accuracy_score(gold, pred)),
        "macro_f1": _r(f1_score(gold, pred, labels=list(k), average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": _r(p[i]), "recall": _r(r[i]), "f1": _r(f[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(gold, pred, labels=list(k)).tolist(),
    }
    if ordered:
        out["mae_steps"] = _r(np.abs(gold - pred).mean())
        # undefined (None, JSON null) when gold or prediction is constant: no ranking to correlate
        defined = len(set(gold.tolist())) > 1 and len(set(pred.tolist())) > 1
        out["spearman"] = _r(stats.spearmanr(gold, pred).statistic) if defined else None
    return out


def cosine(gold: np.ndarray, pred: np.ndarray) -> float:
    """SemEval-2017 task 5's measure: cosine similarity of the gold and predicted score vectors."""
    den = np.sqrt((gold * gold).sum() * (pred * pred).sum())
    return float((gold * pred).sum() / den) if den else 0.0


def score_metrics(gold: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    gold, pred = np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)
    pearson = _r(stats.pearsonr(gold, pred).statistic) if gold.std() > 0 and pred.std() > 0 else None  # as spearman
    return {"cosine": _r(cosine(gold, pred)), "pearson": pearson, "mse": _r(((gold - pred) ** 2).mean())}


def ner_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """seqeval entity-level scores (conlleval reading of BIO): micro, macro, per type."""
    report = seqeval_report([list(g) for g in gold], [list(p) for p in pred], output_dict=True, zero_division=0)
    types = sorted(k for k in report if k not in ("micro avg", "macro avg", "weighted avg"))
    return {
        "micro_f1": _r(report["micro avg"]["f1-score"]),
        "micro_precision": _r(report["micro avg"]["precision"]),
        "micro_recall": _r(report["micro avg"]["recall"]),
        "macro_f1": _r(report["macro avg"]["f1-score"]),
        "per_type": {
            t: {
                "precision": _r(report[t]["precision"]),
                "recall": _r(report[t]["recall"]),
                "f1": _r(report[t]["f1-score"]),
                "support": int(report[t]["support"]),
            }
            for t in types
        },
    }


# --- per-item statistics for the bootstrap ---------------------------------------------------


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sentence: (true positives, predicted entities, gold entities), seqeval's entities."""
    rows = []
    for g, p in zip(gold, pred, strict=True):
        ge, pe = set(get_entities(list(g))), set(get_entities(list(p)))
        rows.append((len(ge & pe), len(pe), len(ge)))
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def micro_f1_from_counts(counts: np.ndarray) -> float:
    tp, npred, ngold = counts.sum(0)
    return float(2 * tp / (npred + ngold)) if npred + ngold else 0.0


def macro_f1_from_pairs(gold: np.ndarray, pred: np.ndarray, k: int) -> float:
    """sklearn's macro-F1 (zero_division=0) from a confusion count: 2TP / (2TP + FP + FN)."""
    cm = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    den = cm.sum(0) + cm.sum(1)
    return float(np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0).mean())


def macro_f1_from_type_counts(by_type: Sequence[np.ndarray]) -> float:
    """seqeval's macro-F1 from per-type (tp, predicted, gold) sums: the mean over the types found
    in gold or predictions. A type absent from both (as in a bootstrap resample that drew none
    of its sentences) is left out, not counted as F1 = 0."""
    scores = [2 * tp / (npred + ngold) for tp, npred, ngold in by_type if npred + ngold]
    return float(np.mean(scores)) if scores else 0.0


def paired_bootstrap(
    statistic: Callable[[np.ndarray, Any], float],
    runs_a: Sequence[Any],
    runs_b: Sequence[Any],
    n_items: int,
    *,
    resamples: int,
    seed: int,
    confidence: float,
    paired_seeds: bool = True,
) -> dict[str, Any]:
    """Two-level percentile bootstrap of mean_seeds(statistic(a)) - mean_seeds(statistic(b)).

    `statistic(idx, run)` scores one run on the items `idx` (with repeats). Each resample first
    draws seeds with replacement (one draw of seed pairs when both variants ran the same seeds,
    so a pair keeps its shared seed; independent draws otherwise), then one set of test items,
    and scores every drawn run of both variants on those items: the interval covers test-set
    sampling and seed-to-seed variation. With one seed per variant there is nothing to draw at
    the first level and the interval covers test items only (`resampled` says which). With a
    handful of seeds the first level can only show the spread among those seeds.
    """
    rng = np.random.default_rng(seed)
    everything = np.arange(n_items)
    na, nb = len(runs_a), len(runs_b)
    paired = paired_seeds and na == nb

    def diff(idx: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> float:
        cache: dict[tuple[str, int], float] = {}

        def score(which: str, runs: Sequence[Any], i: int) -> float:
            if (which, i) not in cache:
                cache[(which, i)] = statistic(idx, runs[i])
            return cache[(which, i)]

        return float(np.mean([score("a", runs_a, i) for i in ia]) - np.mean([score("b", runs_b, i) for i in ib]))

    observed = diff(everything, np.arange(na), np.arange(nb))
    draws = []
    for _ in range(resamples):
        ia = rng.integers(0, na, na)
        ib = ia if paired else rng.integers(0, nb, nb)
        draws.append(diff(rng.integers(0, n_items, n_items), ia, ib))
    alpha = 1 - confidence
    lo, hi = np.quantile(np.array(draws), [alpha / 2, 1 - alpha / 2])
    return {
        "difference": _r(observed),
        "ci_low": _r(lo),
        "ci_high": _r(hi),
        "confidence": confidence,
        "resamples": resamples,
        "resampled": "seeds and test items" if max(na, nb) > 1 else "test items only, one seed per variant",
        "excludes_zero": bool(lo > 0 or hi < 0),
    }

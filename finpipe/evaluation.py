"""Adapted vs base on the test sets: the fine-tuning runs' predictions read back, metrics per
run, seed means, the paired two-level bootstrap of the difference, and the flat/summary forms
DVC shows. The evaluate stage (tasks/evaluate.py) writes what this computes."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finpipe.config import Evaluate, Finetune
from finpipe.errors import UserError
from finpipe.finetune import metrics as fm

log = logging.getLogger(__name__)

# the metrics the adapted - base difference is bootstrapped for, per kind of output
PRIMARY = {"classes": ["macro_f1", "accuracy"], "score": ["cosine"], "ner": ["micro_f1", "macro_f1"]}
HEADLINE = {"classes": "macro_f1", "score": "cosine", "ner": "micro_f1"}
# correlations are undefined (null in the metrics) when gold or prediction is constant
UNDEFINABLE = {"spearman", "pearson"}


@dataclass
class Run:
    kind: str
    task: str
    variant: str
    seed: int
    meta: dict[str, Any]
    rows: list[dict[str, Any]]


def declared_runs(finetune: Finetune) -> list[str]:
    """The prediction folders (<kind>/<task>/<variant>-s<seed>) of exactly the fine-tuning
    stages that params declare: the DVC matrix over tasks x variants x seeds."""
    out = []
    for kind, tasks in (("sentiment", finetune.sentiment.tasks), ("ner", finetune.ner.tasks)):
        for task in tasks:
            out += [f"{kind}/{task}/{v}-s{seed}" for v in finetune.variants for seed in finetune.seeds]
    return out


def load_runs(root: Path, declared: Sequence[str]) -> dict[tuple[str, str], list[Run]]:
    """The declared runs' predictions. A folder left behind by a task, variant or seed since
    removed from params is not read (it would be averaged in): it is named in the log."""
    if not root.is_dir():
        raise UserError(f"{root}: no predictions folder; run the fine-tuning stages first")
    if not declared:
        raise UserError("finetune: no fine-tuning task is declared (finetune.sentiment.tasks / finetune.ner.tasks)")
    found = {str(p.parent.relative_to(root)) for p in root.glob("*/*/*/meta.json")}
    missing = [d for d in declared if d not in found]
    if missing:
        raise UserError(
            f"{root}: no predictions for {len(missing)} declared fine-tuning run(s), e.g. {missing[0]}; "
            f"run the fine-tuning stages first (dvc repro)"
        )
    stale = sorted(found - set(declared))
    if stale:
        log.warning("ignoring %d prediction folder(s) no longer declared in params: %s", len(stale), ", ".join(stale))
    runs: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for rel in sorted(declared):
        meta = json.loads((root / rel / "meta.json").read_text(encoding="utf-8"))
        test = root / rel / "test.jsonl"
        rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines() if line.strip()]
        runs[(meta["kind"], meta["task"])].append(Run(meta["kind"], meta["task"], meta["variant"], int(meta["seed"]), meta, rows))
    for (kind, task), group in runs.items():
        ids = [r["id"] for r in group[0].rows]
        for run in group[1:]:
            if [r["id"] for r in run.rows] != ids:
                raise UserError(
                    f"{kind}/{task}: {run.variant}-s{run.seed} was tested on other rows than "
                    f"{group[0].variant}-s{group[0].seed}; rerun the fine-tuning stages (dvc repro)"
                )
        if not ids:
            raise UserError(f"{kind}/{task}: the test split is empty; set test_fraction in the ingest params")
    return runs


# --- per-run arrays and metrics ------------------------------------------------------------


def sentiment_arrays(run: Run) -> dict[str, np.ndarray]:
    labels = run.meta["labels"]
    index = {name: i for i, name in enumerate(labels)}
    out = {"gold": np.array([index[r["gold"]] for r in run.rows])}
    if "label" in run.rows[0]:
        out["pred"] = np.array([index[r["label"]] for r in run.rows])
    if "score" in run.rows[0]:
        out["gold_score"] = np.array([r.get("gold_score", np.nan) for r in run.rows], dtype=float)
        out["score"] = np.array([r["score"] for r in run.rows], dtype=float)
    return out


def outputs(run: Run) -> list[str]:
    """Which kinds of output the run has: classes, score (sentiment) or ner."""
    if run.kind == "ner":
        return ["ner"]
    found = []
    if "label" in run.rows[0]:
        found.append("classes")
    if "score" in run.rows[0] and any("gold_score" in r for r in run.rows):
        found.append("score")
    return found


def run_metrics(run: Run) -> dict[str, Any]:
    if run.kind == "ner":
        return fm.ner_metrics([r["gold"] for r in run.rows], [r["tags"] for r in run.rows])
    a = sentiment_arrays(run)
    out: dict[str, Any] = {}
    if "pred" in a:
        out.update(fm.class_metrics(a["gold"], a["pred"], run.meta["labels"], ordered=run.meta.get("ordered", False)))
    if "score" in a:
        known = ~np.isnan(a["gold_score"])
        if known.any():
            out.update(fm.score_metrics(a["gold_score"][known], a["score"][known]))
    return out


def statistic(output: str, metric: str, k: int):
    """statistic(idx, arrays) for the bootstrap; arrays are one run's per-item arrays."""
    if output == "ner":
        if metric == "micro_f1":
            return lambda idx, a: fm.micro_f1_from_counts(a["counts"][idx])
        return lambda idx, a: fm.macro_f1_from_type_counts([c[idx].sum(0) for c in a["by_type"].values()])
    if output == "score":
        return lambda idx, a: fm.cosine(a["gold_score"][idx], a["score"][idx])
    if metric == "accuracy":
        return lambda idx, a: float((a["gold"][idx] == a["pred"][idx]).mean())
    return lambda idx, a: fm.macro_f1_from_pairs(a["gold"][idx], a["pred"][idx], k)


def _on_items(stat: Any, items: np.ndarray) -> Any:
    """Restrict a statistic to a subset of the test items (resample indices index the subset)."""
    return lambda idx, a: stat(items[idx], a)


def bootstrap_arrays(run: Run) -> dict[str, Any]:
    if run.kind != "ner":
        return sentiment_arrays(run)
    gold = [r["gold"] for r in run.rows]
    pred = [r["tags"] for r in run.rows]
    # seqeval's macro average runs over the types found in gold or predictions
    types = sorted({t[2:] for r in run.rows for t in [*r["gold"], *r["tags"]] if t != "O"})
    by_type = {}
    for t in types:  # per-type counts: macro F1 is the mean of per-type F1 (seqeval's macro avg)
        keep = lambda seq, t=t: [x if x[2:] == t else "O" for x in seq]
        by_type[t] = fm.entity_counts([keep(g) for g in gold], [keep(p) for p in pred])
    return {"counts": fm.entity_counts(gold, pred), "by_type": by_type}


# --- aggregation ----------------------------------------------------------------------------


def _scalars(m: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics of one run; an undefined one (None) as NaN, left out of seed means."""
    out = {
        k: (float("nan") if v is None else v)
        for k, v in m.items()
        if (isinstance(v, (int, float)) and not isinstance(v, bool)) or (v is None and k in UNDEFINABLE)
    }
    for name, vals in m.get("per_class", {}).items():
        out[f"f1_{name.replace(' ', '_')}"] = vals["f1"]
    for name, vals in m.get("per_type", {}).items():
        out[f"f1_{name}"] = vals["f1"]
    return out


def _seed_mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and std over the seeds where the metric is defined; None (JSON null) where it is
    defined for none."""
    defined = [v for v in values if v == v]
    if not defined:
        return None, None
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return round(float(np.mean(defined)), 6), round(std, 6)


def summarise(runs: list[Run], cfg: Evaluate) -> dict[str, Any]:
    by_variant: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: (r.variant, r.seed)):
        by_variant[run.variant].append(run)
    per_run = {f"{r.variant}-s{r.seed}": run_metrics(r) for r in runs}
    variants: dict[str, Any] = {}
    for variant, group in by_variant.items():
        values: dict[str, list[float]] = defaultdict(list)
        for r in group:
            for k, v in _scalars(per_run[f"{r.variant}-s{r.seed}"]).items():
                values[k].append(v)
        variants[variant] = {
            "seeds": [r.seed for r in group],
            "mean": {k: _seed_mean_std(v)[0] for k, v in values.items()},
            "std": {k: _seed_mean_std(v)[1] for k, v in values.items()},
        }
    first = runs[0]
    kinds = outputs(first)
    comparison: dict[str, Any] = {}
    if "adapted" in by_variant and "base" in by_variant:
        arrays = {f"{r.variant}-s{r.seed}": bootstrap_arrays(r) for r in runs}
        k = len(first.meta.get("labels", []))
        a_runs = [arrays[f"adapted-s{r.seed}"] for r in by_variant["adapted"]]
        b_runs = [arrays[f"base-s{r.seed}"] for r in by_variant["base"]]
        paired_seeds = sorted({r.seed for r in by_variant["adapted"]} & {r.seed for r in by_variant["base"]})
        for output in kinds:
            for metric in PRIMARY[output]:
                stat = statistic(output, metric, k)
                n = len(first.rows)
                if output == "score":  # rows without a gold score are left out of the score metrics
                    known = np.flatnonzero(~np.isnan(a_runs[0]["gold_score"]))
                    stat = _on_items(stat, known)
                    n = len(known)
                result = fm.paired_bootstrap(
                    stat,
                    a_runs,
                    b_runs,
                    n,
                    resamples=cfg.bootstrap_resamples,
                    seed=cfg.seed,
                    confidence=cfg.confidence,
                    paired_seeds=[r.seed for r in by_variant["adapted"]] == [r.seed for r in by_variant["base"]],
                )
                result["per_seed"] = {
                    str(s): round(stat(np.arange(n), arrays[f"adapted-s{s}"]) - stat(np.arange(n), arrays[f"base-s{s}"]), 6)
                    for s in paired_seeds
                }
                comparison[metric] = result
    return {
        "kind": first.kind,
        "task": first.task,
        "dataset": first.meta.get("dataset"),
        "outputs": kinds,
        "headline": HEADLINE["ner" if first.kind == "ner" else ("classes" if "classes" in kinds else "score")],
        "test_items": len(first.rows),
        "variants": variants,
        "per_run": per_run,
        "comparison": comparison,
    }


def flat(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """`task/variant/metric` keys (mean over seeds), `_std`, per seed, `task/delta/metric`, and
    `task/delta`: adapted - base on the task's headline metric."""
    out: dict[str, float] = {}
    for s in summaries:
        task = s["task"]
        for variant, v in s["variants"].items():
            for k, val in v["mean"].items():
                out[f"{task}/{variant}/{k}"] = val
                if len(v["seeds"]) > 1:
                    out[f"{task}/{variant}/{k}_std"] = v["std"][k]
        for run, m in s["per_run"].items():
            for k, val in _scalars(m).items():
                out[f"{task}/{run}/{k}"] = val
        if s["headline"] in s["comparison"]:  # short and unique: `dvc exp show --keep '/delta$'`
            out[f"{task}/delta"] = s["comparison"][s["headline"]]["difference"]
        for metric, c in s["comparison"].items():
            out[f"{task}/delta/{metric}"] = c["difference"]
            out[f"{task}/delta/{metric}_ci_low"] = c["ci_low"]
            out[f"{task}/delta/{metric}_ci_high"] = c["ci_high"]
    return out


def task_summary(s: dict[str, Any]) -> dict[str, Any]:
    """One row per task for `dvc metrics show reports/evaluate/summary`: the headline metric of
    each variant and adapted - base with its interval. Every task's file has the same keys, so
    DVC prints the tasks as rows of eight columns instead of every metric as a column."""
    metric = s["headline"]
    comparison = s["comparison"].get(metric, {})
    return {
        "metric": metric,
        "adapted": s["variants"].get("adapted", {}).get("mean", {}).get(metric),
        "base": s["variants"].get("base", {}).get("mean", {}).get(metric),
        "delta": comparison.get("difference"),
        "ci_low": comparison.get("ci_low"),
        "ci_high": comparison.get("ci_high"),
        "n_test": s["test_items"],  # short: the table stays within 120 columns
        "seeds": min(len(v["seeds"]) for v in s["variants"].values()),
    }

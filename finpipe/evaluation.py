"""Every fine-tuning variant vs base on the test sets: the fine-tuning runs' predictions read
back, metrics per run, seed means, the paired two-level bootstrap of each variant - base, the
task's winner, and the flat/summary forms DVC shows. The evaluate stage (tasks/evaluate.py)
writes what this computes.

Variants: `base` (the base model, no domain pretraining: the reference every other variant is
compared with), `adapted` (DAPT), `base-tapt` and `adapted-tapt` (TAPT from either start). A
run's folder is `<variant>-s<seed>`; a variant name may contain '-', so the seed is the last
`-s<digits>` (split_run)."""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finpipe.config import Evaluate, Params
from finpipe.errors import UserError
from finpipe.finetune import metrics as fm

log = logging.getLogger(__name__)

# the variant every other one is compared with: the base model without domain pretraining
REFERENCE = "base"
# how tables, files and plots list the variants: the reference, then by how much
# pretraining each adds (finetune.variants and tapt.starts may list them in any order)
VARIANT_ORDER = (REFERENCE, "adapted", "base-tapt", "adapted-tapt")
# the metrics each variant - base difference is bootstrapped for, per kind of output
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


# greedy: `base-tapt-s13` is variant `base-tapt`, seed 13 (the last -s<digits>)
_RUN_NAME = re.compile(r"(?P<variant>.+)-s(?P<seed>[0-9]+)")


def run_name(variant: str, seed: int) -> str:
    """A run's folder name (predictions, fine-tuning reports, models) and its per-run key."""
    return f"{variant}-s{seed}"


def split_run(name: str) -> tuple[str, int]:
    """(variant, seed) of a run name `<variant>-s<seed>`; the variant may itself contain '-'
    (`adapted-tapt-s13`), so the seed is the last `-s<digits>`."""
    match = _RUN_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a run name <variant>-s<seed>")
    return match["variant"], int(match["seed"])


def declared_runs(params: Params) -> list[str]:
    """The prediction folders (<kind>/<task>/<variant>-s<seed>) of exactly the fine-tuning
    stages that params declare: the DVC matrix over tasks x variants (finetune.variants, then
    one `<start>-tapt` per tapt.starts) x seeds."""
    finetune = params.finetune
    out = []
    for kind, tasks in (("sentiment", finetune.sentiment.tasks), ("ner", finetune.ner.tasks)):
        for task in tasks:
            out += [f"{kind}/{task}/{run_name(v, seed)}" for v in params.variants for seed in finetune.seeds]
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
        _check_identity(root, rel, meta)
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


def _check_identity(root: Path, rel: str, meta: dict[str, Any]) -> None:
    """The folder <kind>/<task>/<variant>-s<seed> must hold that run: a run filed under another
    variant's name would be compared as that variant."""
    kind, task, name = rel.split("/")
    variant, seed = split_run(name)
    says = (meta.get("kind"), meta.get("task"), meta.get("variant"), str(meta.get("seed")))
    if says != (kind, task, variant, str(seed)):
        raise UserError(
            f"{root / rel}/meta.json describes {says[0]}/{says[1]}/{says[2]}-s{says[3]}, not {rel}; "
            f"rerun that fine-tuning stage (dvc repro)"
        )


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


def variant_order(variants: Iterable[str]) -> list[str]:
    """The variants, each once, in VARIANT_ORDER (an unknown name after those, by name)."""
    rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(set(variants), key=lambda v: (rank.get(v, len(rank)), v))


def _by_variant(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs per variant (in variant_order: base first), seeds ascending."""
    return {v: sorted((r for r in runs if r.variant == v), key=lambda r: r.seed) for v in variant_order(r.variant for r in runs)}


def _variant_stats(group: list[Run], per_run: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, list[float]] = defaultdict(list)
    for r in group:
        for k, v in _scalars(per_run[run_name(r.variant, r.seed)]).items():
            values[k].append(v)
    return {
        "seeds": [r.seed for r in group],
        "mean": {k: _seed_mean_std(v)[0] for k, v in values.items()},
        "std": {k: _seed_mean_std(v)[1] for k, v in values.items()},
    }


def _compare(
    kinds: list[str], group: list[Run], base: list[Run], arrays: dict[str, Any], n_labels: int, cfg: Evaluate
) -> dict[str, Any]:
    """{metric: paired bootstrap of variant - base} over the PRIMARY metrics of each output,
    with the per-seed differences where both variants ran the seed."""
    v_runs = [arrays[run_name(r.variant, r.seed)] for r in group]
    b_runs = [arrays[run_name(r.variant, r.seed)] for r in base]
    # seeds pair (one draw keeps a seed's two runs together) only when both ran the same seeds
    paired = [r.seed for r in group] == [r.seed for r in base]
    shared = sorted({r.seed for r in group} & {r.seed for r in base})
    n_all = len(group[0].rows)
    out: dict[str, Any] = {}
    for output in kinds:
        for metric in PRIMARY[output]:
            stat, n = statistic(output, metric, n_labels), n_all
            if output == "score":  # rows without a gold score are left out of the score metrics
                known = np.flatnonzero(~np.isnan(v_runs[0]["gold_score"]))
                stat, n = _on_items(stat, known), len(known)
            result = fm.paired_bootstrap(
                stat,
                v_runs,
                b_runs,
                n,
                resamples=cfg.bootstrap_resamples,
                seed=cfg.seed,
                confidence=cfg.confidence,
                paired_seeds=paired,
            )
            everything = np.arange(n)
            result["per_seed"] = {
                str(s): round(
                    stat(everything, arrays[run_name(group[0].variant, s)]) - stat(everything, arrays[run_name(REFERENCE, s)]),
                    6,
                )
                for s in shared
            }
            out[metric] = result
    return out


def _winner(variants: dict[str, Any], metric: str) -> str | None:
    """The variant with the best mean headline metric (every headline is higher-is-better),
    base included; on a tie base wins, since nothing then beat it. None when the metric is
    undefined for every variant."""
    scored = {v: x["mean"].get(metric) for v, x in variants.items() if x["mean"].get(metric) is not None}
    if not scored:
        return None
    return max(scored, key=lambda v: (scored[v], v == REFERENCE))


def summarise(runs: list[Run], cfg: Evaluate) -> dict[str, Any]:
    """One task: metrics per run, mean/std per variant, each variant - base (paired bootstrap;
    `comparison` is {variant: {metric: result}}, empty without a base variant) and the winner."""
    by_variant = _by_variant(runs)
    per_run = {run_name(r.variant, r.seed): run_metrics(r) for group in by_variant.values() for r in group}
    variants = {v: _variant_stats(group, per_run) for v, group in by_variant.items()}
    first = runs[0]
    kinds = outputs(first)
    headline = HEADLINE["ner" if first.kind == "ner" else ("classes" if "classes" in kinds else "score")]
    comparison: dict[str, Any] = {}
    if REFERENCE in by_variant:
        arrays = {run_name(r.variant, r.seed): bootstrap_arrays(r) for r in runs}
        n_labels = len(first.meta.get("labels", []))
        for v, group in by_variant.items():
            if v != REFERENCE:
                comparison[v] = _compare(kinds, group, by_variant[REFERENCE], arrays, n_labels, cfg)
    return {
        "kind": first.kind,
        "task": first.task,
        "dataset": first.meta.get("dataset"),
        "outputs": kinds,
        "headline": headline,
        "test_items": len(first.rows),
        "variants": variants,
        "per_run": per_run,
        "comparison": comparison,
        "winner": _winner(variants, headline),
    }


def flat(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """`task/variant/metric` keys (mean over seeds), `_std`, per run (`task/<variant>-s<seed>/
    metric`), and per variant compared with base: `task/variant/delta` (variant - base on the
    task's headline metric: `dvc exp show --keep '.*/delta$'` gives one column per task and
    variant) and `task/variant/delta_<metric>` with `_ci_low` / `_ci_high` per compared metric."""
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
        for variant, by_metric in s["comparison"].items():
            if s["headline"] in by_metric:
                out[f"{task}/{variant}/delta"] = by_metric[s["headline"]]["difference"]
            for metric, c in by_metric.items():
                out[f"{task}/{variant}/delta_{metric}"] = c["difference"]
                out[f"{task}/{variant}/delta_{metric}_ci_low"] = c["ci_low"]
                out[f"{task}/{variant}/delta_{metric}_ci_high"] = c["ci_high"]
    return out


def pair_seeds(s: dict[str, Any], variant: str) -> int:
    """The fewer seeds of the variant and base (the variant's own without base): what a
    verdict on variant - base rests on."""
    counts = [len(s["variants"][v]["seeds"]) for v in (variant, REFERENCE) if v in s["variants"]]
    return min(counts)


def task_summaries(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{variant: row} for `dvc metrics show reports/evaluate/summary`, one per variant other
    than base: its headline score, base's, variant - base with its interval, and whether it is
    the task's winner. Every row has the same keys, so DVC prints the files as rows of seven
    columns instead of every metric as a column. The metric's name and the test-set size are in
    the report and details.json: with them the table outgrew 120 columns."""
    metric = s["headline"]
    base = s["variants"].get(REFERENCE)
    rows = {}
    for variant, v in s["variants"].items():
        if variant == REFERENCE:
            continue
        c = s["comparison"].get(variant, {}).get(metric, {})
        rows[variant] = {
            "score": v["mean"].get(metric),
            "base": base["mean"].get(metric) if base else None,
            "delta": c.get("difference"),
            "ci_low": c.get("ci_low"),
            "ci_high": c.get("ci_high"),
            "seeds": pair_seeds(s, variant),
            "best": int(s["winner"] == variant),
        }
    return rows

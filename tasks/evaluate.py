"""Stage `evaluate`: test-set metrics of every fine-tuned model, every variant (adapted, the TAPT
ones) vs base with seeds and a paired bootstrap interval, the winner per task, as DVC metrics,
DVC plots and a report (Markdown + HTML).

Input is the fine-tuning stages' prediction folders (<kind>/<task>/<variant>-s<seed>/ with
test.jsonl and meta.json), so evaluation never reruns a model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finpipe.atomic import atomic_dir, write_json, write_text
from finpipe.config import Evaluate
from finpipe.evaluation import REFERENCE, flat, load_runs, summarise, task_summaries
from finpipe.evaluation_report import render_html, render_markdown, write_plots

log = logging.getLogger(__name__)


def _log_verdicts(s: dict[str, Any]) -> None:
    """One line per variant (variant - base on the headline, with its interval), one naming
    the task's winner."""
    metric, task = s["headline"], s["task"]
    for variant, by_metric in s["comparison"].items():
        c = by_metric[metric]
        log.info(
            "%s: %s - %s %s = %+.4f [%+.4f, %+.4f]", task, variant, REFERENCE, metric, c["difference"], c["ci_low"], c["ci_high"]
        )
    winner = s["winner"]
    if REFERENCE not in s["variants"]:
        log.info("%s: no %s variant to compare with; highest %s: %s", task, REFERENCE, metric, winner)
    elif winner is None or winner == REFERENCE:
        log.info("%s: no variant beat %s on %s", task, REFERENCE, metric)
    else:
        c = s["comparison"][winner][metric]
        log.info(
            "%s: winner %s, %+.4f %s over %s (interval %s zero)",
            task,
            winner,
            c["difference"],
            metric,
            REFERENCE,
            "excludes" if c["excludes_zero"] else "includes",
        )


def run(
    cfg: Evaluate,
    declared: Sequence[str],
    predictions: Path,
    reports: Path,
    report: Path,
    curves: Path | None = None,
) -> dict[str, Any]:
    """declared: the runs to evaluate (`declared_runs(params)`); reports: folder for
    metrics.json (every metric), summary/<task>/<variant>.json (the headline of each variant
    against base), details.json and plot data; report: the Markdown report (the HTML version
    goes beside it)."""
    runs = load_runs(predictions, declared)
    summaries = [summarise(group, cfg) for _, group in sorted(runs.items())]
    for s in summaries:
        _log_verdicts(s)
    known_tasks = {s["task"] for s in summaries}
    for b in cfg.baselines:
        if b.task not in known_tasks:
            log.warning("evaluate.baselines: task %r has no predictions; its baseline is listed without our number", b.task)
    with atomic_dir(reports) as tmp:
        write_json(tmp / "metrics.json", flat(summaries))
        write_json(tmp / "details.json", summaries)
        # the folder exists even with nothing to compare (base alone): it is a DVC metrics output
        (tmp / "summary").mkdir()
        for summary in summaries:
            for variant, row in task_summaries(summary).items():
                write_json(tmp / "summary" / summary["task"] / f"{variant}.json", row)
        images = write_plots(tmp / "plots", summaries, runs, curves)
    write_text(report, render_markdown(summaries, cfg))
    write_text(report.with_suffix(".html"), render_html(summaries, cfg, images))
    return {"tasks": len(summaries)}

"""Stage `evaluate`: test-set metrics of every fine-tuned model, adapted vs base with seeds and
a paired bootstrap interval, as DVC metrics, DVC plots and a report (Markdown + HTML).

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
from finpipe.evaluation import flat, load_runs, summarise, task_summary
from finpipe.evaluation_report import render_html, render_markdown, write_plots

log = logging.getLogger(__name__)


def run(
    cfg: Evaluate,
    declared: Sequence[str],
    predictions: Path,
    reports: Path,
    report: Path,
    curves: Path | None = None,
) -> dict[str, Any]:
    """declared: the runs to evaluate (`declared_runs(params.finetune)`); reports: folder for
    metrics.json (every metric), summary/<task>.json (the headline), details.json and plot
    data; report: the Markdown report (the HTML version
    goes beside it)."""
    runs = load_runs(predictions, declared)
    summaries = [summarise(group, cfg) for _, group in sorted(runs.items())]
    for s in summaries:
        for metric, c in s["comparison"].items():
            log.info(
                "%s: adapted - base %s = %+.4f [%+.4f, %+.4f]", s["task"], metric, c["difference"], c["ci_low"], c["ci_high"]
            )
    known_tasks = {s["task"] for s in summaries}
    for b in cfg.baselines:
        if b.task not in known_tasks:
            log.warning("evaluate.baselines: task %r has no predictions; its baseline is listed without our number", b.task)
    with atomic_dir(reports) as tmp:
        write_json(tmp / "metrics.json", flat(summaries))
        write_json(tmp / "details.json", summaries)
        for summary in summaries:
            write_json(tmp / "summary" / f"{summary['task']}.json", task_summary(summary))
        images = write_plots(tmp / "plots", summaries, runs, curves)
    write_text(report, render_markdown(summaries, cfg))
    write_text(report.with_suffix(".html"), render_html(summaries, cfg, images))
    return {"tasks": len(summaries)}

"""Stage `validate`: pandera contracts over the ingested data, one run per data kind.

Writes the rows that pass (clean/), the ones that fail with their reasons (quarantine/), and
a report (JSON + Markdown). Fails when a dataset's bad fraction exceeds
validate.max_bad_fraction, naming the file and its first failing rows. What ingest noted
beside a dataset (<name>.notes.json: repeated document ids, damaged input files) goes into
the report too; it does not fail the stage, as it did not fail ingest.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from finpipe.atomic import atomic_dir
from finpipe.config import Validate
from finpipe.corpus_validation import validate_corpus_file
from finpipe.errors import UserError, ValidationFailed
from finpipe.validation import NOUNS, validate_ner, validate_sentiment
from finpipe.validation_report import (
    data_fix,
    metrics,
    passing_fraction,
    summarise,
    summarise_tally,
    write_quarantine,
    write_report,
)

log = logging.getLogger(__name__)


def _enforce(kind: str, summaries: list[dict[str, Any]], quarantine_dir: Path) -> None:
    """Fail on the first dataset above the threshold, ending with the two ways to pass."""
    for s in summaries:
        if not s["passed"]:
            shown = "; ".join(f"{f['origin']}: {', '.join(f['reasons'])}" for f in s["first_failures"][:3])
            fix = data_fix(s, NOUNS[kind], str(quarantine_dir / f"{s['dataset']}.jsonl"))
            raise ValidationFailed(
                f"validate {kind}/{s['dataset']}: {s['rows_quarantined']} of {s['rows_in']} rows "
                f"({100 * s['bad_fraction']:.1f}%) failed, above max_bad_fraction {100 * s['max_bad_fraction']:.1f}%, "
                f"in {s['source']} — first: {shown} (all in the quarantine file and report). To pass: {fix}, "
                f"or raise validate.max_bad_fraction to at least {passing_fraction(s)} in params.yaml"
            )


NOTES = "{name}.notes.json"  # written by tasks/ingest.py only when it has something to say


def _notes(in_dir: Path, name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    path = in_dir / NOTES.format(name=name)
    found = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {**defaults, **{k: v for k, v in found.items() if k in defaults}}


def _sources(df: pd.DataFrame) -> str:
    files = sorted({o.rsplit(":", 1)[0] for o in df["origin"].dropna().unique()}) if "origin" in df else []
    return ", ".join(files[:5]) + (f" (+{len(files) - 5} more)" if len(files) > 5 else "")


def run_corpus(
    cfg: Validate, in_dir: Path, out_dir: Path, quarantine_dir: Path, report_dir: Path, batch_rows: int | None = None
) -> dict[str, Any]:
    """Validate the corpus row group by row group (or batch_rows at a time): flat memory."""
    in_path = in_dir / "corpus.parquet"
    if not in_path.is_file():
        raise UserError(f"{in_path}: ingested corpus not found; run `finpipe ingest corpus` first")
    with atomic_dir(out_dir) as tmp, atomic_dir(quarantine_dir) as qtmp:
        tally = validate_corpus_file(in_path, cfg, tmp / "corpus.parquet", qtmp / "corpus.jsonl", batch_rows)
    notes = _notes(in_dir, "corpus", {"colliding_ids": 0, "first_colliding_ids": [], "damage": []})
    summary = summarise_tally("corpus", tally.sources(), tally, cfg.max_bad_fraction, notes)
    write_report(report_dir, "corpus", [summary])
    log.info("corpus: %d rows in, %d passed, %d quarantined", tally.rows_in, tally.rows_passed, tally.rows_quarantined)
    _enforce("corpus", [summary], quarantine_dir)
    return metrics([summary])


def _run_sets(kind: str, cfg: Validate, in_dir: Path, out_dir: Path, quarantine_dir: Path, report_dir: Path) -> dict[str, Any]:
    if not in_dir.is_dir():
        raise UserError(f"{in_dir}: ingested {kind} data not found; run `finpipe ingest {kind}` first")
    summaries = []
    with atomic_dir(out_dir) as tmp, atomic_dir(quarantine_dir) as qtmp:
        for path in sorted(in_dir.glob("*.parquet")):
            name = path.stem
            meta = json.loads((in_dir / f"{name}.meta.json").read_text())
            df = pd.read_parquet(path)
            outcome = validate_sentiment(df, meta, cfg) if kind == "sentiment" else validate_ner(df, meta, cfg)
            notes = _notes(in_dir, name, {"damage": []})
            summaries.append(summarise(name, _sources(df), len(df), outcome, cfg.max_bad_fraction, notes))
            passed = outcome.passed.drop(columns=["parse_error", "_text_key"], errors="ignore")
            passed.to_parquet(tmp / f"{name}.parquet", index=False)
            shutil.copy(in_dir / f"{name}.meta.json", tmp / f"{name}.meta.json")
            write_quarantine(qtmp / f"{name}.jsonl", outcome.quarantined)
            log.info(
                "%s/%s: %d rows in, %d passed, %d quarantined", kind, name, len(df), len(outcome.passed), len(outcome.quarantined)
            )
    write_report(report_dir, kind, summaries)
    _enforce(kind, summaries, quarantine_dir)
    return metrics(summaries)


def run_sentiment(cfg: Validate, in_dir: Path, out_dir: Path, quarantine_dir: Path, report_dir: Path) -> dict[str, Any]:
    return _run_sets("sentiment", cfg, in_dir, out_dir, quarantine_dir, report_dir)


def run_ner(cfg: Validate, in_dir: Path, out_dir: Path, quarantine_dir: Path, report_dir: Path) -> dict[str, Any]:
    return _run_sets("ner", cfg, in_dir, out_dir, quarantine_dir, report_dir)

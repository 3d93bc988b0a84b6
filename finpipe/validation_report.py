"""Validation report: per-dataset counts and per-check failures, as JSON and Markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from finpipe.atomic import write_json, write_text
from finpipe.schemas import DUPLICATE, LEAK, Outcome

FIRST_FAILURES = 10


@dataclass
class Tally:
    """What a report needs of a data set's validation, added up batch by batch in bounded
    memory: counts, the rows per failed rule, the first FIRST_FAILURES quarantined rows and
    the input files named by the rows' origins."""

    rows_in: int = 0
    rows_passed: int = 0
    rows_quarantined: int = 0
    check_counts: dict[str, int] = field(default_factory=dict)
    first_failures: list[dict[str, Any]] = field(default_factory=list)
    files: set[str] = field(default_factory=set)
    rule_order: list[str] = field(default_factory=list)  # ties in the counts listed in this order

    def add(self, rows: pd.DataFrame, outcome: Outcome) -> None:
        self.rows_in += len(rows)
        self.rows_passed += len(outcome.passed)
        self.rows_quarantined += len(outcome.quarantined)
        for rule, n in outcome.check_counts.items():
            self.check_counts[rule] = self.check_counts.get(rule, 0) + n
        room = FIRST_FAILURES - len(self.first_failures)
        if room > 0:
            self.first_failures += [
                {"origin": str(r.get("origin", "")), "id": str(r.get("id", r.get("doc_id", ""))), "reasons": r["reasons"]}
                for r in outcome.quarantined.head(room).to_dict("records")
            ]
        if "origin" in rows:
            self.files.update(o.rsplit(":", 1)[0] for o in rows["origin"].dropna().unique())

    def sources(self) -> str:
        files = sorted(self.files)
        return ", ".join(files[:5]) + (f" (+{len(files) - 5} more)" if len(files) > 5 else "")

    def sorted_checks(self) -> dict[str, int]:
        """Most frequent first; ties in rule order (a batch-by-batch tally meets the rules in
        another order than one pass over the table), rules outside it after, as met."""
        rank = {rule: i for i, rule in enumerate(self.rule_order)}
        met = list(self.check_counts)
        return dict(sorted(self.check_counts.items(), key=lambda kv: (-kv[1], rank.get(kv[0], len(rank) + met.index(kv[0])))))


def summarise(
    name: str, source: str, total: int, outcome: Outcome, max_bad_fraction: float, notes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Counts per check and the first failures of one validated table (see summarise_tally)."""
    tally = Tally()
    tally.add(pd.DataFrame(index=range(total)), outcome)
    # one pass over the table: ties stay in the order pandera reported the rules
    tally.rule_order = list(outcome.check_counts)
    return summarise_tally(name, source, tally, max_bad_fraction, notes)


def summarise_tally(
    name: str, source: str, tally: Tally, max_bad_fraction: float, notes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Counts per check and the first failures; `notes`: what ingest found that no row carries
    (colliding_ids and first_colliding_ids for the corpus, damage: the damaged files' lines)."""
    total, n_bad = tally.rows_in, tally.rows_quarantined
    return {
        "dataset": name,
        "source": source,
        "rows_in": total,
        "rows_passed": tally.rows_passed,
        "rows_quarantined": n_bad,
        "bad_fraction": round(n_bad / total, 6) if total else 0.0,
        "max_bad_fraction": max_bad_fraction,
        "passed": (n_bad / total if total else 0.0) <= max_bad_fraction,
        "checks": tally.sorted_checks(),
        "first_failures": tally.first_failures,
        **(notes or {}),
    }


def passing_fraction(summary: dict[str, Any]) -> float:
    """The smallest max_bad_fraction with 3 decimals under which this dataset passes: its bad
    fraction rounded up, in exact arithmetic so that float noise cannot round it below."""
    if not summary["rows_in"]:
        return 0.0
    exact = Fraction(summary["rows_quarantined"], summary["rows_in"])
    return math.ceil(exact * 1000) / 1000


def data_fix(summary: dict[str, Any], noun: str, listed: str) -> str:
    """What to change in the data so the dataset passes. Leaks into dev/test and duplicate
    keys go away by deleting the repeats; any other failure is fixed row by row."""
    only_repeats = all(k == LEAK or k.startswith(DUPLICATE) for k in summary["checks"])
    if only_repeats and summary["checks"]:
        return f"remove the duplicated {noun} from {summary['source']} (listed in {listed})"
    return f"fix or remove the failing {noun} in {summary['source']} (listed in {listed})"


def check_fix(summary: dict[str, Any], noun: str, listed: str) -> str:
    """`finpipe check`'s way to pass: a damaged file is restored first (no threshold passes it),
    then too many bad rows are fixed or the threshold raised."""
    ways = []
    if summary.get("damage"):
        ways.append(f"restore the complete {summary['source']} (damaged input above), then check it again")
    if summary["rows_in"] and summary["rows_quarantined"] / summary["rows_in"] > summary["max_bad_fraction"]:
        ways.append(f"{data_fix(summary, noun, listed)}, or rerun with --max-bad-fraction {passing_fraction(summary)}")
    return "; and ".join(ways)


def _notes_md(s: dict[str, Any]) -> list[str]:
    """What ingest noted beside the data: repeated document ids, damaged input files."""
    lines = []
    if n := s.get("colliding_ids"):
        first = ", ".join(f"`{i}`" for i in s["first_colliding_ids"])
        reuse = "document reuses" if n == 1 else "documents reuse"
        lines += ["", f"## {s['dataset']}: repeated document ids", ""]
        lines.append(
            f"{n} {reuse} the id of an earlier document with other text; each is kept as a document of its own "
            f"(`<id>#2`, `<id>#3`, ...). First: {first}"
        )
    if s.get("damage"):
        lines += ["", f"## {s['dataset']}: damaged input", ""]
        lines += [f"- {d}" for d in s["damage"]]
    return lines


def markdown(kind: str, summaries: list[dict[str, Any]]) -> str:
    lines = [
        f"# Validation report: {kind}",
        "",
        "| dataset | rows in | passed | quarantined | bad % | max % | result |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['dataset']} | {s['rows_in']} | {s['rows_passed']} | {s['rows_quarantined']} | "
            f"{100 * s['bad_fraction']:.2f} | {100 * s['max_bad_fraction']:.2f} | {'pass' if s['passed'] else '**FAIL**'} |"
        )
    for s in summaries:
        if not s["checks"]:
            continue
        lines += ["", f"## {s['dataset']}: failed checks", "", "| check | rows |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in s["checks"].items()]
        lines += ["", "First quarantined rows:", ""]
        lines += [f"- `{f['origin']}`: {'; '.join(f['reasons'])}" for f in s["first_failures"]]
    for s in summaries:
        lines += _notes_md(s)
    return "\n".join(lines) + "\n"


METRIC_KEYS = ("rows_in", "rows_passed", "rows_quarantined", "bad_fraction")


def metrics(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers only, per dataset: what DVC shows with `dvc metrics show/diff`."""
    return {s["dataset"]: {k: s[k] for k in METRIC_KEYS} for s in summaries}


def write_report(report_dir: Path, kind: str, summaries: list[dict[str, Any]]) -> None:
    """<kind>.json: the full report (checks, first failures); <kind>.md: the same for people;
    <kind>.metrics.json: numbers only, declared as DVC metrics."""
    totals = {
        "rows_in": sum(s["rows_in"] for s in summaries),
        "rows_passed": sum(s["rows_passed"] for s in summaries),
        "rows_quarantined": sum(s["rows_quarantined"] for s in summaries),
    }
    write_json(report_dir / f"{kind}.json", {"kind": kind, **totals, "datasets": {s["dataset"]: s for s in summaries}})
    write_json(report_dir / f"{kind}.metrics.json", metrics(summaries))
    write_text(report_dir / f"{kind}.md", markdown(kind, summaries))


def write_quarantine(path: Path, rows: pd.DataFrame) -> None:
    from finpipe.atomic import atomic_path

    with atomic_path(path) as tmp:
        rows.drop(columns=[c for c in rows.columns if c.startswith("_")]).to_json(
            tmp, orient="records", lines=True, force_ascii=False
        )

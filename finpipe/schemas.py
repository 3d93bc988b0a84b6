"""pandera contracts for the three data kinds, and lazy validation into pass/quarantine.

Every check carries a readable `error`; that text is the reason written next to each
quarantined row and the key of the per-check counts in the validation report.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from finpipe.bio import bio_problem

_CONTROL_RX = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_BAD_TOKEN = re.compile(r"\s|" + _CONTROL_RX)
PARSE_ERROR = "unparsable row"
LEAK = "text also appears in the train split"
DUPLICATE = "duplicate "  # the start of every duplicate-key rule's reason


def _text_checks(min_chars: int, max_chars: int) -> list[pa.Check]:
    return [
        pa.Check(lambda s: s.str.strip().str.len() > 0, error="text is empty"),
        pa.Check(lambda s: s.str.len() >= min_chars, error=f"text shorter than {min_chars} characters"),
        pa.Check(lambda s: s.str.len() <= max_chars, error=f"text longer than {max_chars} characters"),
        pa.Check(lambda s: ~s.str.contains(_CONTROL_RX, regex=True), error="text contains NUL or other control characters"),
    ]


SEEN_BEFORE = "_seen_before"  # set by a batched validation: the row's key was in an earlier batch


def _first_occurrence(columns: Sequence[str], what: str) -> pa.Check:
    def check(df: pd.DataFrame) -> pd.Series:
        repeat = df.duplicated(subset=list(columns), keep="first")
        return ~(repeat | df[SEEN_BEFORE]) if SEEN_BEFORE in df else ~repeat

    return pa.Check(check, error=f"{DUPLICATE}{what}")


def corpus_schema(min_chars: int, max_chars: int) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "doc_id": pa.Column(None, nullable=False),
            "sent_idx": pa.Column(None, nullable=False, checks=pa.Check(lambda s: s >= 0, error="negative sent_idx")),
            "text": pa.Column(None, nullable=False, checks=_text_checks(min_chars, max_chars)),
            "split": pa.Column(None, checks=pa.Check(lambda s: s.isin(["train", "dev"]), error="split is not train/dev")),
        },
        checks=[_first_occurrence(["doc_id", "sent_idx"], "(doc_id, sent_idx)")],
        coerce=False,
    )


def _leak_check(key: str) -> pa.Check:
    """Rows of dev/test whose text also appears in train (compared after normalisation)."""

    def check(df: pd.DataFrame) -> pd.Series:
        keys = df[key]
        train = set(keys[df["split"] == "train"])
        return ~((df["split"] != "train") & keys.isin(train))

    return pa.Check(check, error=LEAK)


def _not_in(column: str, allowed: Sequence[str]) -> str:
    return f"{column} not in {list(allowed)}"


def _one_of(column: str, allowed: Sequence[str]) -> pa.Column:
    """A column whose values must be in `allowed`. The list rides along in the column's
    metadata, so a rejected value can be named with the allowed one it nearly is."""
    allowed = list(allowed)
    check = pa.Check(lambda s: s.isin(allowed), error=_not_in(column, allowed))
    return pa.Column(None, nullable=False, checks=check, metadata={"allowed": allowed})


def sentiment_schema(
    labels: Sequence[str], score_range: tuple[float, float], min_chars: int, max_chars: int, has_score: bool
) -> pa.DataFrameSchema:
    lo, hi = score_range
    return pa.DataFrameSchema(
        {
            "id": pa.Column(None, nullable=False),
            "text": pa.Column(None, nullable=False, checks=_text_checks(min_chars, max_chars)),
            "label": _one_of("label", labels),
            "score": pa.Column(
                None, nullable=not has_score, checks=pa.Check(lambda s: s.between(lo, hi), error=f"score outside [{lo}, {hi}]")
            ),
            "split": pa.Column(
                None, checks=pa.Check(lambda s: s.isin(["train", "dev", "test"]), error="split is not train/dev/test")
            ),
        },
        checks=[_first_occurrence(["id"], "id"), _leak_check("_text_key")],
    )


def ner_schema(tags: Sequence[str], max_tokens: int) -> pa.DataFrameSchema:
    allowed = set(tags)

    def each(fn, error: str) -> pa.Check:
        return pa.Check(lambda s: s.map(fn).astype(bool), error=error)

    return pa.DataFrameSchema(
        {
            "id": pa.Column(None, nullable=False),
            "tokens": pa.Column(
                None,
                nullable=False,
                checks=[
                    each(lambda t: len(t) > 0, "sentence has no tokens"),
                    each(lambda t: len(t) <= max_tokens, f"more than {max_tokens} tokens"),
                    each(
                        lambda t: all(isinstance(x, str) and x and not _BAD_TOKEN.search(x) for x in t),
                        "empty token or token with whitespace/control characters",
                    ),
                ],
            ),
            "tags": pa.Column(
                None,
                nullable=False,
                checks=[
                    each(lambda t: all(x in allowed for x in t), f"tag not in {sorted(allowed)}"),
                    each(lambda t: bio_problem(t) is None, "tags are not well-formed BIO"),
                ],
            ),
        },
        checks=[
            pa.Check(lambda df: df["tokens"].map(len) == df["tags"].map(len), error="tokens and tags differ in length"),
            _first_occurrence(["id"], "id"),
            _leak_check("_text_key"),
        ],
    )


def _row_reason(schema: pa.DataFrameSchema, column: Any, reason: str, value: Any) -> str:
    """A row's line for a failed rule: the membership rule of a `_one_of` column names the value."""
    col = schema.columns.get(column) if isinstance(column, str) else None
    allowed = (col.metadata or {}).get("allowed") if col is not None else None
    if allowed is None or reason != _not_in(column, allowed):
        return reason
    return _with_value(column, value, allowed)


def _squash(x: Any) -> str:
    return " ".join(str(x).casefold().replace("_", " ").replace("-", " ").split())


def _with_value(column: str, value: Any, allowed: Sequence[str]) -> str:
    """A rejected value names itself, and the allowed value it nearly is (case, spaces,
    underscores, hyphens; else a close spelling)."""
    allowed = list(allowed)
    text = f"{column} {value!r} not in {allowed}"
    near = [a for a in allowed if _squash(a) == _squash(value)] or difflib.get_close_matches(str(value), allowed, n=1)
    return f"{text} (did you mean {near[0]!r}?)" if near else text


def rule_order(schema: pa.DataFrameSchema) -> list[str]:
    """Every rule's reason in the order pandera reports failures (unparsable rows first, the
    table-wide checks, then column by column: missing values, then the column's checks), so
    counts gathered over batches list ties as one validation of the whole table does."""
    order = [PARSE_ERROR, *(str(c.error) for c in schema.checks)]
    for name, col in schema.columns.items():
        order += [f"{name} is missing", *(str(c.error) for c in col.checks)]
    return order


@dataclass
class Outcome:
    passed: pd.DataFrame
    quarantined: pd.DataFrame  # the failing rows plus a `reasons` list column
    check_counts: dict[str, int]


def apply(schema: pa.DataFrameSchema, df: pd.DataFrame) -> Outcome:
    """Validate lazily (all failures collected); split rows into passed and quarantined.

    Rows with a reader `parse_error` are quarantined with that error as their reason.
    Invariant: len(passed) + len(quarantined) == len(df).
    """
    df = df.reset_index(drop=True)
    reasons: dict[int, list[str]] = {}
    if "parse_error" in df.columns:
        for i, err in df["parse_error"].items():
            if isinstance(err, str):
                reasons.setdefault(int(i), []).append(err)
    counts: dict[str, int] = {}
    rules: dict[int, set[str]] = {}  # the rules each row failed, as counted
    if reasons:
        counts[PARSE_ERROR] = len(reasons)
    # checks run on parsed rows only: a half-read row would trip every check at once
    parsed = df.drop(index=list(reasons)) if reasons else df
    try:
        if len(parsed):
            schema.validate(parsed, lazy=True)
    except SchemaErrors as err:
        fc = err.failure_cases
        for column, check, index, value in zip(fc["column"], fc["check"], fc["index"], fc["failure_case"], strict=True):
            if index is None or pd.isna(index):  # a whole-column failure: a bug in how we built df
                raise RuntimeError(f"schema failure without a row: column {column}: {check}") from None
            reason = str(check)
            if reason == "not_nullable":
                reason = f"{column} is missing"
            seen = rules.setdefault(int(index), set())
            if reason not in seen:
                seen.add(reason)
                counts[reason] = counts.get(reason, 0) + 1  # counted by rule; the row's line names its value
                reasons.setdefault(int(index), []).append(_row_reason(schema, column, reason, value))
    bad = sorted(reasons)
    quarantined = df.loc[bad].copy()
    quarantined["reasons"] = [reasons[i] for i in bad]
    passed = df.drop(index=bad)
    return Outcome(passed=passed, quarantined=quarantined, check_counts=counts)

"""Labelled sentiment sets: Financial PhraseBank lines and CSV/TSV/JSON(L)/Parquet tables.

Returns one DataFrame per file with columns id, text, label, score, origin, parse_error.
Rows the reader cannot make sense of keep a parse_error and are quarantined by validation.
A table's text, label and score columns are detected when the configured ones are absent
(finpipe/readers/columns.py); the spec that comes back names the columns used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from finpipe.config import SentimentDataset
from finpipe.errors import UserError
from finpipe.readers import columns as cols
from finpipe.readers.files import (
    TABULAR,
    Damages,
    data_suffix,
    detect_format,
    iter_lines,
    read_table,
    require_columns,
    require_file,
)

COLUMNS = ["id", "text", "label", "score", "origin", "parse_error"]
log = logging.getLogger(__name__)


def _format(path: Path, spec: SentimentDataset) -> str:
    if spec.format != "auto":
        return spec.format
    if data_suffix(path) == ".txt":
        return "fpb"
    return detect_format(path, {**TABULAR, ".txt": "fpb"})


def read_sentiment(path: Path, spec: SentimentDataset, name: str, damage: Damages | None = None) -> pd.DataFrame:
    return read_sentiment_file(path, spec, name, damage)[0]


def read_sentiment_file(
    path: Path, spec: SentimentDataset, name: str, damage: Damages | None = None
) -> tuple[pd.DataFrame, SentimentDataset]:
    """The file's rows, and `spec` with the columns they were read from."""
    fmt = _format(require_file(path), spec)
    if fmt == "fpb":
        return _fpb(path, spec, name, damage)[COLUMNS], spec
    table = read_table(path, fmt, spec.encoding, damage)
    if table.empty:
        raise UserError(f"{path}: no data rows")
    spec = sentiment_columns(path, table, spec)
    return _table(path, fmt, table, spec, name)[COLUMNS], spec


def sentiment_columns(path: Path, table: pd.DataFrame, spec: SentimentDataset) -> SentimentDataset:
    """The spec with the table's own text, label and score columns. A score column is looked
    for only when the file has no label column: one or the other is enough, and a label file's
    extra numbers are not taken as scores unless configured."""
    names = [str(c) for c in table.columns]

    def values(column: str) -> list[object]:
        return list(table[column])

    taken = {spec.id_column} if spec.id_column else set()
    text = cols.required(path, cols.TEXT, spec.text_column, names, taken)
    taken.add(text)
    label = cols.find(path, cols.LABEL, spec.label_column, names, values, taken).column if spec.label_column else None
    score = spec.score_column
    if score is not None or label is None:
        score = cols.find(path, cols.SCORE, score, names, values, taken | ({label} if label else set())).column
    if spec.score_column is not None and score is None:
        raise cols.not_found(path, cols.SCORE, spec.score_column, names)
    if label is None and score is None:
        raise UserError(
            f"{path}: no column {spec.label_column!r} (param label_column), nor one of the usual label columns "
            f"({cols.LABEL.shown()}) or score columns ({cols.SCORE.shown()}); columns are {names}; "
            "set label_column or score_column"
        )
    if label is None and spec.label_column is not None:
        log.info("%s: label column: none (no %r): classes come from score_bins", path.name, spec.label_column)
    if (text, label, score) == (spec.text_column, spec.label_column, spec.score_column):
        return spec
    return dataclasses.replace(spec, text_column=text, label_column=label, score_column=score)


def _fpb(path: Path, spec: SentimentDataset, name: str, damage: Damages | None) -> pd.DataFrame:
    """`sentence@label`, split on the last '@' (sentences may contain '@')."""
    rows = []
    for lineno, line in iter_lines(path, spec.encoding, damage):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("@")
        error = None if sep else "no '@' separating sentence and label"
        if not sep:
            text, label = line, None
        rows.append((f"{name}:{lineno}", text.strip(), label.strip() if label else None, np.nan, f"{path}:line {lineno}", error))
    if not rows:
        raise UserError(f"{path}: no data rows")
    return pd.DataFrame(rows, columns=COLUMNS)


def _to_score(value: object) -> tuple[float, str | None]:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return np.nan, "score is missing"
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan, f"score {value!r} is not a number"
    if math.isnan(score):
        return np.nan, "score is not a number"
    return score, None


def _table(path: Path, fmt: str, df: pd.DataFrame, spec: SentimentDataset, name: str) -> pd.DataFrame:
    require_columns(
        path,
        df,
        {
            "text_column": spec.text_column,
            "label_column": spec.label_column,
            "score_column": spec.score_column,
            "id_column": spec.id_column,
        },
    )
    loc = "line" if fmt == "jsonl" else "row"
    origins = [f"{path}:{loc} {i + 1}" for i in range(len(df))]
    texts = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in df[spec.text_column]]
    ids = [f"{name}:{v}" for v in df[spec.id_column]] if spec.id_column else [f"{name}:{i + 1}" for i in range(len(df))]
    errors: list[str | None] = [None] * len(df)
    labels: list[str | None] = [None] * len(df)
    if spec.label_column:
        labels = [
            None if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "" else str(v).strip()
            for v in df[spec.label_column]
        ]
    scores = [np.nan] * len(df)
    if spec.score_column:
        for i, v in enumerate(df[spec.score_column]):
            scores[i], err = _to_score(v)
            errors[i] = errors[i] or err
    for i, t in enumerate(texts):
        if t is not None and not isinstance(df[spec.text_column].iloc[i], str):
            errors[i] = errors[i] or f"text is a {type(df[spec.text_column].iloc[i]).__name__}, not a string"
    return pd.DataFrame({"id": ids, "text": texts, "label": labels, "score": scores, "origin": origins, "parse_error": errors})

"""Labelled sentiment sets: Financial PhraseBank lines and CSV/TSV/JSON(L)/Parquet tables.

Returns one DataFrame per file with columns id, text, label, score, origin, parse_error.
Rows the reader cannot make sense of keep a parse_error and are quarantined by validation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from finpipe.config import SentimentDataset
from finpipe.errors import UserError
from finpipe.readers.files import TABULAR, detect_format, iter_lines, read_table, require_columns, require_file

COLUMNS = ["id", "text", "label", "score", "origin", "parse_error"]


def _format(path: Path, spec: SentimentDataset) -> str:
    if spec.format != "auto":
        return spec.format
    if path.suffix.lower() == ".txt":
        return "fpb"
    return detect_format(path, {**TABULAR, ".txt": "fpb"})


def read_sentiment(path: Path, spec: SentimentDataset, name: str) -> pd.DataFrame:
    fmt = _format(require_file(path), spec)
    df = _fpb(path, spec, name) if fmt == "fpb" else _table(path, fmt, spec, name)
    return df[COLUMNS]


def _fpb(path: Path, spec: SentimentDataset, name: str) -> pd.DataFrame:
    """`sentence@label`, split on the last '@' (sentences may contain '@')."""
    rows = []
    for lineno, line in iter_lines(path, spec.encoding):
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


def _table(path: Path, fmt: str, spec: SentimentDataset, name: str) -> pd.DataFrame:
    df = read_table(path, fmt, spec.encoding)
    if df.empty:
        raise UserError(f"{path}: no data rows")
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

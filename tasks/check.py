"""`finpipe check`: ingest and validate one user file in memory, with the pipeline's code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from finpipe.config import CorpusIngest, CorpusSource, NerDataset, SentimentDataset, Validate, parse
from finpipe.corpus import CorpusStats, sentence_batches
from finpipe.readers.corpus import read_corpus
from finpipe.report import summarise
from tasks.ingest import ingest_ner_dataset, ingest_sentiment_dataset
from tasks.validate import validate_corpus, validate_ner, validate_sentiment

DEFAULT_LABELS = ["negative", "neutral", "positive"]


def check_file(
    kind: str,
    path: Path,
    *,
    fmt: str = "auto",
    text_column: str = "text",
    label_column: str | None = None,
    score_column: str | None = None,
    id_column: str | None = None,
    labels: list[str] | None = None,
    tag_scheme: str = "bio",
    max_bad_fraction: float = 0.01,
) -> dict[str, Any]:
    cfg = parse(Validate, {"max_bad_fraction": max_bad_fraction}, source="arguments")
    root, rel = path.parent, path.name
    if kind == "corpus":
        source = parse(
            CorpusSource,
            {"name": "check", "path": rel, "format": fmt, "text_column": text_column, "id_column": id_column},
            source="arguments",
        )
        spec = parse(CorpusIngest, {"sources": [source], "dev_fraction": 0.0}, source="arguments")
        batches = list(
            sentence_batches(
                read_corpus(root, source), CorpusStats(), seed=0, dev_fraction=0.0, markup=spec.strip_markup, batch_rows=1 << 30
            )
        )
        df = pa.Table.from_batches(batches).to_pandas() if batches else None
        if df is None:
            from finpipe.errors import UserError

            raise UserError(f"{path}: no text found")
        return summarise(rel, str(path), len(df), validate_corpus(df, cfg), max_bad_fraction)
    if kind == "sentiment":
        is_fpb = fmt == "fpb" or (fmt == "auto" and path.suffix.lower() == ".txt")
        if label_column is None and score_column is None:
            label_column = "label"
        spec = parse(
            SentimentDataset,
            {
                "path": rel,
                "format": fmt,
                "text_column": text_column,
                "label_column": label_column,
                "score_column": score_column,
                "id_column": id_column,
                "labels": labels or (DEFAULT_LABELS if (label_column or is_fpb) else None),
                "dev_fraction": 0.0,
                "test_fraction": 0.0,
            },
            source="arguments",
        )
        df = ingest_sentiment_dataset(root, "check", spec, seed=0)
        meta = {"labels": spec.label_set, "score_range": list(spec.score_range), "has_score": score_column is not None}
        return summarise(rel, str(path), len(df), validate_sentiment(df, meta, cfg), max_bad_fraction)
    spec = parse(
        NerDataset,
        {
            "path": rel,
            "format": fmt,
            "tag_scheme": tag_scheme,
            "dev_fraction": 0.0,
            "test_fraction": 0.0,
            **({"entity_types": labels} if labels else {}),
        },
        source="arguments",
    )
    df, _ = ingest_ner_dataset(root, "check", spec, seed=0)
    return summarise(rel, str(path), len(df), validate_ner(df, {"tags": spec.tag_set}, cfg), max_bad_fraction)

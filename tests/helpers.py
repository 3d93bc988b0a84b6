"""Small builders for tests: run one file through ingest + validate in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from finpipe.config import CorpusIngest, NerDataset, SentimentDataset, Validate, parse
from finpipe.corpus import CorpusStats, sentence_batches
from finpipe.readers.corpus import read_corpus
from finpipe.schemas import Outcome
from tasks.ingest import ingest_ner_dataset, ingest_sentiment_dataset
from tasks.validate import validate_corpus, validate_ner, validate_sentiment


def sentiment(path: Path, validate: dict[str, Any] | None = None, **spec: Any) -> tuple[Any, Outcome]:
    spec.setdefault("path", path.name)
    spec.setdefault("dev_fraction", 0.0)
    spec.setdefault("test_fraction", 0.0)
    ds = parse(SentimentDataset, spec)
    df = ingest_sentiment_dataset(path.parent, "t", ds, seed=0)
    meta = {"labels": ds.label_set, "score_range": list(ds.score_range), "has_score": ds.score_column is not None}
    outcome = validate_sentiment(df, meta, parse(Validate, validate or {}))
    assert len(outcome.passed) + len(outcome.quarantined) == len(df)  # the invariant, on every input
    return df, outcome


def ner(path: Path, validate: dict[str, Any] | None = None, **spec: Any) -> tuple[Any, Outcome, int]:
    spec.setdefault("path", path.name)
    spec.setdefault("dev_fraction", 0.0)
    spec.setdefault("test_fraction", 0.0)
    ds = parse(NerDataset, spec)
    df, changed = ingest_ner_dataset(path.parent, "t", ds, seed=0)
    outcome = validate_ner(df, {"tags": ds.tag_set}, parse(Validate, validate or {}))
    assert len(outcome.passed) + len(outcome.quarantined) == len(df)
    return df, outcome, changed


def corpus(root: Path, sources: list[dict[str, Any]], validate: dict[str, Any] | None = None, **cfg: Any):
    spec = parse(CorpusIngest, {"sources": sources, **cfg})
    stats = CorpusStats()
    batches = []
    for src in spec.sources:
        batches += list(
            sentence_batches(
                read_corpus(root, src),
                stats,
                seed=spec.seed,
                dev_fraction=spec.dev_fraction,
                markup=spec.strip_markup,
                batch_rows=spec.chunk_rows,
            )
        )
    df = pa.Table.from_batches(batches).to_pandas()
    outcome = validate_corpus(df, parse(Validate, validate or {}))
    assert len(outcome.passed) + len(outcome.quarantined) == len(df)
    return df, outcome, stats


def tiny_pretrain(**train: Any) -> dict[str, Any]:
    """A 2-layer scratch BERT for a handful of steps: the pretrain section every stage test uses."""
    return {
        "model": {
            "base": "scratch",
            "vocab_size": 1500,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        "data": {"max_seq_length": 48, "max_eval_examples": 64},
        "train": {
            "max_steps": 6,
            "batch_size": 8,
            "save_steps": 2,
            "logging_steps": 2,
            "learning_rate": 1e-3,
            "bf16": False,
            **train,
        },
    }


def reasons(outcome: Outcome) -> list[list[str]]:
    return list(outcome.quarantined["reasons"])


def tiny_finetune(**train: Any) -> dict[str, Any]:
    """The finetune section for stage tests: the embedded tasks, a few steps each."""
    steps = {
        "max_steps": 6,
        "batch_size": 8,
        "eval_steps": 3,
        "logging_steps": 2,
        "learning_rate": 1e-3,
        "head_learning_rate": 3e-3,
        "max_seq_length": 48,
        "bf16": False,
        **train,
    }
    return {
        "variants": ["adapted", "base"],
        "seeds": [13],
        "sentiment": {
            "tasks": {"headlines": {"dataset": "headlines", "target": "ordinal", "score_loss_weight": 1.0}},
            "train": steps,
        },
        "ner": {"tasks": {"news": {"dataset": "news"}}, "stride": 6, "train": {**steps, "max_seq_length": 16}},
    }

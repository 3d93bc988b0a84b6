"""Stage `ingest`: user files → Parquet with deterministic splits, one run per data kind.

corpus:    ingested/corpus/corpus.parquet (doc_id, sent_idx, text, source, date, split, origin)
sentiment: ingested/sentiment/<name>.parquet + <name>.meta.json
ner:       ingested/ner/<name>.parquet + <name>.meta.json
Rows that cannot be parsed are kept with a `parse_error`, so validation quarantines them and
rows in = rows passed + rows quarantined holds from the source file on.
"""

from __future__ import annotations

import bisect
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from finpipe.atomic import atomic_dir, write_json
from finpipe.bio import to_bio
from finpipe.config import SPLITS, CorpusIngest, NerDataset, NerIngest, ScoreBins, SentimentDataset, SentimentIngest
from finpipe.corpus import CORPUS_SCHEMA, CorpusStats, sentence_batches
from finpipe.readers.corpus import read_corpus
from finpipe.readers.ner import read_ner
from finpipe.readers.sentiment import read_sentiment
from finpipe.splits import group_split, stratified_group_split
from finpipe.text import normalise, text_key

log = logging.getLogger(__name__)


def run_corpus(cfg: CorpusIngest, root: Path, out_dir: Path) -> dict[str, Any]:
    """Stream every source into out_dir/corpus.parquet, in row groups of cfg.chunk_rows."""
    t0 = time.perf_counter()
    stats = CorpusStats()

    def docs():
        for source in cfg.sources:
            log.info("corpus: reading %s (%s)", root / source.path, source.format)
            yield from read_corpus(root, source)

    with atomic_dir(out_dir) as tmp:
        with pq.ParquetWriter(tmp / "corpus.parquet", CORPUS_SCHEMA, compression="zstd") as writer:
            for batch in sentence_batches(
                docs(), stats, seed=cfg.seed, dev_fraction=cfg.dev_fraction, markup=cfg.strip_markup, batch_rows=cfg.chunk_rows
            ):
                writer.write_batch(batch)
    metrics = {
        "documents_read": stats.documents_read,
        "documents_kept": stats.documents_kept,
        "duplicate_documents": stats.duplicate_documents,
        "empty_documents": stats.empty_documents,
        "sentences": stats.sentences,
        "per_source": stats.per_source,
    }
    log.info(
        "corpus: %d documents read, %d kept, %d exact duplicates dropped, %d empty, %d sentences in %.1f s",
        stats.documents_read,
        stats.documents_kept,
        stats.duplicate_documents,
        stats.empty_documents,
        stats.sentences,
        time.perf_counter() - t0,
    )
    return metrics


def bin_score(score: float, bins: ScoreBins) -> str:
    """Ordered class of a score: thresholds are upper-inclusive lower bounds of the next class."""
    return bins.labels[bisect.bisect_left(bins.thresholds, score)]


def _group_key(i: int, text: object) -> str:
    """Split group of a row: identical texts stay together; a non-text row is its own group."""
    return text_key(text) or f"\x00row{i}"


def _carve(
    frame: pd.DataFrame, given: set[str], groups: list[str], labels: list[str] | None, seed: int, dev: float, test: float
) -> pd.Series:
    """Splits for rows of the 'train' file, carving out the splits the source does not bring."""
    dev = 0.0 if "dev" in given else dev
    test = 0.0 if "test" in given else test
    if labels is None:
        return pd.Series(group_split(groups, seed, dev, test), index=frame.index)
    return pd.Series(stratified_group_split(groups, labels, seed, dev, test), index=frame.index)


def ingest_sentiment_dataset(root: Path, name: str, spec: SentimentDataset, seed: int) -> pd.DataFrame:
    files = {"all": spec.path} if spec.path else dict(spec.splits or {})
    parts = []
    for split, rel in files.items():
        frame = read_sentiment(root / rel, spec, name)
        if split != "all":  # ids from different files must not collide
            frame["id"] = frame["id"].str.replace(f"{name}:", f"{name}:{split}:", n=1, regex=False)
        frame["split"] = split
        parts.append(frame)
    df = pd.concat(parts, ignore_index=True)
    df["text"] = [normalise(t) if isinstance(t, str) else t for t in df["text"]]
    if spec.label_column is None:
        df["label"] = [bin_score(s, spec.score_bins) if pd.notna(s) else None for s in df["score"]]
    to_split = df["split"].isin(["all", "train"])
    sub = df[to_split]
    df.loc[to_split, "split"] = _carve(
        sub,
        set(files) - {"all"},
        [_group_key(i, t) for i, t in enumerate(sub["text"])],
        [str(x) for x in sub["label"]],
        seed,
        spec.dev_fraction,
        spec.test_fraction,
    )
    df["dataset"] = name
    return df


def ingest_ner_dataset(root: Path, name: str, spec: NerDataset, seed: int) -> tuple[pd.DataFrame, int]:
    files = {"all": spec.path} if spec.path else dict(spec.splits or {})
    parts = []
    for split, rel in files.items():
        frame = read_ner(root / rel, spec, name)
        if split != "all":  # ids and documents from different files must not collide
            frame["id"] = frame["id"].str.replace(f"{name}:", f"{name}:{split}:", n=1, regex=False)
            frame["doc_id"] = frame["doc_id"].str.replace(f"{name}:", f"{name}:{split}:", n=1, regex=False)
        frame["split"] = split
        parts.append(frame)
    df = pd.concat(parts, ignore_index=True)
    changed = 0
    if spec.tag_scheme == "io" or spec.repair_bio:
        new_tags = []
        for tags in df["tags"]:
            fixed, n = to_bio(tags)
            new_tags.append(fixed)
            changed += n
        df["tags"] = new_tags
    to_split = df["split"].isin(["all", "train"])
    sub = df[to_split]
    key = sub["doc_id"] if spec.split_by == "document" else sub["id"]
    df.loc[to_split, "split"] = _carve(sub, set(files) - {"all"}, list(key), None, seed, spec.dev_fraction, spec.test_fraction)
    df["dataset"] = name
    return df, changed


def _split_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["split"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SPLITS}


def run_sentiment(cfg: SentimentIngest, root: Path, out_dir: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for name, spec in cfg.datasets.items():
            df = ingest_sentiment_dataset(root, name, spec, cfg.seed)
            df.to_parquet(tmp / f"{name}.parquet", index=False)
            meta = {
                "labels": spec.label_set,
                "ordered": spec.ordered or spec.label_column is None,
                "has_score": spec.score_column is not None,
                "score_range": list(spec.score_range),
            }
            write_json(tmp / f"{name}.meta.json", meta)
            label_counts = df["label"].value_counts(dropna=False)
            metrics[name] = {
                "rows": len(df),
                "unparsed_rows": int(df["parse_error"].notna().sum()),
                "splits": _split_counts(df),
                "labels": {str(k): int(v) for k, v in sorted(label_counts.items(), key=lambda kv: str(kv[0]))},
            }
            log.info("sentiment/%s: %d rows, splits %s", name, len(df), metrics[name]["splits"])
    return metrics


def run_ner(cfg: NerIngest, root: Path, out_dir: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for name, spec in cfg.datasets.items():
            df, changed = ingest_ner_dataset(root, name, spec, cfg.seed)
            df.to_parquet(tmp / f"{name}.parquet", index=False)
            write_json(tmp / f"{name}.meta.json", {"tags": spec.tag_set, "entity_types": spec.entity_types})
            tag_counts: dict[str, int] = {}
            for tags in df["tags"]:
                for t in tags:
                    tag_counts[t] = tag_counts.get(t, 0) + 1
            metrics[name] = {
                "sentences": len(df),
                "documents": int(df["doc_id"].nunique()),
                "tokens": int(sum(len(t) for t in df["tokens"])),
                "unparsed_sentences": int(df["parse_error"].notna().sum()),
                "tags_converted_to_bio": changed,
                "splits": _split_counts(df),
                "tags": dict(sorted(tag_counts.items())),
            }
            log.info("ner/%s: %d sentences, splits %s", name, len(df), metrics[name]["splits"])
    return metrics

"""Stage `ingest`: user files → Parquet with deterministic splits, one run per data kind.

corpus:    ingested/corpus/corpus.parquet (doc_id, sent_idx, text, source, date, split, origin)
sentiment: ingested/sentiment/<name>.parquet + <name>.meta.json
ner:       ingested/ner/<name>.parquet + <name>.meta.json
Rows that cannot be parsed are kept with a `parse_error`, so validation quarantines them and
rows in = rows passed + rows quarantined holds from the source file on.

What ingest finds that no row carries (document ids repeated with other text, files cut short
or broken: finpipe/readers/files.py Damage) is warned about, counted in the metrics, and
written beside the data as <name>.notes.json, only when there is any, for the validate stage
to report: that stage reads only this folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from finpipe.atomic import atomic_dir, write_json
from finpipe.config import SPLITS, CorpusIngest, NerIngest, SentimentIngest
from finpipe.labelled import ingest_ner_dataset, read_sentiment_dataset
from finpipe.readers.corpus import read_corpus
from finpipe.readers.files import Damages
from finpipe.sentence_rows import CORPUS_SCHEMA, CorpusStats, sentence_batches

log = logging.getLogger(__name__)

NOTES = "{name}.notes.json"  # read by tasks/validate.py


def _damage(kind: str, damage: Damages) -> dict[str, Any]:
    """The damaged files' lines in the metrics, each also a warning in the log."""
    for found in damage:
        log.warning("%s: damaged input: %s", kind, found)
    return {"damaged_inputs": len(damage), "damage": [str(d) for d in damage]}


def _write_notes(folder: Path, name: str, notes: dict[str, Any]) -> None:
    """Notes for the validate stage, written only when there is something to say, so that a
    clean input's folder holds exactly what it always did."""
    if any(notes.values()):
        write_json(folder / NOTES.format(name=name), notes)


def run_corpus(cfg: CorpusIngest, root: Path, out_dir: Path) -> dict[str, Any]:
    """Stream every source into out_dir/corpus.parquet, in row groups of cfg.chunk_rows."""
    t0 = time.perf_counter()
    stats = CorpusStats()
    damage: Damages = []

    def docs():
        for source in cfg.sources:
            log.info("corpus: reading %s (%s)", root / source.path, source.format)
            yield from read_corpus(root, source, damage)

    with atomic_dir(out_dir) as tmp:
        with pq.ParquetWriter(tmp / "corpus.parquet", CORPUS_SCHEMA, compression="zstd") as writer:
            for batch in sentence_batches(
                docs(), stats, seed=cfg.seed, dev_fraction=cfg.dev_fraction, markup=cfg.strip_markup, batch_rows=cfg.chunk_rows
            ):
                writer.write_batch(batch)
        notes = {"colliding_ids": stats.colliding_ids, "first_colliding_ids": stats.first_colliding_ids}
        _write_notes(tmp, "corpus", {**notes, "damage": [str(d) for d in damage]})
    metrics = {
        "documents_read": stats.documents_read,
        "documents_kept": stats.documents_kept,
        "duplicate_documents": stats.duplicate_documents,
        "empty_documents": stats.empty_documents,
        "sentences": stats.sentences,
        "colliding_ids": stats.colliding_ids,
        "first_colliding_ids": stats.first_colliding_ids,
        **_damage("corpus", damage),
        "per_source": stats.per_source,
    }
    if stats.colliding_ids:
        log.warning(
            "corpus: %d documents reuse the id of an earlier document with other text (first: %s); "
            "kept as separate documents <id>#2, <id>#3, ...",
            stats.colliding_ids,
            ", ".join(stats.first_colliding_ids),
        )
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


def _split_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["split"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SPLITS}


def run_sentiment(cfg: SentimentIngest, root: Path, out_dir: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for name, configured in cfg.datasets.items():
            damage: Damages = []
            df, spec = read_sentiment_dataset(root, name, configured, cfg.seed, damage)
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
                **_damage(f"sentiment/{name}", damage),
            }
            _write_notes(tmp, name, {"damage": metrics[name]["damage"]})
            log.info("sentiment/%s: %d rows, splits %s", name, len(df), metrics[name]["splits"])
    return metrics


def run_ner(cfg: NerIngest, root: Path, out_dir: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for name, spec in cfg.datasets.items():
            damage: Damages = []
            df, changed = ingest_ner_dataset(root, name, spec, cfg.seed, damage)
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
                **_damage(f"ner/{name}", damage),
            }
            _write_notes(tmp, name, {"damage": metrics[name]["damage"]})
            log.info("ner/%s: %d sentences, splits %s", name, len(df), metrics[name]["splits"])
    return metrics

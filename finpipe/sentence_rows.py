"""Documents → ordered sentence rows: normalise, drop exact duplicates, split sentences.

Pure and streaming: `sentence_batches` consumes any iterable of RawDoc and yields column
batches, keeping only a 64-bit hash per document (and per id) for duplicate detection.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from finpipe.readers.corpus import RawDoc
from finpipe.seen_keys import SeenKeys
from finpipe.splits import hashed_split
from finpipe.text import normalise, split_sentences, strip_markup

CORPUS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("sent_idx", pa.int32()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("date", pa.string()),
        ("split", pa.string()),
        ("origin", pa.string()),
    ]
)


@dataclass
class CorpusStats:
    documents_read: int = 0
    documents_kept: int = 0
    duplicate_documents: int = 0
    empty_documents: int = 0
    sentences: int = 0
    # documents whose id an earlier kept document already had, with other text: kept as
    # separate documents under `<id>#2`, `<id>#3`, ... (never merged into the first)
    colliding_ids: int = 0
    first_colliding_ids: list[str] = field(default_factory=list)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)

    def bump(self, source: str, key: str, n: int = 1) -> None:
        counts = self.per_source.setdefault(
            source, {"documents_read": 0, "documents_kept": 0, "duplicate_documents": 0, "empty_documents": 0, "sentences": 0}
        )
        counts[key] += n


FIRST_SHOWN = 5  # colliding ids listed by name in the metrics
DEDUP_CHUNK = 4096  # documents whose hashes are looked up in one vectorised call


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class IdCounts:
    """How many kept documents carried each id so far, in about 8 bytes an id: ids seen once
    live in a SeenKeys of 64-bit hashes, only ids that repeat (rare) get a dict entry.

    Used a chunk at a time: `look_up` the chunk's id hashes once (vectorised), then `count`
    each kept document in order, then `commit`."""

    def __init__(self) -> None:
        self._once = SeenKeys()
        self._more: dict[int, int] = {}
        self._pending: set[int] = set()

    def look_up(self, hashes: np.ndarray) -> np.ndarray:
        return self._once.contains(hashes)

    def count(self, h: int, seen_before_chunk: bool) -> int:
        if h in self._more:
            self._more[h] += 1
        elif seen_before_chunk or h in self._pending:
            self._more[h] = 2
        else:
            self._pending.add(h)
            return 1
        return self._more[h]

    def commit(self) -> None:
        self._once.add(np.fromiter(self._pending, dtype=np.uint64, count=len(self._pending)))
        self._pending.clear()


def _unique_id(doc_id: str, n: int, stats: CorpusStats) -> str:
    """doc_id, or `doc_id#n` for the n-th kept document that carries it."""
    if n == 1:
        return doc_id
    stats.colliding_ids += 1
    if len(stats.first_colliding_ids) < FIRST_SHOWN:
        stats.first_colliding_ids.append(doc_id)
    return f"{doc_id}#{n}"


def _sentences(docs: Iterable[RawDoc], stats: CorpusStats, markup: bool) -> Iterator[tuple[RawDoc, list[str]]]:
    """Each non-empty document with its sentences; empty ones counted and dropped."""
    for doc in docs:
        stats.documents_read += 1
        stats.bump(doc.source, "documents_read")
        sentences: list[str] = []
        for part in (p for p in (doc.title, doc.text) if p):
            if markup:
                part = strip_markup(part)
            sentences.extend(split_sentences(normalise(part)))
        if not sentences:
            stats.empty_documents += 1
            stats.bump(doc.source, "empty_documents")
            continue
        yield doc, sentences


def sentence_batches(
    docs: Iterable[RawDoc],
    stats: CorpusStats,
    *,
    seed: int,
    dev_fraction: float,
    markup: bool,
    batch_rows: int,
) -> Iterator[pa.RecordBatch]:
    """Exact duplicate documents (same sentences after normalising) are dropped, the first
    kept. Memory stays flat in the corpus size but for the 64-bit hashes: 8 bytes per kept
    document's text and 8 per distinct id (about 20 bytes a document measured; ~260 MB for
    100M sentences, ~13M documents), plus a dict entry (~100 bytes) per id that repeats. Two
    different texts share a hash with probability about n^2 / 2^65 (5e-6 at 13M documents):
    the later would be counted as a duplicate, never written twice; two ids sharing one, the
    later would be named `<id>#2`."""
    seen = SeenKeys()
    ids = IdCounts()
    cols: dict[str, list] = {name: [] for name in CORPUS_SCHEMA.names}

    def flush() -> pa.RecordBatch:
        batch = pa.record_batch(
            [pa.array(cols[n], type=CORPUS_SCHEMA.field(n).type) for n in CORPUS_SCHEMA.names], schema=CORPUS_SCHEMA
        )
        for v in cols.values():
            v.clear()
        return batch

    prepared = _sentences(docs, stats, markup)
    while chunk := list(itertools.islice(prepared, DEDUP_CHUNK)):
        digests = np.fromiter((_h64("\n".join(s)) for _, s in chunk), dtype=np.uint64, count=len(chunk))
        id_hashes = np.fromiter((_h64(d.doc_id) for d, _ in chunk), dtype=np.uint64, count=len(chunk))
        known, ids_known = seen.contains(digests), ids.look_up(id_hashes)
        fresh: set[int] = set()
        for (doc, sentences), digest, dup, id_hash, id_known in zip(
            chunk, digests.tolist(), known.tolist(), id_hashes.tolist(), ids_known.tolist(), strict=True
        ):
            if dup or digest in fresh:
                stats.duplicate_documents += 1
                stats.bump(doc.source, "duplicate_documents")
                continue
            fresh.add(digest)
            stats.documents_kept += 1
            stats.bump(doc.source, "documents_kept")
            stats.sentences += len(sentences)
            stats.bump(doc.source, "sentences", len(sentences))
            doc_id = _unique_id(doc.doc_id, ids.count(id_hash, id_known), stats)
            split = hashed_split(doc_id, seed, dev_fraction)
            for i, sentence in enumerate(sentences):
                cols["doc_id"].append(doc_id)
                cols["sent_idx"].append(i)
                cols["text"].append(sentence)
                cols["source"].append(doc.source)
                cols["date"].append(doc.date)
                cols["split"].append(split)
                cols["origin"].append(doc.origin)
            if len(cols["text"]) >= batch_rows:
                yield flush()
        seen.add(np.fromiter(fresh, dtype=np.uint64, count=len(fresh)))
        ids.commit()
    if cols["text"]:
        yield flush()

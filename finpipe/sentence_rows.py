"""Documents → ordered sentence rows: normalise, drop exact duplicates, split sentences.

Pure and streaming: `sentence_batches` consumes any iterable of RawDoc and yields column
batches, keeping only a 16-byte digest per document for duplicate detection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from finpipe.readers.corpus import RawDoc
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


def _unique_id(doc_id: str, counts: dict[bytes, int], stats: CorpusStats) -> str:
    """doc_id, or `doc_id#n` for the n-th kept document that carries it."""
    key = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=16).digest()  # flat memory per id
    n = counts[key] = counts.get(key, 0) + 1
    if n == 1:
        return doc_id
    stats.colliding_ids += 1
    if len(stats.first_colliding_ids) < FIRST_SHOWN:
        stats.first_colliding_ids.append(doc_id)
    return f"{doc_id}#{n}"


def sentence_batches(
    docs: Iterable[RawDoc],
    stats: CorpusStats,
    *,
    seed: int,
    dev_fraction: float,
    markup: bool,
    batch_rows: int,
) -> Iterator[pa.RecordBatch]:
    seen: set[bytes] = set()
    id_counts: dict[bytes, int] = {}
    cols: dict[str, list] = {name: [] for name in CORPUS_SCHEMA.names}

    def flush() -> pa.RecordBatch:
        batch = pa.record_batch(
            [pa.array(cols[n], type=CORPUS_SCHEMA.field(n).type) for n in CORPUS_SCHEMA.names], schema=CORPUS_SCHEMA
        )
        for v in cols.values():
            v.clear()
        return batch

    for doc in docs:
        stats.documents_read += 1
        stats.bump(doc.source, "documents_read")
        parts = [p for p in (doc.title, doc.text) if p]
        sentences: list[str] = []
        for part in parts:
            if markup:
                part = strip_markup(part)
            sentences.extend(split_sentences(normalise(part)))
        if not sentences:
            stats.empty_documents += 1
            stats.bump(doc.source, "empty_documents")
            continue
        digest = hashlib.blake2b("\n".join(sentences).encode("utf-8"), digest_size=16).digest()
        if digest in seen:
            stats.duplicate_documents += 1
            stats.bump(doc.source, "duplicate_documents")
            continue
        seen.add(digest)
        stats.documents_kept += 1
        stats.bump(doc.source, "documents_kept")
        stats.sentences += len(sentences)
        stats.bump(doc.source, "sentences", len(sentences))
        doc_id = _unique_id(doc.doc_id, id_counts, stats)
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
    if cols["text"]:
        yield flush()

"""Issue #13 point 6: corpora that outgrow memory. Validation of the corpus batch by batch, and
pretraining examples built shard by shard, give what one pass over the whole table gives."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finpipe.config import PretrainData, Validate, parse
from finpipe.pretrain.data import (
    CorpusDocuments,
    cached_examples,
    document_shards,
    shard_sizes,
    stream_examples,
    tokenize_documents,
)
from finpipe.pretrain.nsp import Specials, build_examples
from finpipe.seen_keys import SeenKeys
from finpipe.sentence_rows import CORPUS_SCHEMA
from tasks import validate

# --- validate ---------------------------------------------------------------------------------


def _row(doc: str, idx: int, text: str, split: str = "train") -> dict:
    return {"doc_id": doc, "sent_idx": idx, "text": text, "source": "s", "date": None, "split": split, "origin": f"f.txt:{doc}"}


def _bad_corpus(path) -> None:
    """Ten rows: a duplicate key four rows after its first, a bad split before an empty text
    (one each: a tie listed in rule order), a control character."""
    rows = [
        _row("a", 0, "Alpha rose."),
        _row("a", 1, "Alpha fell.", split="test"),
        _row("b", 0, "Beta rose."),
        _row("b", 1, "Beta fell."),
        _row("c", 0, "Gamma \x01 rose."),
        _row("a", 0, "Alpha rose again."),  # (a, 0) again, in a later batch
        _row("c", 1, "Gamma fell."),
        _row("d", 0, "   "),
        _row("d", 1, "Delta rose."),
        _row("d", 2, "Delta fell."),
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), path)


def _validate(tmp_path, name: str, batch_rows: int | None) -> dict:
    out = tmp_path / name
    cfg = parse(Validate, {"max_bad_fraction": 1.0, "corpus": {"min_chars": 3}})
    validate.run_corpus(cfg, tmp_path / "in", out / "clean", out / "q", out / "rep", batch_rows=batch_rows)
    return {
        "clean": pq.read_table(out / "clean" / "corpus.parquet").to_pylist(),
        "quarantine": (out / "q" / "corpus.jsonl").read_text(),
        **{f: (out / "rep" / f).read_text() for f in ("corpus.json", "corpus.md", "corpus.metrics.json")},
    }


def test_validation_in_batches_of_two_equals_one_pass(tmp_path):
    (tmp_path / "in").mkdir()
    _bad_corpus(tmp_path / "in" / "corpus.parquet")
    whole, batched = _validate(tmp_path, "whole", None), _validate(tmp_path, "batched", 2)
    assert batched == whole
    report = json.loads(whole["corpus.json"])["datasets"]["corpus"]
    assert (report["rows_in"], report["rows_passed"], report["rows_quarantined"]) == (10, 6, 4)
    # ties in the order one pandera pass reports them, although batch 1 met the split rule first
    assert list(report["checks"]) == [
        "duplicate (doc_id, sent_idx)",
        "text is empty",
        "text contains NUL or other control characters",
        "split is not train/dev",
    ]


def test_duplicate_keys_are_found_across_batches(tmp_path):
    (tmp_path / "in").mkdir()
    _bad_corpus(tmp_path / "in" / "corpus.parquet")
    out = _validate(tmp_path, "one-row-batches", 1)
    quarantined = [json.loads(line) for line in out["quarantine"].splitlines()]
    dup = [q for q in quarantined if q["text"] == "Alpha rose again."]
    assert dup and dup[0]["reasons"] == ["duplicate (doc_id, sent_idx)"]
    assert "Alpha rose." in [r["text"] for r in out["clean"]]  # the first occurrence passes


@pytest.mark.parametrize("max_run", [1 << 22, 64])
def test_seen_keys_match_a_set(monkeypatch, max_run):
    import finpipe.seen_keys

    monkeypatch.setattr(finpipe.seen_keys, "MAX_RUN", max_run)  # 64: many full runs, never merged
    rng = np.random.default_rng(0)
    seen, reference = SeenKeys(), set()
    for _ in range(40):
        batch = rng.integers(0, 5000, size=int(rng.integers(1, min(300, max_run))), dtype=np.uint64)
        assert seen.contains(batch).tolist() == [int(h) in reference for h in batch]
        seen.add(batch)
        reference.update(int(h) for h in batch)
    assert len(seen) == len(reference) and seen.nbytes == 8 * len(reference)
    assert all(len(run) <= max_run for run in seen._runs)


# --- pretraining examples ----------------------------------------------------------------------

SP = Specials(cls=101, sep=102)


class _Tokenizer:
    """Sentences of space-separated token ids, so a token names its document and sentence."""

    cls_token_id, sep_token_id = SP.cls, SP.sep

    def __call__(self, texts, **_):
        return {"input_ids": [[int(t) for t in s.split()] for s in texts]}


def _documents(n_docs: int, n_sent: int = 6) -> list[list[str]]:
    return [[" ".join(str(1000 * (d + 1) + 10 * s + k) for k in range(4)) for s in range(n_sent)] for d in range(n_docs)]


def _cfg(**kw) -> PretrainData:
    return parse(PretrainData, {"max_seq_length": 24, "short_seq_probability": 0.0, **kw})


def _corpus_file(path, docs: list[list[str]]) -> None:
    rows = [_row(f"d{d:03d}", i, s) for d, doc in enumerate(docs) for i, s in enumerate(doc)]
    pq.write_table(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), path, row_group_size=7)


def test_shards_are_balanced_with_two_documents_or_more():
    assert shard_sizes(10, 4) == [4, 3, 3]
    assert min(shard_sizes(1001, 4)) == 3  # not 250 shards of 4 and one of 1
    for n in range(2, 300):
        for cap in (4, 5, 7, 50):
            sizes = shard_sizes(n, cap)
            assert sum(sizes) == n and max(sizes) <= cap and min(sizes) >= 2 and max(sizes) - min(sizes) <= 1


def test_corpus_documents_stream_the_shards_a_list_gives(tmp_path):
    docs = _documents(11)
    _corpus_file(tmp_path / "c.parquet", docs)
    corpus = CorpusDocuments(tmp_path / "c.parquet", "train", shard_documents=4, batch_rows=5)
    assert [len(s) for s in corpus.shards()] == [4, 4, 3]
    assert list(corpus.shards()) == list(document_shards(docs, 4))
    assert list(corpus) == docs and corpus.count.documents == 11 and corpus.count.multi_sentence == 11


def test_one_shard_builds_what_the_whole_corpus_built():
    docs, tok = _documents(9), _Tokenizer()
    before = list(
        build_examples(
            tokenize_documents(docs, tok),
            max_seq_length=24,
            short_seq_probability=0.0,
            nsp=True,
            nsp_probability=0.5,
            dupe_factor=2,
            seed=5,
            sp=SP,
        )
    )
    assert list(stream_examples(docs, tok, _cfg(dupe_factor=2, shard_documents=9), seed=5)) == before


def test_examples_across_shards_are_deterministic_and_bounded(monkeypatch, tmp_path):
    import finpipe.pretrain.data as data

    seen_sizes: list[int] = []
    tokenize = data.tokenize_documents
    monkeypatch.setattr(data, "tokenize_documents", lambda docs, tok: seen_sizes.append(len(docs)) or tokenize(docs, tok))
    docs = _documents(10)
    _corpus_file(tmp_path / "c.parquet", docs)
    corpus = CorpusDocuments(tmp_path / "c.parquet", "train", shard_documents=4, batch_rows=3)
    cfg = _cfg(shard_documents=4)
    first = list(stream_examples(corpus, _Tokenizer(), cfg, seed=3))
    assert seen_sizes == [4, 3, 3]  # one shard of documents in memory at a time
    assert list(stream_examples(corpus, _Tokenizer(), cfg, seed=3)) == first
    # token // 1000 is the document's number, from 1
    shard_of = {d + 1: k for k, shard in enumerate([range(4), range(4, 7), range(7, 10)]) for d in shard}
    labels = set()
    for ex in first:
        ids, types = ex["input_ids"], ex["token_type_ids"]
        a = {t // 1000 for t, ty in zip(ids, types, strict=True) if ty == 0 and t not in (SP.cls, SP.sep)}
        b = {t // 1000 for t, ty in zip(ids, types, strict=True) if ty == 1 and t != SP.sep}
        (doc_a,) = a
        labels.add(ex["next_sentence_label"])
        assert {shard_of[d] for d in b} == {shard_of[doc_a]}  # NotNext draws from its own shard
    assert labels == {0, 1}
    # the shards' own seeds: not the first shard's pairs again in the others
    assert first != list(stream_examples(corpus, _Tokenizer(), _cfg(shard_documents=10), seed=3))


@pytest.mark.parametrize("limit", [None, 5])
def test_cached_examples_are_the_streamed_ones_numbered(tmp_path, limit):
    docs, cfg = _documents(10), _cfg(shard_documents=4)
    ds = cached_examples(docs, _Tokenizer(), cfg, seed=3, cache_dir=tmp_path, key="k", limit=limit)
    streamed = list(stream_examples(docs, _Tokenizer(), cfg, seed=3))[:limit]
    assert ds.to_list() == [{**ex, "idx": i} for i, ex in enumerate(streamed)]
    assert str(ds.features["input_ids"]) == "List(Value('int32'))"
    assert pd.Series([p.name for p in tmp_path.iterdir()]).tolist() == ["k-v2"]  # no scratch left behind


def test_each_shard_pairs_with_a_seed_of_its_own():
    """Two shards of the same shape: one seed for both would pair them identically."""
    examples = list(stream_examples(_documents(8), _Tokenizer(), _cfg(shard_documents=4), seed=3))
    per_shard: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for ex in examples:
        first_doc = ex["input_ids"][1] // 1000  # 1..8; documents 1-4 are shard 0
        per_shard[(first_doc - 1) // 4].append((ex["next_sentence_label"], ex["length"]))
    assert per_shard[0] and per_shard[1] and per_shard[0] != per_shard[1]


def test_cached_examples_are_written_in_place_not_copied(monkeypatch, tmp_path):
    """The cache folder is save_to_disk's layout written directly: one Arrow file, never a
    finished file copied through a memory map (which made RSS grow with the corpus)."""
    import datasets

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", lambda *a, **k: pytest.fail("examples copied by save_to_disk"))
    docs, cfg = _documents(10), _cfg(shard_documents=4)
    ds = cached_examples(docs, _Tokenizer(), cfg, seed=3, cache_dir=tmp_path, key="k")
    folder = tmp_path / "k-v2"
    assert sorted(p.name for p in folder.iterdir()) == ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    assert [f["filename"] for f in ds.cache_files] == [str(folder / "data-00000-of-00001.arrow")]
    assert datasets.load_from_disk(str(folder)).to_list() == ds.to_list() != []


def test_a_failed_example_build_leaves_no_cache(tmp_path):
    class Broken(_Tokenizer):
        def __call__(self, *a, **k):
            raise RuntimeError("tokenizer died")

    with pytest.raises(RuntimeError, match="tokenizer died"):
        cached_examples(_documents(10), Broken(), _cfg(shard_documents=4), seed=3, cache_dir=tmp_path, key="k")
    assert list(tmp_path.iterdir()) == []  # neither a half cache nor its scratch folder


# --- replay -----------------------------------------------------------------------------------


def _list_draw(n_domain: int, n_general: int, fraction: float, seed: int) -> list[int]:
    """The draw as it was written first (a shuffled list of ints), the reference."""
    import random

    want = round(fraction / (1 - fraction) * n_domain)
    rng, picks = random.Random(seed), []
    while len(picks) < want and n_general:
        order = list(range(n_general))
        rng.shuffle(order)
        picks += order[: want - len(picks)]
    return picks


@pytest.mark.parametrize(("n_general", "fraction"), [(40, 0.25), (900, 0.2), (7, 0.5)])
def test_mix_replay_on_disk_draws_what_the_list_drew(tmp_path, n_general, fraction):
    import datasets

    from finpipe.pretrain.data import mix_replay

    domain = datasets.Dataset.from_list([{"input_ids": [1, i], "idx": i} for i in range(300)])
    general = datasets.Dataset.from_list([{"input_ids": [2, i], "idx": i} for i in range(n_general)])
    mixed = mix_replay(domain, general, fraction, seed=7, cache_file=tmp_path / "mixed.arrow")
    picks = _list_draw(300, n_general, fraction, 7)
    assert [ids[1] for ids in mixed["input_ids"][300:]] == picks
    assert mixed["idx"] == list(range(300 + len(picks)))
    # the drawn examples are read from the file, not held in memory
    assert str(tmp_path / "mixed.arrow") in [f["filename"] for f in mixed.cache_files]
    assert mix_replay(domain, general, fraction, seed=7).to_list() == mixed.to_list()


# --- ingest -----------------------------------------------------------------------------------


def _raw_docs(n: int, *, dupes: bool = True):
    from finpipe.readers.corpus import RawDoc

    for i in range(n):
        # every 5th repeats an earlier text; ids repeat every 7 (kept as <id>#2, ...)
        body = f"Company {i % 50 if dupes and i % 5 == 0 else i} reported results."
        yield RawDoc(str(i % 7 if dupes else i), None, body, None, "s", f"f:{i}")


def _ingest_rows(docs) -> tuple[list[dict], dict]:
    import dataclasses

    from finpipe.sentence_rows import CorpusStats, sentence_batches

    stats = CorpusStats()
    rows = [
        r for b in sentence_batches(docs, stats, seed=1, dev_fraction=0.2, markup=False, batch_rows=16) for r in b.to_pylist()
    ]
    return rows, dataclasses.asdict(stats)


def _reference_dedup(docs) -> list[tuple[str, int, str]]:
    """(doc_id, sent_idx, text) as ingest first wrote them, one document at a time with a
    Python set of texts and a dict of ids: the reference for the hashed, chunked version."""
    from finpipe.text import normalise, split_sentences

    texts, ids, rows = set(), {}, []
    for doc in docs:
        sentences = split_sentences(normalise(doc.text))
        if not sentences or "\n".join(sentences) in texts:
            continue
        texts.add("\n".join(sentences))
        n = ids[doc.doc_id] = ids.get(doc.doc_id, 0) + 1
        rows += [(doc.doc_id if n == 1 else f"{doc.doc_id}#{n}", i, t) for i, t in enumerate(sentences)]
    return rows


def test_ingest_dedup_is_the_same_across_chunk_boundaries(monkeypatch):
    import finpipe.sentence_rows as sr

    whole = _ingest_rows(_raw_docs(400))
    assert [(r["doc_id"], r["sent_idx"], r["text"]) for r in whole[0]] == _reference_dedup(_raw_docs(400))
    assert whole[1]["duplicate_documents"] > 0 and whole[1]["colliding_ids"] > 0
    ids = [r["doc_id"] for r in whole[0]]
    assert len(set(ids)) == len(ids) and "0#2" in ids  # every kept document its own id
    for chunk in (1, 3, 64):
        monkeypatch.setattr(sr, "DEDUP_CHUNK", chunk)
        assert _ingest_rows(_raw_docs(400)) == whole


def test_ingest_keeps_a_few_bytes_per_document():
    """What ingest keeps per document (duplicate texts, repeated ids) grows by bytes, not by
    the ~200 B of Python objects per document it once held: measured as the slope of the
    traced peak between 10k and 40k documents."""
    import tracemalloc

    def peak(n: int) -> int:
        tracemalloc.start()
        for _ in _ingest_rows_stream(_raw_docs(n, dupes=False)):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    slope = (peak(40_000) - peak(10_000)) / 30_000
    assert slope < 48, f"{slope:.0f} bytes a document"


def _ingest_rows_stream(docs):
    from finpipe.sentence_rows import CorpusStats, sentence_batches

    yield from sentence_batches(docs, CorpusStats(), seed=1, dev_fraction=0.2, markup=False, batch_rows=1024)


def test_reading_the_corpus_in_batches_holds_no_more_at_the_end_than_at_the_start(tmp_path):
    """Arrow's pre-buffering keeps each row group's buffers until the file is closed
    (apache/arrow#39808): the live Arrow memory grew with the file. Read without it, it is
    the same after the last row group as after the first few."""
    import random

    from finpipe.pretrain.data import CorpusDocuments

    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    path = tmp_path / "c.parquet"
    with pq.ParquetWriter(path, CORPUS_SCHEMA) as writer:
        for g in range(60):
            rows = [_row(f"d{g}-{i // 5}", i % 5, " ".join(rng.choices(words, k=12))) for i in range(5000)]
            writer.write_table(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA))
    held: list[int] = []
    corpus = CorpusDocuments(path, "train", shard_documents=1000, batch_rows=5000)
    for _ in corpus._rows(["doc_id", "sent_idx", "text"]):
        held.append(pa.total_allocated_bytes())
    assert len(held) == 60
    early, late = max(held[5:15]), max(held[-10:])
    assert late < early + (1 << 20), f"{early >> 20} MB held early, {late >> 20} MB late"


@pytest.mark.parametrize("partition_bytes", [16 << 20, 64])
def test_repeated_keys_are_those_a_whole_table_count_finds(monkeypatch, tmp_path, partition_bytes):
    """The first pass finds exactly the repeated (doc_id, sent_idx) keys, whether the hashes
    fit one partition or spread over many scratch files (64 bytes: 8 keys a partition)."""
    import finpipe.corpus_validation as cv
    from finpipe.seen_keys import key_hashes

    monkeypatch.setattr(cv, "PARTITION_BYTES", partition_bytes)
    rng = np.random.default_rng(1)
    rows = [_row(f"d{int(d)}", int(i), "Some text.") for d, i in rng.integers(0, 30, size=(400, 2))]
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), path, row_group_size=50)
    (tmp_path / "scratch").mkdir()
    found = cv.repeated_keys(path, None, tmp_path / "scratch")
    df = pd.DataFrame(rows)
    expected = np.unique(key_hashes(df[df.duplicated(cv.KEY, keep=False)], cv.KEY))
    assert len(expected) > 10 and found.tolist() == expected.tolist()
    assert list((tmp_path / "scratch").iterdir()) == []  # the partitions are removed once counted


def test_validation_holds_only_the_repeated_keys(monkeypatch, tmp_path):
    """Memory in the second pass: the hashes of keys that repeat, not one per row."""

    held: list[int] = []
    add = SeenKeys.add
    monkeypatch.setattr(SeenKeys, "add", lambda self, h: held.append(len(h)) or add(self, h))
    (tmp_path / "in").mkdir()
    _bad_corpus(tmp_path / "in" / "corpus.parquet")  # one key, (a, 0), twice; 10 rows
    out = _validate(tmp_path, "batched", 3)
    assert sum(held) == 2 and "Alpha rose again." in out["quarantine"]

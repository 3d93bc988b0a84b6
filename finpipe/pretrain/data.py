"""Corpus → tokenized documents → NSP/MLM examples, cached as Arrow datasets, built shard by
shard and written as they come, so memory stays flat in the corpus size."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import random
import shutil
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from datasets.arrow_writer import ArrowWriter
from datasets.utils.py_utils import asdict as datasets_asdict

from finpipe.config import PretrainData
from finpipe.fingerprint import fingerprint
from finpipe.pretrain.collator import PretrainCollator
from finpipe.pretrain.nsp import Specials, build_examples

log = logging.getLogger(__name__)
EXAMPLES_FORMAT = 2  # bump when the cached example columns change (2: `idx` seeds the masks)


Document = Sequence[str]  # sentences, in order
# documents that can be read more than once: a list, or CorpusDocuments streaming from Parquet
Documents = Iterable[Document]


@dataclass(frozen=True)
class DocumentCount:
    documents: int
    multi_sentence: int  # documents of more than one sentence (NSP's true continuations)


@dataclass(frozen=True)
class CorpusDocuments:
    """One split of a corpus Parquet as documents, read batch by batch and handed out in shards
    of at most about `shard_documents` documents, so memory stays flat in the corpus size.

    Within a shard, sentences are grouped by doc_id and ordered by sent_idx wherever they are
    in the file; across shards a document is expected in one place, as ingest writes it. The
    shards are balanced (shard_sizes), so each has at least two documents: NotNext pairs draw
    their second segment from another document of the same shard. `only` / `exclude` select
    documents by their corpus source."""

    corpus: Path
    split: str
    only: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    shard_documents: int = 50_000
    batch_rows: int = 65_536

    def _rows(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """The rows of this split and these sources, in file order, batch by batch."""
        pf = pq.ParquetFile(self.corpus, pre_buffer=False)  # see finpipe.corpus_validation._batches
        by_source = self.only is not None or bool(self.exclude)  # else a corpus needs no source column
        for batch in pf.iter_batches(batch_size=self.batch_rows, columns=[*columns, "split", *(["source"] if by_source else [])]):
            keep = pc.equal(batch.column("split"), self.split)
            source = batch.column("source") if by_source else None
            if self.only is not None:
                keep = pc.and_(keep, pc.is_in(source, pa.array(sorted(self.only), pa.string())))
            if self.exclude:
                keep = pc.and_(keep, pc.invert(pc.is_in(source, pa.array(sorted(self.exclude), pa.string()))))
            if by_source:
                keep = pc.and_(keep, pc.is_valid(source))  # as the Parquet filters did: no source, no match
            yield batch.filter(pc.fill_null(keep, False)).select(columns)

    @functools.cached_property
    def count(self) -> DocumentCount:
        """Documents (runs of one doc_id) and those of several sentences, from the ids alone."""
        documents = multi = 0
        last, run = None, 0
        for batch in self._rows(["doc_id"]):
            for doc_id in batch.column("doc_id").to_pylist():
                if doc_id == last and documents:
                    run += 1
                    multi += run == 2
                else:
                    documents, last, run = documents + 1, doc_id, 1
        return DocumentCount(documents, multi)

    def shards(self) -> Iterator[list[list[str]]]:
        sizes = shard_sizes(self.count.documents, self.shard_documents)
        docs: dict[str, list[tuple[int, str]]] = {}
        for batch in self._rows(["doc_id", "sent_idx", "text"]):
            ids, idx, texts = (batch.column(c).to_pylist() for c in ("doc_id", "sent_idx", "text"))
            for doc_id, i, text in zip(ids, idx, texts, strict=True):
                # the last shard takes whatever is left (all of it if the count was short)
                if doc_id not in docs and len(sizes) > 1 and len(docs) == sizes[0]:
                    yield _in_order(docs)
                    docs, sizes = {}, sizes[1:]
                docs.setdefault(doc_id, []).append((i, text))
        if docs:
            yield _in_order(docs)

    def __iter__(self) -> Iterator[list[str]]:
        for shard in self.shards():
            yield from shard


def _in_order(docs: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    return [[t for _, t in sorted(sents)] for sents in docs.values()]


def document_shards(docs: Documents, shard_documents: int) -> Iterator[Sequence[Document]]:
    """Documents in balanced shards of at most shard_documents (see CorpusDocuments)."""
    if isinstance(docs, CorpusDocuments):
        if docs.shard_documents != shard_documents:  # (the same: its document count is reused)
            docs = dataclasses.replace(docs, shard_documents=shard_documents)
        yield from docs.shards()
        return
    docs = list(docs)
    start = 0
    for size in shard_sizes(len(docs), shard_documents):
        yield docs[start : start + size]
        start += size


def shard_sizes(documents: int, shard_documents: int) -> list[int]:
    """As few shards as hold at most shard_documents each, their sizes differing by one at
    most: with shard_documents >= 4 every shard of a corpus of 2 or more has 2 or more."""
    if not documents:
        return []
    n = math.ceil(documents / shard_documents)
    return [documents // n + (k < documents % n) for k in range(n)]


def corpus_sentences(corpus: Path, split: str) -> Iterator[str]:
    """The split's sentences in file order (ingest writes each document's in order), streamed."""
    for batch in CorpusDocuments(corpus, split)._rows(["text"]):
        yield from batch.column("text").to_pylist()


def shard_seed(seed: int, shard: int) -> int:
    """The example generator's seed for a shard: the first keeps `seed`, so a corpus of one
    shard builds the very examples it built before shards existed; the others get seeds of
    their own, the same on every run."""
    if shard == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{shard}".encode()).digest()[:8], "big")


TOKENIZE_BATCH = 8192  # sentences per tokenizer call: its per-token objects stay small


def tokenize_documents(docs: Sequence[Sequence[str]], tokenizer: Any) -> list[list[array]]:
    """Token ids per sentence per document, as int32 arrays (4 bytes a token; a list of Python
    ints costs ~36)."""
    flat = [s for d in docs for s in d]
    ids: list[array] = []
    for k in range(0, len(flat), TOKENIZE_BATCH):
        # sentences longer than the model are fine here: NSP pairs are truncated to max_seq_length
        enc = tokenizer(
            flat[k : k + TOKENIZE_BATCH],
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        ids += [array("i", t) for t in enc["input_ids"]]
    out, k = [], 0
    for d in docs:
        out.append(ids[k : k + len(d)])
        k += len(d)
    return out


def tokenizer_fingerprint(tokenizer: Any) -> str:
    return fingerprint(tokenizer.backend_tokenizer.to_str(), tokenizer.get_added_vocab())


def mix_replay(
    domain: datasets.Dataset, general: datasets.Dataset, fraction: float, seed: int, cache_file: Path | None = None
) -> datasets.Dataset:
    """The domain examples plus general-domain ones making up `fraction` of the result, drawn
    without replacement (and again once all were drawn), numbered after the domain's so each
    example keeps masks of its own.

    With `cache_file` the drawn examples are written there (Arrow, memory-mapped back) rather
    than held in memory; it must be named for everything that decides them (the caller's
    key, fraction, seed). The draw holds 8 bytes per general-domain example."""
    want = round(fraction / (1 - fraction) * len(domain))
    rng = random.Random(seed)
    picks = array("q")
    while len(picks) < want and len(general):
        # an int64 array shuffles exactly as the list of ints did (same swaps, same draws)
        order = array("q", range(len(general)))
        rng.shuffle(order)
        picks.extend(order[: want - len(picks)])
    renumber = functools.partial(_renumber, offset=len(domain))
    where: dict[str, Any] = {"keep_in_memory": True} if cache_file is None else {"cache_file_name": str(cache_file)}
    chosen = general.select(np.frombuffer(picks, dtype=np.int64) if picks else []).map(renumber, with_indices=True, **where)
    return datasets.concatenate_datasets([domain, chosen])


def _renumber(_: dict[str, Any], i: int, offset: int) -> dict[str, int]:
    return {"idx": offset + i}


def example_features(nsp: bool, premasked: bool) -> datasets.Features:
    """The cached columns, typed as datasets typed them when the examples were a list in
    memory (Dataset.from_list): a cache built before streaming reads the same."""
    cols: dict[str, Any] = {
        "input_ids": datasets.List(datasets.Value("int32")),
        "token_type_ids": datasets.List(datasets.Value("int8")),
        "length": datasets.Value("int64"),
    }
    if nsp:
        cols["next_sentence_label"] = datasets.Value("int64")
    cols["idx"] = datasets.Value("int64")
    if premasked:
        cols["labels"] = datasets.List(datasets.Value("int64"))
    return datasets.Features(cols)


def stream_examples(docs: Documents, tokenizer: Any, cfg: PretrainData, seed: int) -> Iterator[dict[str, Any]]:
    """NSP/MLM examples shard by shard: one shard's documents and tokens in memory at a time."""
    sp = Specials(cls=tokenizer.cls_token_id, sep=tokenizer.sep_token_id)
    for k, shard in enumerate(document_shards(docs, cfg.shard_documents)):
        tokens = tokenize_documents(shard, tokenizer)
        log.info("examples: shard %d, %d documents", k, len(tokens))
        yield from build_examples(
            tokens,
            max_seq_length=cfg.max_seq_length,
            short_seq_probability=cfg.short_seq_probability,
            nsp=cfg.nsp,
            nsp_probability=cfg.nsp_probability,
            dupe_factor=cfg.dupe_factor,
            seed=shard_seed(seed, k),
            sp=sp,
        )
        del shard, tokens  # before the next shard is read: one shard in memory, not two


ARROW_FILE = "data-00000-of-00001.arrow"  # the name save_to_disk gives a dataset of one shard


def _write_dataset_state(folder: Path) -> None:
    """state.json and dataset_info.json beside folder's Arrow file, as Dataset.save_to_disk
    writes them, so datasets.load_from_disk reads the folder (memory-mapped, nothing copied)."""
    built = datasets.Dataset.from_file(str(folder / ARROW_FILE))
    keys = ("_fingerprint", "_format_columns", "_format_kwargs", "_format_type", "_output_all_columns")
    state = {k: built.__dict__[k] for k in keys}
    state["_split"] = None
    state["_data_files"] = [{"filename": ARROW_FILE}]
    info = datasets_asdict(built.info)  # datasets' own: default fields left out, as save_to_disk writes
    del built
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2), encoding="utf-8")


def cached_examples(
    docs: Documents,
    tokenizer: Any,
    cfg: PretrainData,
    *,
    seed: int,
    cache_dir: Path,
    key: str,
    limit: int | None = None,
    premask: PretrainCollator | None = None,
) -> datasets.Dataset:
    """Build (or load from cache_dir/key) the examples as an Arrow dataset, written as they
    are built (flat memory).

    With `premask`, masking is applied once with a fixed generator, so every evaluation (the
    base model before, the adapted model after) scores the very same masked positions.
    """
    path = cache_dir / f"{key}-v{EXAMPLES_FORMAT}"
    if (path / "dataset_info.json").is_file():
        log.info("examples: loaded from cache %s", path)
        return datasets.load_from_disk(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    gen = torch.Generator().manual_seed(seed) if premask is not None else None
    writer: ArrowWriter | None = None
    try:
        # written straight into save_to_disk's layout (one Arrow file, then its two JSON files):
        # copying a finished file into it reads every page back through a memory map, which
        # counts as resident memory (~12 GB at 100M sentences)
        writer = ArrowWriter(features=example_features(cfg.nsp, premask is not None), path=str(tmp / ARROW_FILE))
        n = 0
        for ex in itertools.islice(stream_examples(docs, tokenizer, cfg, seed), limit):
            ex["idx"] = n  # seeds this example's masks (see PretrainCollator)
            if premask is not None:
                masked, labels = premask.mask(torch.tensor([ex["input_ids"]]), generator=gen)
                ex["input_ids"], ex["labels"] = masked[0].tolist(), labels[0].tolist()
            writer.write(ex)
            n += 1
        writer.finalize()
        _write_dataset_state(tmp)
        if not path.exists():
            os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()  # a no-op once finalized; a failed build's file is closed before removal
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("examples: built %d (cached at %s)", n, path)
    return datasets.load_from_disk(str(path))

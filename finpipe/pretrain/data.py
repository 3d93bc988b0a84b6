"""Corpus → tokenized documents → NSP/MLM examples, cached as Arrow datasets."""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import torch

from finpipe.config import PretrainData
from finpipe.fingerprint import fingerprint
from finpipe.pretrain.collator import PretrainCollator
from finpipe.pretrain.nsp import Specials, build_examples

log = logging.getLogger(__name__)
EXAMPLES_FORMAT = 2  # bump when the cached example columns change (2: `idx` seeds the masks)


def read_documents(
    corpus: Path, split: str, *, only: Collection[str] | None = None, exclude: Collection[str] = ()
) -> list[list[str]]:
    """Sentences per document, in document and sentence order, for one split; `only` /
    `exclude` select documents by their corpus source."""
    filters = [("split", "==", split)]
    if only is not None:
        filters.append(("source", "in", sorted(only)))
    if exclude:
        filters.append(("source", "not in", sorted(exclude)))
    table = pq.read_table(corpus, columns=["doc_id", "sent_idx", "text", "split"], filters=filters)
    docs: dict[str, list[tuple[int, str]]] = {}
    for doc_id, idx, text in zip(
        table["doc_id"].to_pylist(), table["sent_idx"].to_pylist(), table["text"].to_pylist(), strict=True
    ):
        docs.setdefault(doc_id, []).append((idx, text))
    return [[t for _, t in sorted(sents)] for sents in docs.values()]


def tokenize_documents(docs: Sequence[Sequence[str]], tokenizer: Any) -> list[list[list[int]]]:
    flat = [s for d in docs for s in d]
    # sentences longer than the model are fine here: NSP pairs are truncated to max_seq_length
    ids = tokenizer(flat, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False)[
        "input_ids"
    ]
    out, k = [], 0
    for d in docs:
        out.append(ids[k : k + len(d)])
        k += len(d)
    return out


def tokenizer_fingerprint(tokenizer: Any) -> str:
    return fingerprint(tokenizer.backend_tokenizer.to_str(), tokenizer.get_added_vocab())


def mix_replay(domain: datasets.Dataset, general: datasets.Dataset, fraction: float, seed: int) -> datasets.Dataset:
    """The domain examples plus general-domain ones making up `fraction` of the result, drawn
    without replacement (and again once all were drawn), numbered after the domain's so each
    example keeps masks of its own."""
    want = round(fraction / (1 - fraction) * len(domain))
    rng = random.Random(seed)
    picks: list[int] = []
    while len(picks) < want and len(general):
        order = list(range(len(general)))
        rng.shuffle(order)
        picks += order[: want - len(picks)]
    chosen = general.select(picks).map(lambda _, i: {"idx": len(domain) + i}, with_indices=True, keep_in_memory=True)
    return datasets.concatenate_datasets([domain, chosen])


def cached_examples(
    docs: Sequence[Sequence[str]],
    tokenizer: Any,
    cfg: PretrainData,
    *,
    seed: int,
    cache_dir: Path,
    key: str,
    limit: int | None = None,
    premask: PretrainCollator | None = None,
) -> datasets.Dataset:
    """Build (or load from cache_dir/key) the examples as an Arrow dataset.

    With `premask`, masking is applied once with a fixed generator, so every evaluation (the
    base model before, the adapted model after) scores the very same masked positions.
    """
    path = cache_dir / f"{key}-v{EXAMPLES_FORMAT}"
    if (path / "dataset_info.json").is_file():
        log.info("examples: loaded from cache %s", path)
        return datasets.load_from_disk(str(path))
    sp = Specials(cls=tokenizer.cls_token_id, sep=tokenizer.sep_token_id)
    tokens = tokenize_documents(docs, tokenizer)
    examples = list(
        build_examples(
            tokens,
            max_seq_length=cfg.max_seq_length,
            short_seq_probability=cfg.short_seq_probability,
            nsp=cfg.nsp,
            nsp_probability=cfg.nsp_probability,
            dupe_factor=cfg.dupe_factor,
            seed=seed,
            sp=sp,
        )
    )
    if limit is not None:
        examples = examples[:limit]
    for i, ex in enumerate(examples):
        ex["idx"] = i  # seeds this example's masks (see PretrainCollator)
    if premask is not None:
        gen = torch.Generator().manual_seed(seed)
        for ex in examples:
            masked, labels = premask.mask(torch.tensor([ex["input_ids"]]), generator=gen)
            ex["input_ids"], ex["labels"] = masked[0].tolist(), labels[0].tolist()
    ds = datasets.Dataset.from_list(examples)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.replace(tmp, path)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("examples: built %d (cached at %s)", len(ds), path)
    return datasets.load_from_disk(str(path))

"""Token classification on pre-split words: sub-token alignment, overlapping windows for long
sentences, stitching window predictions back to one tag per word, and character spans.

Written by hand because the tokenizer's own overflow handling cuts windows mid-word and says
nothing about which window should own a word: here a window starts at a word boundary where it
can, and each word is read from the window where it has the most context on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from finpipe.buckets import bucket_width

SPEC_KEY = "finpipe_ner"


@dataclass
class Encoded:
    """Windows of all sentences, plus where each word's first sub-token sits."""

    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    sentence: list[int] = field(default_factory=list)  # window -> sentence index
    # per sentence, per word: (window index, position in the window) of its first sub-token,
    # chosen as the window where the word has the most context; None = no sub-tokens
    owner: list[list[tuple[int, int] | None]] = field(default_factory=list)
    empty_words: int = 0  # words the tokenizer turns into nothing (tagged O on prediction)
    windowed_sentences: int = 0  # sentences longer than one window


def window_spans(word_ids: Sequence[int], body: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most `body` tokens covering all of `word_ids`;
    consecutive windows share about `stride` tokens, and a window starts at the first
    sub-token of a word whenever that still moves forward."""
    n = len(word_ids)
    if n <= body:
        return [(0, n)]
    spans = []
    start = 0
    while True:
        end = min(start + body, n)
        spans.append((start, end))
        if end == n:
            return spans
        nxt = end - stride
        back = nxt
        while back > start + 1 and word_ids[back - 1] == word_ids[back]:
            back -= 1  # to the first sub-token of the word that `nxt` falls in
        start = back if back > start else nxt


def continuation_labels(label2id: dict[str, int]) -> dict[int, int]:
    """The label of a word's later sub-tokens, by the label of its first: B-X continues as
    I-X, and as B-X itself where the label set has no I-X (an entity type seen only as
    single-token entities), as HF's run_ner does; every other label continues as itself."""
    out = {}
    for tag, i in label2id.items():
        inside = "I-" + tag[2:] if tag.startswith("B-") else None
        out[i] = label2id.get(inside, i) if inside else i
    return out


def encode(
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]] | None,
    label2id: dict[str, int],
    *,
    max_length: int,
    stride: int,
    label_all_subtokens: bool = False,
) -> Encoded:
    body = max_length - 2
    continuation = continuation_labels(label2id)
    pieces = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    out = Encoded()
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for si, words in enumerate(sentences):
        ids = pieces["input_ids"][si]
        wids = pieces.word_ids(si)
        first = [t == 0 or wids[t - 1] != wids[t] for t in range(len(ids))]
        spans = window_spans(wids, body, stride)
        out.windowed_sentences += len(spans) > 1
        owner: list[tuple[int, int] | None] = [None] * len(words)
        best: list[int] = [-1] * len(words)
        for start, end in spans:
            wi = len(out.input_ids)
            out.input_ids.append([cls, *ids[start:end], sep])
            out.sentence.append(si)
            row = [-100]
            for t in range(start, end):
                w = wids[t]
                if first[t]:
                    room = min(t - start, end - 1 - t)
                    if room > best[w]:
                        best[w], owner[w] = room, (wi, t - start + 1)
                if tags is None:
                    row.append(-100)
                elif first[t]:
                    row.append(label2id[tags[si][w]])
                elif label_all_subtokens:
                    row.append(continuation[label2id[tags[si][w]]])
                else:
                    row.append(-100)
            row.append(-100)
            out.labels.append(row)
        out.empty_words += sum(o is None for o in owner)
        out.owner.append(owner)
    return out


def dataset_rows(enc: Encoded) -> dict[str, list[Any]]:
    return {
        "input_ids": enc.input_ids,
        "attention_mask": [[1] * len(x) for x in enc.input_ids],
        "labels": enc.labels,
        "length": [len(x) for x in enc.input_ids],
    }


class NerCollator:
    """Pads ids with the pad id and labels with -100 to the longest window of the batch, rounded
    up to `pad_to_multiple_of` (at most `max_length`: finpipe.buckets.bucket_width)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None, max_length: int | None = None) -> None:
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = bucket_width(max(len(r["input_ids"]) for r in rows), self.pad_to_multiple_of, self.max_length)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([list(r[key]) + [value] * (width - len(r[key])) for r in rows], dtype=torch.long)

        batch = {"input_ids": pad("input_ids", self.pad_id), "attention_mask": pad("attention_mask", 0)}
        if "labels" in rows[0]:
            batch["labels"] = pad("labels", -100)
        return batch


@torch.no_grad()
def predict_words(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    *,
    max_length: int,
    stride: int,
    batch_size: int,
    bf16: bool = False,
    progress: bool = False,
    pad_to_multiple_of: int | None = None,
) -> tuple[list[list[str]], Encoded]:
    """One tag per word for every sentence (words without sub-tokens get O). `pad_to_multiple_of`:
    length buckets (the stage's dev scoring passes its own on a GPU)."""
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    enc = encode(tokenizer, sentences, None, {}, max_length=max_length, stride=stride)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(x) for x in enc.input_ids], kind="stable")
    collate = NerCollator(tokenizer.pad_token_id, pad_to_multiple_of, max_length)
    best: list[np.ndarray | None] = [None] * len(enc.input_ids)
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(len(order) / batch_size), unit="batch")
    for start in batches:
        idx = order[start : start + batch_size]
        rows = [{"input_ids": enc.input_ids[i], "attention_mask": [1] * len(enc.input_ids[i])} for i in idx]
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits
        top = logits.float().argmax(-1).cpu().numpy()
        for j, i in enumerate(idx):
            best[i] = top[j]
    model.train(was_training)
    tags = []
    for owner in enc.owner:
        tags.append(["O" if o is None else id2label[int(best[o[0]][o[1]])] for o in owner])
    return tags, enc


def words_with_offsets(tokenizer: PreTrainedTokenizerBase, text: str) -> list[tuple[str, int, int]]:
    """BERT's own word split (whitespace and punctuation) with character offsets into `text`."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    return [(w, s, e) for w, (s, e) in pre.pre_tokenize_str(text)]


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of each entity in a BIO sequence; an I-X that does not
    continue an X entity starts one (conlleval's reading, as seqeval's default mode)."""
    out: list[tuple[str, int, int]] = []
    kind, begin = None, -1
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and t == kind
        if kind is not None and not continues:
            out.append((kind, begin, i - 1))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, begin = t, i
    return out


def char_spans(text: str, words: Sequence[tuple[str, int, int]], tags: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"type": t, "start": words[a][1], "end": words[b][2], "text": text[words[a][1] : words[b][2]]} for t, a, b in spans(tags)
    ]

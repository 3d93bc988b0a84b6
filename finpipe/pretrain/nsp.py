"""BERT pretraining examples from ordered sentences, as in Google's create_pretraining_data.py.

Hand-written because transformers declined NSP data (transformers#2898, #6330) and
`TextDatasetForNextSentencePrediction` is deprecated. Per document: segment A is one or more
consecutive sentences up to a target length, segment B is the true continuation (IsNext,
label 0) or sentences from another document (NotNext, label 1) with `nsp_probability`; the
target length is shortened with `short_seq_probability`; a pair too long is truncated from a
random end of its longer segment. A one-sentence chunk can only make NotNext. With NSP off,
chunks become single segments (MLM only).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Document = Sequence[Sequence[int]]  # sentences of token ids, in order


@dataclass(frozen=True)
class Specials:
    cls: int
    sep: int


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _example(a: list[int], b: list[int], is_random_next: int | None, sp: Specials) -> dict[str, list[int] | int]:
    ids = [sp.cls, *a, sp.sep]
    types = [0] * len(ids)
    if b:
        ids += [*b, sp.sep]
        types += [1] * (len(b) + 1)
    ex: dict[str, list[int] | int] = {"input_ids": ids, "token_type_ids": types, "length": len(ids)}
    if is_random_next is not None:
        ex["next_sentence_label"] = is_random_next
    return ex


def document_examples(
    docs: Sequence[Document],
    index: int,
    *,
    max_seq_length: int,
    short_seq_probability: float,
    nsp: bool,
    nsp_probability: float,
    rng: random.Random,
    sp: Specials,
) -> Iterator[dict]:
    document = docs[index]
    max_tokens = max_seq_length - (3 if nsp else 2)
    target = max_tokens
    if rng.random() < short_seq_probability:
        target = rng.randint(2, max_tokens)
    chunk: list[Sequence[int]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                if not nsp:
                    a = [t for s in chunk for t in s][:max_tokens]
                    yield _example(a, [], None, sp)
                else:
                    a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                    a = [t for s in chunk[:a_end] for t in s]
                    b: list[int] = []
                    if len(chunk) == 1 or rng.random() < nsp_probability:
                        is_random = 1
                        target_b = max(1, target - len(a))
                        other = index
                        for _ in range(10):
                            other = rng.randint(0, len(docs) - 1)
                            if other != index:
                                break
                        rand_doc = docs[other]
                        for sentence in rand_doc[rng.randint(0, len(rand_doc) - 1) :]:
                            b.extend(sentence)
                            if len(b) >= target_b:
                                break
                        i -= len(chunk) - a_end  # the unused sentences start the next chunk
                    else:
                        is_random = 0
                        b = [t for s in chunk[a_end:] for t in s]
                    _truncate_pair(a, b, max_tokens, rng)
                    if a and b:
                        yield _example(a, b, is_random, sp)
            chunk = []
            length = 0
        i += 1


def build_examples(
    docs: Sequence[Document],
    *,
    max_seq_length: int,
    short_seq_probability: float,
    nsp: bool,
    nsp_probability: float,
    dupe_factor: int,
    seed: int,
    sp: Specials,
) -> Iterator[dict]:
    """All examples of a corpus; deterministic for a given seed. Documents are kept in input
    order within each dupe pass (the training sampler shuffles)."""
    rng = random.Random(seed)
    for _ in range(dupe_factor):
        for index in range(len(docs)):
            if docs[index]:
                yield from document_examples(
                    docs,
                    index,
                    max_seq_length=max_seq_length,
                    short_seq_probability=short_seq_probability,
                    nsp=nsp,
                    nsp_probability=nsp_probability,
                    rng=rng,
                    sp=sp,
                )

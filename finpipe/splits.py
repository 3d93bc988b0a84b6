"""Deterministic, seeded train/dev/test assignment.

Three shapes: by hashed key (streaming corpus documents), stratified by label over groups
of identical text (sentiment; duplicates never straddle splits), and by group with target
row fractions (NER documents). Written here because sklearn's splitters reject classes with
a single member and do not stream; each is a few lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence

import numpy as np


def hashed_split(key: str, seed: int, dev_fraction: float) -> str:
    """'dev' for about dev_fraction of keys, else 'train'; stable across runs and machines."""
    h = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return "dev" if int.from_bytes(h, "big") / 2**64 < dev_fraction else "train"


def _allocate(n: int, dev: float, test: float) -> tuple[int, int]:
    n_test = int(round(n * test))
    n_dev = int(round(n * dev))
    if n_test + n_dev >= n and n > 0:  # keep at least one member in train
        overflow = n_test + n_dev - (n - 1)
        n_dev = max(0, n_dev - overflow)
        n_test = min(n_test, n - 1 - n_dev)
    return n_dev, n_test


def stratified_group_split(
    groups: Sequence[Hashable], labels: Sequence[Hashable], seed: int, dev: float, test: float
) -> list[str]:
    """Split rows so that every group (e.g. identical text) lands in one split and each
    label's groups are divided dev/test/train in the given fractions."""
    rng = np.random.default_rng(seed)
    group_label: dict[Hashable, Hashable] = {}
    for g, lab in zip(groups, labels, strict=True):
        group_label.setdefault(g, lab)  # a group takes its first row's label
    by_label: dict[Hashable, list[Hashable]] = {}
    for g, lab in group_label.items():
        by_label.setdefault(lab, []).append(g)
    assignment: dict[Hashable, str] = {}
    for lab in sorted(by_label, key=str):
        members = by_label[lab]
        order = rng.permutation(len(members))
        n_dev, n_test = _allocate(len(members), dev, test)
        for rank, idx in enumerate(order):
            assignment[members[idx]] = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
    return [assignment[g] for g in groups]


def group_split(groups: Sequence[Hashable], seed: int, dev: float, test: float, tolerance: float = 0.25) -> list[str]:
    """Whole groups (documents) to splits: in a seeded random order, a group joins test (then
    dev) while the split stays within (1 + tolerance) of its share of rows. A split left
    empty takes the smallest group still in train, so a tiny set still gets dev and test."""
    sizes: dict[Hashable, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    keys = list(sizes)
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    targets = {"test": test * len(groups), "dev": dev * len(groups)}
    filled = {"test": 0, "dev": 0}
    assignment = dict.fromkeys(order, "train")
    for split in ("test", "dev"):
        if targets[split] <= 0:
            continue
        for g in order:
            if assignment[g] == "train" and filled[split] + sizes[g] <= (1 + tolerance) * targets[split]:
                assignment[g] = split
                filled[split] += sizes[g]
        left = [g for g in order if assignment[g] == "train"]
        if filled[split] == 0 and len(left) > 1:
            smallest = min(left, key=lambda g: sizes[g])
            assignment[smallest] = split
    return [assignment[g] for g in groups]

"""A set of 64-bit key hashes for duplicate checks across the batches of a table too large to
hold: 8 bytes a key (16 while two runs merge), instead of the ~70 of a Python set of ints.

Keys are hashed with pandas' stable hash (the same on every run and machine). Two different
keys share a hash with probability about n^2 / 2^65: 3e-4 for 100M rows, and a collision can
only quarantine a row as a duplicate, never let a duplicate through.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def key_hashes(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """uint64 hashes of each row's key. Integer columns go through pandas' nullable Int64 so a
    batch holding a null (read as float) hashes 3 as a batch without one does."""
    keys = df[columns].copy()
    for c in columns:
        if pd.api.types.is_numeric_dtype(keys[c]):
            keys[c] = keys[c].astype("Int64")
    return pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)


MAX_RUN = 1 << 22  # keys in one run (32 MB): a merge copies at most that much


class SeenKeys:
    """Sorted, disjoint uint64 runs. Small runs merge like a binary counter (a run at least
    half the size of the next), up to MAX_RUN keys, so adding n keys sorts each about
    log2(MAX_RUN / batch) times, a merge never copies more than 32 MB (one big sorted array
    would need two or three copies of everything at its last merge), and a lookup searches
    n / MAX_RUN + O(log) runs."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._runs)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, hashes)
            pos[pos == len(run)] = 0  # past the end: compare with any key, found stays as it is
            found |= run[pos] == hashes
        return found

    def add(self, hashes: np.ndarray) -> None:
        new = np.unique(hashes.astype(np.uint64, copy=False))
        new = new[~self.contains(new)]  # each key stored once, so runs stay disjoint
        while self._runs and len(self._runs[-1]) <= 2 * len(new) and len(self._runs[-1]) + len(new) <= MAX_RUN:
            merged = np.concatenate([self._runs.pop(), new])
            merged.sort()
            new = merged
        if len(new):
            self._runs.append(new)

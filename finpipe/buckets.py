"""Length buckets: how wide a batch is padded. Kept apart from finpipe.training (the Trainer set-up)
because every collator needs it, the base-model stage's too, which trains nothing."""

from __future__ import annotations

import torch

# On a GPU every new batch shape costs a fresh attention plan and kernel set-up: 0.15 s median
# per new width for BERT-base at batch 32 on an H200, about four steps' worth (RESULTS.md, "GPU
# check"). Batches there are padded up to a multiple of 64, so a run sees at most
# max_seq_length / 64 widths; at batch 32 the extra padding cost nothing measurable there.
GPU_PAD_MULTIPLE = 64


def pad_multiple(setting: int | str, cpu_default: int | None) -> int | None:
    """The `pad_to_multiple_of` a stage's collators use. `auto`: GPU_PAD_MULTIPLE where CUDA is
    available, else the stage's CPU default (where a new shape costs nothing and every padded
    token costs compute); an int is taken as given, 0 meaning pad to the longest row."""
    if setting == "auto":
        return GPU_PAD_MULTIPLE if torch.cuda.is_available() else cpu_default
    return int(setting) or None


def bucket_width(longest: int, multiple: int | None, limit: int | None = None) -> int:
    """A batch's padded width: its longest row rounded up to `multiple`, but not past `limit`
    (the stage's max_seq_length, which no row exceeds; capping it there keeps a limit that is no
    multiple of `multiple`, say 100, from padding every full batch to 128)."""
    if not multiple:
        return longest
    width = -(-longest // multiple) * multiple
    return max(longest, min(width, limit)) if limit else width

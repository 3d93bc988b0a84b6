"""Dropout on CPU with masks drawn in bulk.

torch draws CPU dropout masks with `bernoulli_`, one scalar draw per element. Profiled on a Xeon
with AMX (2 threads, bf16 autocast, the benchmark's 6-layer model), `bernoulli_` alone took 26 %
of a pretraining step, more than the encoder's matmuls; attention dropout also pushes SDPA off
its fused CPU kernel onto the unfused math path, which draws a mask over every [T, T] score.

Here a mask is 16 random bits per element from numpy's PCG64, generated in one call, so p is
exact to 1/65536. Its seed is drawn from torch's generator: `torch.manual_seed`, the Trainer's
seeding and the RNG state it checkpoints and restores on resume fix the masks exactly as they
fix torch's own. GPU tensors and evaluation keep torch's dropout (the GPU's Philox is fast).
Written by hand because neither torch nor transformers offers a cheaper CPU mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

ATTENTION = "finpipe_sdpa"
_LEVELS = 65536


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Boolean mask, True with probability 1 - p (to 1/65536), seeded from torch's CPU generator."""
    seed = int(torch.randint(0, 2**62, (1,)))
    n = int(np.prod(shape))
    bits = np.frombuffer(np.random.Generator(np.random.PCG64(seed)).bytes(2 * n), dtype=np.uint16)
    return torch.from_numpy(bits >= round(p * _LEVELS)).view(shape)


def bulk_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    return torch.where(keep_mask(x.shape, p), x * (1.0 / (1.0 - p)), 0.0)


class BulkMaskDropout(nn.Dropout):
    """nn.Dropout with the same p; on CPU in training it draws its mask with `keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bulk_dropout(x, self.p, self.training)


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA, except in CPU training with attention dropout: there torch would take its math path
    anyway, so this is that path with a bulk-drawn mask."""
    if not (module.training and dropout > 0.0 and query.device.type == "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (query.size(-1) ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = bulk_dropout(scores.softmax(dim=-1), dropout, True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def use_bulk_mask_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout for BulkMaskDropout (same p) and SDPA attention for `attention`.

    Weights, state_dict and saved configs are unchanged (the attention implementation is not
    serialised). Returns the number of dropout modules swapped.
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, BulkMaskDropout(child.p, child.inplace).train(child.training))
                swapped += 1
    config = getattr(model, "config", None)
    if config is not None and config._attn_implementation == "sdpa":
        config._attn_implementation = ATTENTION
    return swapped

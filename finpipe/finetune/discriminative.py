"""Discriminative learning rates and gradual unfreezing (ULMFiT / FinBERT style).

The Trainer's optimizer treats every parameter alike; these give the head its own learning
rate, shrink the encoder's by `layer_decay` per layer below the top, and unfreeze the encoder
one layer at a time from the top.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import TrainerCallback

log = logging.getLogger(__name__)

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def layer_of(name: str, num_layers: int) -> int | None:
    """Depth of an encoder parameter: 0 = embeddings, i + 1 = encoder layer i, num_layers + 1 =
    the pooler; None = not part of the encoder (the task head)."""
    if not name.startswith("bert."):
        return None
    if name.startswith("bert.embeddings."):
        return 0
    if name.startswith("bert.encoder.layer."):
        return int(name.split(".")[3]) + 1
    return num_layers + 1  # pooler: trained with the top layer


def param_groups(
    model: torch.nn.Module, *, learning_rate: float, head_learning_rate: float, layer_decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """One group per (depth, decay/no-decay): encoder depth d gets learning_rate *
    layer_decay ** (top - d) with the top layer at learning_rate; the head gets its own rate."""
    num_layers = model.config.num_hidden_layers
    top = num_layers + 1
    groups: dict[tuple[int | None, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        depth = layer_of(name, num_layers)
        decay = not name.endswith(_NO_DECAY)
        if depth is None:
            lr = head_learning_rate
        else:
            lr = learning_rate * layer_decay ** max(top - 1 - depth, 0)  # pooler and top layer share lr
        group = groups.setdefault(
            (depth, decay), {"params": [], "lr": lr, "weight_decay": weight_decay if decay else 0.0, "depth": depth}
        )
        group["params"].append(param)
    return list(groups.values())


class GradualUnfreezing(TrainerCallback):
    """Start with the encoder frozen (head and pooler train); every `every` optimizer steps one
    more encoder layer, from the top, joins; the embeddings come last. The schedule is a pure
    function of the step, so a resumed run freezes exactly what the interrupted one did."""

    def __init__(self, model: torch.nn.Module, every: int) -> None:
        self.model = model
        self.every = every
        self.num_layers = model.config.num_hidden_layers
        self._depth = None

    def trainable_from(self, step: int) -> int:
        """Lowest encoder depth that trains at this step (num_layers + 1: only the pooler)."""
        return max(self.num_layers + 1 - step // self.every, 0)

    def apply(self, step: int) -> None:
        lowest = self.trainable_from(step)
        if lowest == self._depth:
            return
        for name, param in self.model.named_parameters():
            depth = layer_of(name, self.num_layers)
            param.requires_grad_(depth is None or depth >= lowest)
        self._depth = lowest
        log.info("gradual unfreezing: step %d, encoder trains from depth %d (0 = embeddings)", step, lowest)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.apply(state.global_step)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.apply(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for param in self.model.parameters():
            param.requires_grad_(True)

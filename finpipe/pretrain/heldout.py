"""Held-out MLM loss, perplexity, masked-token accuracy and NSP accuracy."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


@torch.no_grad()
def heldout_metrics(model: Any, dataset: Any, collator: Any, batch_size: int, bf16: bool) -> dict[str, float]:
    """Score pre-masked examples; sums over masked tokens, so batch size does not matter."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = correct = n_masked = nsp_correct = n_pairs = 0.0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch)
        labels = batch["labels"][batch["labels"] != -100]
        logits = out.mlm_logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        n_masked += labels.numel()
        if "next_sentence_label" in batch:
            nsp_correct += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
            n_pairs += batch["next_sentence_label"].numel()
    model.train(was_training)
    mlm_loss = loss_sum / max(n_masked, 1)
    metrics = {
        "mlm_loss": round(mlm_loss, 5),
        "perplexity": round(math.exp(min(mlm_loss, 50.0)), 4),
        "masked_accuracy": round(correct / max(n_masked, 1), 5),
        "masked_tokens": int(n_masked),
    }
    if n_pairs:
        metrics["nsp_accuracy"] = round(nsp_correct / n_pairs, 5)
    return metrics

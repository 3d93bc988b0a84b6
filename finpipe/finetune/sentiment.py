"""The sentiment model: BertModel + a head of our own, and the code that feeds and reads it.

One head serves up to two outputs: classes (softmax, or CORAL cumulative logits for ordered
classes, so "mildly positive" sits between neutral and strongly positive) and a score in the
dataset's range. Everything the head needs (labels, target, pooling, class weights, score
range) lives in config.json under `finpipe_sentiment`, so `SentimentModel.from_pretrained(dir)`
is the one call that reloads a fine-tuned model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, BertPreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from finpipe.buckets import bucket_width

SPEC_KEY = "finpipe_sentiment"


@dataclass
class SentimentOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # classes: K logits; ordinal: K - 1 cumulative logits
    score: torch.Tensor | None = None


def make_spec(
    *,
    task: str,
    labels: Sequence[str],
    target: str,
    has_score: bool,
    score_range: Sequence[float],
    head: dict[str, Any],
    loss: str = "cross_entropy",
    label_smoothing: float = 0.0,
    score_loss_weight: float = 0.0,
    class_weights: Sequence[float] | None = None,
) -> dict[str, Any]:
    return {
        "task": task,
        "labels": list(labels),
        "target": target,
        "score": has_score,
        "score_range": [float(score_range[0]), float(score_range[1])],
        "head": dict(head),
        "loss": loss,
        "label_smoothing": label_smoothing,
        "score_loss_weight": score_loss_weight,
        "class_weights": list(class_weights) if class_weights is not None else None,
    }


class Coral(nn.Module):
    """CORAL (Cao et al. 2020): one shared weight vector and K - 1 ordered biases; logit k
    scores P(y > k). Sharing the weights keeps the cumulative probabilities rank-consistent."""

    def __init__(self, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_classes - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.bias


class SentimentModel(BertPreTrainedModel):
    accepts_loss_kwargs = False  # returns a micro-batch mean: see MaskedOnlyBertForPreTraining

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        spec = getattr(config, SPEC_KEY, None)
        if not spec:
            raise ValueError(f"config has no {SPEC_KEY}: not a finpipe sentiment model")
        self.spec = spec
        head = spec["head"]
        self.pooling = head["pooling"]
        self.bert = BertModel(config, add_pooling_layer=self.pooling == "cls")
        width = config.hidden_size
        layers: list[nn.Module] = [nn.Dropout(head["dropout"])]
        if head["hidden_size"]:
            layers += [nn.Linear(width, head["hidden_size"]), nn.GELU(), nn.Dropout(head["dropout"])]
            width = head["hidden_size"]
        self.head = nn.Sequential(*layers)
        k = len(spec["labels"])
        self.classes = None
        if spec["target"] == "classes":
            self.classes = nn.Linear(width, k)
        elif spec["target"] == "ordinal":
            self.classes = Coral(width, k)
        self.scorer = nn.Linear(width, 1) if spec["target"] == "score" or spec["score_loss_weight"] > 0 else None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Coral):
            nn.init.zeros_(module.bias)

    def pool(self, hidden: torch.Tensor, pooled: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return pooled
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        lo, hi = self.spec["score_range"]
        return lo + (hi - lo) * (torch.tanh(raw) + 1) / 2

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
        **_: Any,
    ) -> SentimentOutput:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        x = self.head(self.pool(out.last_hidden_state, out.pooler_output, attention_mask))
        logits = self.classes(x).float() if self.classes is not None else None
        score = self.to_score(self.scorer(x).float().squeeze(-1)) if self.scorer is not None else None
        loss = None
        if labels is not None and logits is not None:
            loss = self.class_loss(logits, labels)
        if scores is not None and score is not None:
            known = ~torch.isnan(scores)
            if known.any():
                score_loss = F.mse_loss(score[known], scores[known].float())
                weight = 1.0 if logits is None else self.spec["score_loss_weight"]
                loss = weight * score_loss if loss is None else loss + weight * score_loss
        return SentimentOutput(loss=loss, logits=logits, score=score)

    def class_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.spec["target"] == "ordinal":
            # CORAL's loss per example is the sum over the K - 1 thresholds (Cao et al.): a mean
            # over thresholds would make it (K - 1)x smaller than cross-entropy, and the score
            # term (x score_loss_weight) that much heavier than the param says
            levels = torch.arange(logits.shape[-1], device=labels.device)
            per_threshold = F.binary_cross_entropy_with_logits(logits, (labels.unsqueeze(-1) > levels).float(), reduction="none")
            return per_threshold.sum(-1).mean()
        # from the spec on every call: a non-persistent buffer is left uninitialised when
        # from_pretrained builds the model on the meta device (transformers 5)
        weights = self.spec.get("class_weights") if self.spec["loss"] == "weighted_cross_entropy" else None
        weight = logits.new_tensor(weights) if weights else None
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.spec["label_smoothing"])


def init_thresholds(model: SentimentModel, labels: Sequence[int]) -> None:
    """Start CORAL's biases at the training set's log-odds of P(y > k). From zero, Adam moves a
    bias by about one learning rate per step, far too slowly to spread thresholds that sit
    several units apart; from the prior, training only has to learn the text's shift."""
    if not isinstance(model.classes, Coral):
        return
    k = model.classes.bias.numel() + 1
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=k).astype(float) + 0.5  # smoothed
    above = 1 - np.cumsum(counts)[:-1] / counts.sum()
    with torch.no_grad():
        model.classes.bias.copy_(torch.tensor(np.log(above / (1 - above)), dtype=model.classes.bias.dtype))


def cumulative_above(logits: np.ndarray) -> np.ndarray:
    """CORAL's P(y > k), made non-increasing in k: with shared weights the raw sigmoids are
    rank-consistent only while the biases stay ordered, which training does not guarantee."""
    above = 1 / (1 + np.exp(-logits))
    return np.minimum.accumulate(above, axis=-1)


def class_probabilities(logits: np.ndarray, target: str) -> np.ndarray:
    """Class probabilities from either head: softmax, or differences of CORAL's (monotone)
    cumulative probabilities P(y > k), so no class gets a negative probability."""
    if target == "ordinal":
        above = cumulative_above(logits)
        cum = np.concatenate([np.ones((len(above), 1)), above, np.zeros((len(above), 1))], axis=1)
        return cum[:, :-1] - cum[:, 1:]  # telescopes: sums to 1 exactly
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def predicted_class(logits: np.ndarray, target: str) -> np.ndarray:
    """Softmax: the most probable class. CORAL: the median of the reported distribution, i.e.
    the number of thresholds whose monotone P(y > k) exceeds 1/2 (Cao et al.'s rule, read
    from the same probabilities `class_probabilities` reports, so label and distribution
    always agree)."""
    if target == "ordinal":
        return (cumulative_above(logits) > 0.5).sum(-1)
    return logits.argmax(-1)


def inverse_frequency_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """n / (k * count): mean weight 1 over the training rows; a class with no rows gets 1."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes)
    n = counts.sum()
    return [float(n / (num_classes * c)) if c else 1.0 for c in counts]


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> tuple[dict[str, list[Any]], int]:
    """Token ids without padding (the collator pads per batch); also how many texts were cut."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    full = tokenizer(list(texts), truncation=False, add_special_tokens=True)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    enc["length"] = [len(ids) for ids in enc["input_ids"]]
    return enc, truncated


class SentimentCollator:
    """Pads a batch to its longest member, rounded up to `pad_to_multiple_of` (at most
    `max_length`: finpipe.buckets.bucket_width); labels as int64, scores as float (NaN = unknown)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None, max_length: int | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in rows[0]]
        width = bucket_width(max(len(r["input_ids"]) for r in rows), self.pad_to_multiple_of, self.max_length)
        batch = self.tokenizer.pad(
            [{k: r[k] for k in keys} for r in rows], padding="max_length", max_length=width, return_tensors="pt"
        )
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        if "scores" in rows[0]:
            batch["scores"] = torch.tensor([r["scores"] for r in rows], dtype=torch.float)
        return dict(batch)


@torch.no_grad()
def predict(
    model: SentimentModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    bf16: bool = False,
    progress: bool = False,
    pad_to_multiple_of: int | None = None,
) -> dict[str, np.ndarray]:
    """Batched inference, shortest texts together (little padding); results in input order:
    `probs` (n, K) and `label` (n,) when the head has classes, `score` (n,) when it has one.
    `pad_to_multiple_of`: length buckets (the stage's dev scoring passes its own on a GPU)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    enc, _ = encode(tokenizer, texts, max_length)
    order = np.argsort(enc["length"], kind="stable")
    collate = SentimentCollator(tokenizer, pad_to_multiple_of, max_length)
    logits_out: list[np.ndarray] = []
    scores_out: list[np.ndarray] = []
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(len(order) / batch_size), unit="batch")
    for start in batches:
        idx = order[start : start + batch_size]
        batch = collate([{k: enc[k][i] for k in enc if k != "length"} for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch)
        if out.logits is not None:
            logits_out.append(out.logits.float().cpu().numpy())
        if out.score is not None:
            scores_out.append(out.score.float().cpu().numpy())
    model.train(was_training)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    result: dict[str, np.ndarray] = {}
    target = model.spec["target"]
    if logits_out:
        logits = np.concatenate(logits_out)[inverse]
        result["logits"] = logits
        result["probs"] = class_probabilities(logits, target)
        result["label"] = predicted_class(logits, target)
    if scores_out:
        result["score"] = np.concatenate(scores_out)[inverse]
    return result

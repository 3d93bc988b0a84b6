"""Stage `tapt`: task-adaptive pretraining (Gururangan et al. 2020, "Don't Stop Pretraining").

Masked-LM on one fine-tuning task's own train-split texts, starting from models/base (the
fine-tuning variant `base-tapt`) or models/adapted (`adapted-tapt`: domain-, then task-adaptive).
Only train-split texts are trained on: the task's dev texts are the held-out set of the
before/after metrics, and its test texts are never read. Each text is one example (a headline
or a sentence), masked afresh every epoch by default (tapt.data.masking: dynamic).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from transformers import AutoConfig

from finpipe.config import Pretrain, PretrainModel, Tapt
from finpipe.errors import UserError
from finpipe.fingerprint import fingerprint
from finpipe.pretrain.adapt import Outputs, adapt

log = logging.getLogger(__name__)

Kind = Literal["sentiment", "ner"]


def task_texts(dataset_file: Path, kind: Kind) -> dict[str, list[str]]:
    """The texts of a clean labelled dataset by split (an NER sentence: its tokens joined)."""
    column = "tokens" if kind == "ner" else "text"
    table = pq.read_table(dataset_file, columns=[column, "split"])
    out: dict[str, list[str]] = {}
    for value, split in zip(table[column].to_pylist(), table["split"].to_pylist(), strict=True):
        out.setdefault(split, []).append(" ".join(value) if kind == "ner" else value)
    return out


def pretrain_config(cfg: Tapt, start_model: Path) -> Pretrain:
    """The continued-pretraining settings of a TAPT run: its own data/train sections, the
    starting encoder a directory (models/<start>), never a grown vocabulary."""
    model = PretrainModel(
        base=str(start_model),
        attn_implementation=cfg.model.attn_implementation,
        head_warmup_steps=cfg.model.head_warmup_steps,
        before_heads=cfg.model.before_heads,
    )
    return Pretrain(model=model, data=cfg.data, train=cfg.train)


def run(cfg: Tapt, kind: Kind, dataset_file: Path, start_model: Path, out: Outputs) -> dict[str, Any]:
    if not dataset_file.is_file():
        raise UserError(f"{dataset_file}: clean dataset not found; run the validate@{kind} stage first")
    if not (start_model / "config.json").is_file():
        raise UserError(f"{start_model}: no model here; run the stage that writes it (pretrain or base-model) first")
    texts = task_texts(dataset_file, kind)
    train, dev = texts.get("train", []), texts.get("dev", [])
    if not train:
        raise UserError(f"{dataset_file}: no train-split texts to pretrain on")
    if not dev:
        raise UserError(f"{dataset_file}: no dev-split texts for the held-out metrics")
    limit = AutoConfig.from_pretrained(start_model).max_position_embeddings
    if cfg.data.max_seq_length > limit:
        raise UserError(f"tapt.data.max_seq_length: {cfg.data.max_seq_length} is above the model's limit of {limit} positions")
    log.info("TAPT on %s: %d train texts (held out: %d dev texts), from %s", dataset_file.name, len(train), len(dev), start_model)
    # one document per text: without NSP each becomes one example (truncated to max_seq_length)
    docs = [[t] for t in train], [[t] for t in dev]
    data_fp = fingerprint(fingerprint(dataset_file), kind, "train")
    return adapt(pretrain_config(cfg, start_model), docs, data_fp, out)

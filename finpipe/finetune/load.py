"""Reload a fine-tuned model directory in one call, whatever the task; anything else is a
clear error (a pretrain or base-model output has no head to predict with)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, BertForTokenClassification

from finpipe.errors import UserError
from finpipe.finetune import ner as ner_mod
from finpipe.finetune import sentiment as sm


def model_kind(path: Path) -> str:
    config = path / "config.json"
    if not path.is_dir():
        raise UserError(f"--model {path}: no such directory")
    if not config.is_file():
        raise UserError(f"--model {path}: not a model directory (no config.json)")
    data = json.loads(config.read_text(encoding="utf-8"))
    if sm.SPEC_KEY in data:
        return "sentiment"
    if ner_mod.SPEC_KEY in data:
        return "ner"
    raise UserError(
        f"--model {path}: not a fine-tuned finpipe model (config.json has neither {sm.SPEC_KEY} nor {ner_mod.SPEC_KEY}); "
        f"fine-tune it first (stages finetune-sentiment / finetune-ner)"
    )


def load(path: Path, expected: str | None = None) -> tuple[str, Any, Any]:
    """(kind, model, tokenizer) of a fine-tuned model directory, in eval mode."""
    kind = model_kind(path)
    if expected is not None and kind != expected:
        raise UserError(f"--model {path}: a fine-tuned {kind} model, but {expected} was asked for")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if kind == "sentiment":
        model = sm.SentimentModel.from_pretrained(path, attn_implementation="sdpa")
    else:
        model = BertForTokenClassification.from_pretrained(path, attn_implementation="sdpa")
    model.eval()
    return kind, model, tokenizer

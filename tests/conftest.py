"""Shared fixtures. Offline by design: no hub look-ups, no telemetry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("FINPIPE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA} (set FINPIPE_DATA)")
    return REAL_DATA


def tiny_bert_config(tokenizer, **overrides):
    """The 2-layer, hidden-32 BERT shape of the stage tests, sized to `tokenizer`."""
    from transformers import BertConfig

    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    shape = {**shape, "max_position_embeddings": 128, **overrides}
    return BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **shape)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece vocabulary trained on the embedded data: the
    starting checkpoint of every fine-tuning stage test."""
    import torch
    from transformers import BertModel

    from finpipe.pretrain.base import train_wordpiece

    texts = []
    for path in (REPO / "data/embedded").rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".txt", ".csv", ".conll"):
            texts += path.read_text(encoding="utf-8").splitlines()
    tokenizer = train_wordpiece(texts, vocab_size=1500, lowercase=False)
    torch.manual_seed(0)
    config = tiny_bert_config(tokenizer)
    out = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def clean_labelled(tmp_path_factory) -> Path:
    """The embedded sentiment and NER sets, ingested and validated: <dir>/sentiment, <dir>/ner."""
    from finpipe.config import load_params
    from tasks import ingest, validate

    work = tmp_path_factory.mktemp("clean")
    params = load_params(REPO / "params.yaml")
    ingest.run_sentiment(params.ingest.sentiment, REPO / "data/embedded/sentiment", work / "in-sentiment")
    ingest.run_ner(params.ingest.ner, REPO / "data/embedded/ner", work / "in-ner")
    validate.run_sentiment(params.validate, work / "in-sentiment", work / "sentiment", work / "q1", work / "r")
    validate.run_ner(params.validate, work / "in-ner", work / "ner", work / "q2", work / "r")
    return work

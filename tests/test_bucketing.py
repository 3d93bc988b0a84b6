"""Length buckets (issue #13): on a GPU every new batch shape costs an attention plan, so the
stages pad batches up to a multiple of 64 there (`pad_to_multiple_of: auto`), never past
max_seq_length; on a CPU they keep their old padding (8 for pretraining, the longest row for
fine-tuning)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finpipe.buckets import GPU_PAD_MULTIPLE, bucket_width, pad_multiple
from finpipe.config import NerTrain, Pretrain, PretrainData, PretrainTrain, SentimentTrain, load_params
from finpipe.errors import UserError
from finpipe.finetune.ner import NerCollator
from finpipe.finetune.sentiment import SentimentCollator
from finpipe.pretrain.adapt import collator_for
from finpipe.pretrain.base import train_wordpiece


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Norvik Holdings reported quarterly earnings growth", "Castellan Bank announced restructuring charges"] * 50
    return train_wordpiece(texts, 300, True)


@pytest.fixture
def on_gpu(monkeypatch):
    """torch.cuda.is_available() as on a GPU machine (only the padding decision reads it here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def _rows(*lengths: int) -> list[dict]:
    return [{"input_ids": [2] + [7] * (n - 2) + [3], "token_type_ids": [0] * n, "attention_mask": [1] * n} for n in lengths]


def test_bucket_width_rounds_up_and_stops_at_the_limit():
    assert bucket_width(37, None) == 37
    assert bucket_width(37, 8) == 40
    assert bucket_width(37, 64) == 64
    assert bucket_width(65, 64) == 128
    assert bucket_width(64, 64) == 64
    assert bucket_width(65, 64, limit=100) == 100  # a limit that is no multiple caps the bucket
    assert bucket_width(37, 64, limit=100) == 64
    assert bucket_width(120, 64, limit=100) == 120  # a longer row is never cut


def test_pad_multiple_auto_is_64_on_a_gpu_and_the_cpu_default_elsewhere(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pad_multiple("auto", 8) == 8
    assert pad_multiple("auto", None) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert GPU_PAD_MULTIPLE == 64
    assert pad_multiple("auto", 8) == 64
    assert pad_multiple("auto", None) == 64
    assert pad_multiple(0, 8) is None  # 0: the longest row, also on a GPU
    assert pad_multiple(16, None) == 16


def test_the_knob_is_in_every_training_section_and_validated(repo):
    params = load_params(repo / "params.yaml")
    for train in (params.pretrain.train, params.tapt.train, params.finetune.sentiment.train, params.finetune.ner.train):
        assert train.pad_to_multiple_of == "auto"
    assert SentimentTrain(pad_to_multiple_of=0).pad_to_multiple_of == 0
    assert NerTrain(pad_to_multiple_of=32).pad_to_multiple_of == 32
    with pytest.raises((ValueError, UserError)):
        PretrainTrain(pad_to_multiple_of=-8)
    with pytest.raises((ValueError, UserError)):
        PretrainTrain(pad_to_multiple_of="big")


def test_pretrain_collator_buckets_on_a_gpu_and_keeps_8_on_a_cpu(tokenizer, monkeypatch):
    cfg = Pretrain(data=PretrainData(max_seq_length=128), train=PretrainTrain())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert collator_for(cfg, tokenizer)(_rows(10, 37))["input_ids"].shape == (2, 40)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = collator_for(cfg, tokenizer)
    assert gpu(_rows(10, 37))["input_ids"].shape == (2, 64)
    assert gpu(_rows(10, 65))["labels"].shape == (2, 128)
    short = Pretrain(data=PretrainData(max_seq_length=100), train=PretrainTrain())
    assert collator_for(short, tokenizer)(_rows(99))["attention_mask"].shape == (1, 100)  # never past the limit
    off = Pretrain(data=PretrainData(max_seq_length=128), train=PretrainTrain(pad_to_multiple_of=0))
    assert collator_for(off, tokenizer)(_rows(10, 37))["input_ids"].shape == (2, 37)


def test_sentiment_collator_buckets_and_keeps_the_rows(tokenizer):
    rows = [{**r, "labels": i} for i, r in enumerate(_rows(5, 9))]
    plain = SentimentCollator(tokenizer)(rows)
    assert plain["input_ids"].shape == (2, 9)
    batch = SentimentCollator(tokenizer, 64, 128)(rows)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 64)
    assert torch.equal(batch["input_ids"][:, :9], plain["input_ids"])
    assert batch["attention_mask"].sum().item() == 14 and (batch["input_ids"][:, 9:] == tokenizer.pad_token_id).all()
    assert SentimentCollator(tokenizer, 64, 48)(rows)["input_ids"].shape == (2, 48)


def test_ner_collator_buckets():
    rows = [{"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1], "labels": [-100, 1, -100]}]
    assert NerCollator(0)(rows)["input_ids"].shape == (1, 3)
    batch = NerCollator(0, 64, 128)(rows)
    assert batch["labels"].shape == (1, 64) and (batch["labels"][0, 3:] == -100).all()
    assert NerCollator(0, 64, 40)(rows)["input_ids"].shape == (1, 40)


def test_finetune_stages_pass_the_knob_to_their_collators(tokenizer, on_gpu):
    from tasks.finetune_ner import NerPlugin
    from tasks.finetune_sentiment import SentimentPlugin

    plugin = SentimentPlugin(
        task=None, train_cfg=SentimentTrain(max_seq_length=96), labels=[], ordered=False, spec={},
        train_y=np.array([]), tokenizer=tokenizer,
    )  # fmt: skip
    collator = plugin.collator()
    assert (collator.pad_to_multiple_of, collator.max_length) == (64, 96)
    ner = NerPlugin(name="n", task=None, section=None, train_cfg=NerTrain(pad_to_multiple_of=0), labels=[], tokenizer=tokenizer)
    assert ner.collator().pad_to_multiple_of is None  # 0: the longest window, also on a GPU
    ner = NerPlugin(name="n", task=None, section=None, train_cfg=NerTrain(), labels=[], tokenizer=tokenizer)
    assert (ner.collator().pad_to_multiple_of, ner.collator().max_length) == (64, 64)

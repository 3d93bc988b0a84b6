"""Bulk-drawn CPU dropout masks: the same dropout, seeded by torch, invisible outside training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForPreTraining

from finpipe.pretrain.dropout import ATTENTION, BulkMaskDropout, attention, bulk_dropout, keep_mask, use_bulk_mask_dropout
from finpipe.pretrain.model import MaskedOnlyBertForPreTraining


def test_keep_rate_and_scaling_match_the_dropout_probability() -> None:
    torch.manual_seed(0)
    for p in (0.1, 0.5, 0.9):
        kept = keep_mask(torch.Size([400, 1000]), p).float().mean().item()
        # 400k Bernoulli draws: the standard error is < 0.001
        assert kept == pytest.approx(1 - p, abs=0.004)
    x = torch.ones(1000, 1000)
    y = bulk_dropout(x, 0.1, True)
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / 0.9)]
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)  # expectation preserved


def test_masks_follow_torch_seed_and_differ_between_calls() -> None:
    torch.manual_seed(5)
    a, b = keep_mask(torch.Size([64, 64]), 0.3), keep_mask(torch.Size([64, 64]), 0.3)
    torch.manual_seed(5)
    assert torch.equal(keep_mask(torch.Size([64, 64]), 0.3), a)
    assert not torch.equal(a, b)


def test_gradient_is_the_mask_times_the_scale() -> None:
    x = torch.randn(32, 48, requires_grad=True)
    torch.manual_seed(3)
    y = bulk_dropout(x, 0.25, True)
    y.sum().backward()
    torch.manual_seed(3)
    keep = keep_mask(x.shape, 0.25)
    assert torch.allclose(x.grad, keep.float() / 0.75)
    assert torch.allclose(y, torch.where(keep, x / 0.75, 0.0))


def test_evaluation_p_zero_and_bf16_pass_through_as_torch_does() -> None:
    x = torch.randn(8, 8)
    assert torch.equal(bulk_dropout(x, 0.1, False), x)
    assert torch.equal(bulk_dropout(x, 0.0, True), x)
    y = bulk_dropout(x.bfloat16(), 0.1, True)
    assert y.dtype == torch.bfloat16
    module = BulkMaskDropout(0.2).eval()
    assert torch.equal(module(x), x)


def _qkv(mask_dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    if mask_dtype is None:
        return q, k, v, None
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    keep[1, ..., 3:] = False  # the second sequence has two padding positions
    mask = keep if mask_dtype == torch.bool else torch.zeros(2, 1, 5, 5).masked_fill(~keep, torch.finfo(torch.float32).min)
    return q, k, v, mask


@pytest.mark.parametrize("mask_dtype", [None, torch.bool, torch.float32])
def test_attention_is_sdpa_without_dropout_and_the_math_path_with_it(mask_dtype: torch.dtype | None) -> None:
    q, k, v, mask = _qkv(mask_dtype)
    module = nn.Module()
    module.is_causal = False  # as BertSelfAttention says; transformers' SDPA defaults to causal
    out, _ = attention(module.eval(), q, k, v, mask, dropout=0.0)  # BERT passes 0 outside training
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-6)

    module.train()
    torch.manual_seed(9)
    out, _ = attention(module, q, k, v, mask, dropout=0.5)
    torch.manual_seed(9)
    keep = keep_mask(torch.Size([2, 3, 5, 5]), 0.5)
    scores = q @ k.transpose(-1, -2) / 2.0
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.where(keep, scores.softmax(-1) / 0.5, 0.0)
    assert torch.allclose(out, (probs @ v).transpose(1, 2), atol=1e-6)


def _tiny(cls: type, attn: str = "sdpa") -> nn.Module:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, attn_implementation=attn
    )
    return cls(cfg)


def test_swapped_model_keeps_weights_eval_outputs_and_saved_config(tmp_path) -> None:
    model = _tiny(MaskedOnlyBertForPreTraining)
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 9, 3, 10, 3]])
    att = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    model.eval()  # the swapped modules must inherit it
    before = model(input_ids=ids, attention_mask=att).seq_relationship_logits
    keys = set(model.state_dict())

    swapped = use_bulk_mask_dropout(model)
    assert swapped == 2 * 3 + 1  # per layer: attention probs, attention output, FFN output; + embeddings
    assert not [m for m in model.modules() if type(m) is nn.Dropout]
    assert model.config._attn_implementation == ATTENTION
    assert set(model.state_dict()) == keys
    assert torch.allclose(model(input_ids=ids, attention_mask=att).seq_relationship_logits, before, atol=1e-6)

    model.train()
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    losses = []
    for _ in range(2):
        torch.manual_seed(4)
        losses.append(model(input_ids=ids, attention_mask=att, labels=labels).loss.item())
    assert losses[0] == losses[1]  # seeded by torch
    torch.manual_seed(5)
    assert model(input_ids=ids, attention_mask=att, labels=labels).loss.item() != losses[0]

    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    reloaded = BertForPreTraining.from_pretrained(tmp_path).eval()
    assert json.loads((tmp_path / "config.json").read_text())["hidden_dropout_prob"] == 0.1
    assert torch.allclose(reloaded(input_ids=ids, attention_mask=att).seq_relationship_logits, before, atol=1e-5)


def test_eager_attention_is_left_alone() -> None:
    model = _tiny(BertForPreTraining, attn="eager")
    use_bulk_mask_dropout(model)
    assert model.config._attn_implementation == "eager"

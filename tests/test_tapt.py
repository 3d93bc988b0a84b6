"""Task-adaptive pretraining and the continued-pretraining controls it shares with `pretrain`:
train-split texts only, dynamic masking (fresh masks per epoch, identical after a resume),
L2-SP towards the starting weights, and the fair "before" (heads trained for the run's budget).
All on the 2-layer test BERT (no pretraining heads, like models/base)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from transformers import BertModel, TrainerCallback

from finpipe.config import Tapt, parse
from finpipe.errors import UserError
from finpipe.pretrain import adapt as adapt_module
from finpipe.pretrain.adapt import Outputs, run_steps
from finpipe.pretrain.collator import PretrainCollator
from finpipe.training import L2SP
from tasks import tapt

HEADLINES = "sentiment/headlines.parquet"


def tiny_tapt(**train: Any) -> Tapt:
    return parse(
        Tapt,
        {
            "model": {"head_warmup_steps": 4},
            "data": {"max_seq_length": 32, "max_eval_examples": 64},
            "train": {
                "num_epochs": 2.0,
                "batch_size": 32,
                "save_steps": 10,
                "logging_steps": 5,
                "learning_rate": 1e-3,
                "bf16": False,
                **train,
            },
        },
    )


def _outputs(tmp: Path) -> Outputs:
    return Outputs(tmp / "model", tmp / "metrics.json", tmp / "live", tmp / "ckpt", tmp / "cache")


def _split_texts(path: Path, column: str = "text") -> dict[str, set[str]]:
    table = pq.read_table(path).to_pylist()
    out: dict[str, set[str]] = {}
    for row in table:
        text = " ".join(row[column]) if column == "tokens" else row[column]
        out.setdefault(row["split"], set()).add(text)
    return out


@pytest.mark.parametrize(("kind", "file", "column"), [("sentiment", HEADLINES, "text"), ("ner", "ner/news.parquet", "tokens")])
def test_tapt_trains_on_the_train_split_only(monkeypatch, tmp_path, tiny_bert, clean_labelled, kind, file, column):
    seen: dict[str, Any] = {}

    def spy(cfg: Any, docs: tuple[list[list[str]], list[list[str]]], data_fp: str, out: Outputs) -> dict[str, Any]:
        seen["train"], seen["heldout"], seen["base"] = docs[0], docs[1], cfg.model.base
        return {}

    monkeypatch.setattr(tapt, "adapt", spy)
    tapt.run(tiny_tapt(), kind, clean_labelled / file, tiny_bert, _outputs(tmp_path))
    splits = _split_texts(clean_labelled / file, column)
    trained = {s for doc in seen["train"] for s in doc}
    assert all(len(doc) == 1 for doc in seen["train"])  # one text, one example
    assert trained == splits["train"]
    assert not trained & (splits["dev"] | splits["test"])  # no dev or test text is trained on
    assert {s for doc in seen["heldout"] for s in doc} == splits["dev"]  # dev is only scored
    assert seen["base"] == str(tiny_bert)


def test_tapt_stage_writes_a_model_with_a_fair_before(tmp_path, tiny_bert, clean_labelled):
    cfg = tiny_tapt()
    metrics = tapt.run(cfg, "sentiment", clean_labelled / HEADLINES, tiny_bert, _outputs(tmp_path))
    train_texts = len(_split_texts(clean_labelled / HEADLINES)["train"])
    steps = run_steps(tapt.pretrain_config(cfg, tiny_bert), train_texts)
    assert metrics["train"]["steps"] == steps == 2 * -(-train_texts // 32)  # two epochs
    # the base's heads were trained on the frozen encoder for warm-up + the run's steps
    assert metrics["base"]["head_steps"] == 4 + steps and metrics["base"]["heads_warmed_up"]
    BertModel.from_pretrained(tmp_path / "model")  # fine-tuning loads it as any encoder
    assert (tmp_path / "model" / "tokenizer.json").is_file()

    warmup_only = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, before_heads="warmup"))
    cheap = tapt.run(warmup_only, "sentiment", clean_labelled / HEADLINES, tiny_bert, _outputs(tmp_path / "w"))
    assert cheap["base"]["head_steps"] == 4
    assert cheap["base"]["perplexity"] != metrics["base"]["perplexity"]
    assert cheap["adapted"] == metrics["adapted"]  # the "before" never touches the trained model


def test_tapt_refuses_a_missing_start_or_dataset(tmp_path, tiny_bert, clean_labelled):
    with pytest.raises(UserError, match="no model here"):
        tapt.run(tiny_tapt(), "sentiment", clean_labelled / HEADLINES, tmp_path / "nothing", _outputs(tmp_path))
    with pytest.raises(UserError, match="clean dataset not found"):
        tapt.run(tiny_tapt(), "sentiment", tmp_path / "none.parquet", tiny_bert, _outputs(tmp_path))


def _masks(collator: PretrainCollator, idx: int, ids: list[int]) -> torch.Tensor:
    batch = collator([{"input_ids": ids, "token_type_ids": [0] * len(ids), "idx": idx}])
    return batch["labels"][0]


def test_dynamic_masks_change_per_epoch_and_repeat_per_seed(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    ids = [tok.cls_token_id, *range(10, 70), tok.sep_token_id]
    static = PretrainCollator(tok, 0.3, seed=7, masking="static")
    dynamic = PretrainCollator(tok, 0.3, seed=7, masking="dynamic")
    assert torch.equal(_masks(static, 3, ids), _masks(dynamic, 3, ids))  # epoch 0: the same masks
    first = _masks(dynamic, 3, ids)
    dynamic.set_epoch(1)
    static.set_epoch(1)
    assert not torch.equal(_masks(dynamic, 3, ids), first)  # fresh masks in epoch 1
    assert torch.equal(_masks(static, 3, ids), first)  # static: the same all run
    again = PretrainCollator(tok, 0.3, seed=7, masking="dynamic")
    again.set_epoch(1)
    assert torch.equal(_masks(again, 3, ids), _masks(dynamic, 3, ids))  # seeded by (seed, epoch, example)


class _Recording(PretrainCollator):
    """Remembers the masked positions each example got in each epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record: dict[tuple[int, int], list[int]] = {}

    def __call__(self, examples: Any) -> dict[str, torch.Tensor]:
        batch = super().__call__(examples)
        for row, e in enumerate(examples):
            self.record[(self.epoch, e["idx"])] = (batch["labels"][row] != -100).nonzero().flatten().tolist()
        return batch


def test_training_draws_fresh_masks_each_epoch(monkeypatch, tmp_path, tiny_bert, clean_labelled):
    made: list[_Recording] = []

    def recording(cfg: Any, tokenizer: Any) -> _Recording:
        data = cfg.data
        made.append(_Recording(tokenizer, data.mlm_probability, data.whole_word_mask, seed=data.seed, masking=data.masking))
        return made[-1]

    monkeypatch.setattr(adapt_module, "collator_for", recording)
    cfg = tiny_tapt(num_epochs=2.0)
    tapt.run(cfg, "sentiment", clean_labelled / HEADLINES, tiny_bert, _outputs(tmp_path))
    record = made[0].record
    both = [i for (e, i) in record if e == 0 and (1, i) in record]
    assert len(both) > 100  # every example was seen in both epochs
    changed = sum(record[(0, i)] != record[(1, i)] for i in both)
    assert changed > 0.9 * len(both)


class _StopAt(TrainerCallback):
    """Interrupt the run right after the checkpoint of `step` is written (as a kill would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_a_run_resumed_in_its_second_epoch_equals_an_uninterrupted_one(monkeypatch, tmp_path, tiny_bert, clean_labelled):
    cfg = tiny_tapt(num_epochs=3.0)
    data = clean_labelled / HEADLINES
    whole = tapt.run(cfg, "sentiment", data, tiny_bert, _outputs(tmp_path / "whole"))
    per_epoch = whole["train"]["steps"] // 3
    stop = (per_epoch + per_epoch // 2) // 10 * 10  # a checkpoint in the middle of epoch 1
    assert per_epoch < stop < 2 * per_epoch

    real = adapt_module.LogAtCheckpoints
    monkeypatch.setattr(adapt_module, "LogAtCheckpoints", lambda: _StopAt(stop))
    with pytest.raises(KeyboardInterrupt):
        tapt.run(cfg, "sentiment", data, tiny_bert, _outputs(tmp_path / "cut"))
    monkeypatch.setattr(adapt_module, "LogAtCheckpoints", real)
    resumed = tapt.run(cfg, "sentiment", data, tiny_bert, _outputs(tmp_path / "cut"))
    assert resumed["this_run"]["resumed_from_step"] == stop
    for key in ("base", "adapted", "train"):
        assert resumed[key] == whole[key], key


def test_l2sp_penalty_and_its_pull_towards_the_start(tmp_path, tiny_bert, clean_labelled):
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    anchor = L2SP([("w", weight)], 0.5)
    with torch.no_grad():
        weight += torch.tensor([3.0, -4.0])
    assert anchor.distance().item() == pytest.approx(25.0)
    assert anchor.penalty().item() == pytest.approx(0.5 * 0.5 * 25.0)

    data = clean_labelled / HEADLINES
    loose = tapt.run(tiny_tapt(l2sp=1e-9), "sentiment", data, tiny_bert, _outputs(tmp_path / "loose"))
    held = tapt.run(tiny_tapt(l2sp=10.0), "sentiment", data, tiny_bert, _outputs(tmp_path / "held"))
    assert held["train"]["l2sp_distance"] < 0.2 * loose["train"]["l2sp_distance"]
    off = tapt.run(tiny_tapt(l2sp=0.0), "sentiment", data, tiny_bert, _outputs(tmp_path / "off"))
    assert off["train"]["l2sp_distance"] is None

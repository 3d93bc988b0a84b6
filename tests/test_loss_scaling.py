"""The loss and gradient the shared Trainer optimises do not depend on how a batch is split:
one step of batch 16 equals batch 8 x gradient_accumulation_steps 2, for every model we train.

Recent HF Trainers treat a model whose forward takes **kwargs as one that divides its loss by
`num_items_in_batch` itself; they then skip the division by the accumulation steps (and
multiply by the world size). Our models return micro-batch means, so without the fix in
`finpipe.training.Trainer` the accumulated gradient and the logged loss come out 2x here.
The 2-process (gloo) counterpart is tests/test_pretrain_stage.py::test_two_processes_gloo.
"""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import BertConfig, BertForTokenClassification, TrainerCallback

from finpipe.config import PretrainTrain, parse
from finpipe.finetune.sentiment import SentimentModel, make_spec
from finpipe.pretrain.model import MaskedOnlyBertForPreTraining
from finpipe.training import Trainer, training_arguments

VOCAB, SEQ, N = 100, 12, 16


def _config(**extra) -> BertConfig:
    # no dropout: the two runs must compute exactly the same function
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **extra,
    )


def _pretrain_rows() -> dict[str, list]:
    """Pre-masked rows (the collator passes labels through), three masked tokens in each: the
    mean over 16 rows is then exactly the mean of the two 8-row means."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (N, SEQ), generator=g)
    labels = torch.full_like(ids, -100)
    for i in range(N):
        pos = torch.randperm(SEQ - 2, generator=g)[:3] + 1
        labels[i, pos] = ids[i, pos]
        ids[i, pos] = 4  # [MASK]
    return {
        "input_ids": ids.tolist(),
        "token_type_ids": [[0] * SEQ] * N,
        "labels": labels.tolist(),
        "next_sentence_label": [i % 2 for i in range(N)],
        "length": [SEQ] * N,
    }


class _Tok:
    pad_token_id, mask_token_id, all_special_ids = 0, 4, [0, 1, 2, 3, 4]

    def __len__(self) -> int:
        return VOCAB

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


class GradsBeforeStep(TrainerCallback):
    """The accumulated gradient as the optimizer receives it (clipping is off in these runs)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _one_step(make_model, rows, collator, batch_size: int, accumulation: int, tmp_path, labels: list[str]):
    torch.manual_seed(0)
    model = make_model()
    cfg = parse(PretrainTrain, {"batch_size": batch_size, "gradient_accumulation_steps": accumulation, "bf16": False})
    out = tmp_path / f"run-{batch_size}x{accumulation}"
    args = training_arguments(cfg, out, label_names=labels, bf16=False, max_steps=1, save=False)
    args.max_grad_norm = 0.0  # the raw gradient: clipping would hide a scale error
    args.logging_steps = 1
    grads = GradsBeforeStep()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_dict(rows),
        data_collator=collator,
        callbacks=[grads],
    )
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return grads.grads, loss, model


def _direct(make_model, rows, collator) -> tuple[dict[str, torch.Tensor], float]:
    """The reference: the mean loss of all 16 rows in one forward pass, by hand."""
    torch.manual_seed(0)
    model = make_model()
    batch = collator([{k: rows[k][i] for k in rows if k != "length"} for i in range(N)])
    loss = model(**batch).loss
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}, float(loss.detach())


def _assert_same(grads_a, grads_b, rtol=1e-4):
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")


def _pretrain_case():
    from finpipe.pretrain.collator import PretrainCollator

    return (
        lambda: MaskedOnlyBertForPreTraining(_config()),
        _pretrain_rows(),
        PretrainCollator(_Tok(), pad_to_multiple_of=None),
        ["labels", "next_sentence_label"],
    )


def _sentiment_case(target: str):
    from finpipe.finetune.sentiment import SentimentCollator

    def make():
        config = _config()
        config.finpipe_sentiment = make_spec(
            task="t",
            labels=["neg", "neu", "pos"],
            target=target,
            has_score=True,
            score_range=[-1, 1],
            head={"pooling": "mean", "dropout": 0.0, "hidden_size": 0},
            score_loss_weight=0.5,
        )
        return SentimentModel(config)

    g = torch.Generator().manual_seed(1)
    rows = {
        "input_ids": torch.randint(5, VOCAB, (N, SEQ), generator=g).tolist(),
        "attention_mask": [[1] * SEQ] * N,
        "labels": [i % 3 for i in range(N)],
        "scores": torch.rand(N, generator=g).mul(2).sub(1).tolist(),
        "length": [SEQ] * N,
    }

    class PadTok:
        def pad(self, rows, return_tensors, **_):  # rows of equal length: no padding to do
            return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}

    return make, rows, SentimentCollator(PadTok()), ["labels", "scores"]


def _ner_case():
    from transformers import DataCollatorForTokenClassification

    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 3, (N, SEQ), generator=g)
    labels[:, 0] = -100  # one ignored position per row: the count per row stays equal
    rows = {
        "input_ids": torch.randint(5, VOCAB, (N, SEQ), generator=g).tolist(),
        "attention_mask": [[1] * SEQ] * N,
        "labels": labels.tolist(),
        "length": [SEQ] * N,
    }

    def collate(batch):
        return {k: torch.tensor([r[k] for r in batch]) for k in batch[0]}

    assert DataCollatorForTokenClassification  # the stage pads with it; equal lengths need no padding here
    return (lambda: BertForTokenClassification(_config(num_labels=3))), rows, collate, ["labels"]


CASES = {
    "pretrain": _pretrain_case,
    "sentiment-ordinal+score": lambda: _sentiment_case("ordinal"),
    "sentiment-classes+score": lambda: _sentiment_case("classes"),
    "ner": _ner_case,
}


@pytest.mark.parametrize("case", list(CASES))
def test_accumulated_step_equals_the_big_batch(case, tmp_path):
    make, rows, collator, labels = CASES[case]()
    ref_grads, ref_loss = _direct(make, rows, collator)
    big_grads, big_loss, _ = _one_step(make, rows, collator, 16, 1, tmp_path, labels)
    acc_grads, acc_loss, _ = _one_step(make, rows, collator, 8, 2, tmp_path, labels)
    _assert_same(big_grads, ref_grads)
    _assert_same(acc_grads, ref_grads)
    assert big_loss == pytest.approx(ref_loss, rel=1e-4)
    assert acc_loss == pytest.approx(ref_loss, rel=1e-4)


def test_our_models_declare_mean_losses():
    """For anyone who trains them with the stock HF Trainer: they return means, not sums over
    `num_items_in_batch`."""
    assert MaskedOnlyBertForPreTraining.accepts_loss_kwargs is False
    assert SentimentModel.accepts_loss_kwargs is False


def test_processes_and_accumulation_see_the_batches_of_one_process(monkeypatch, tmp_path):
    """The length-grouped order is built for the global batch: 8 per process on 2 processes
    (accelerate hands consecutive batches to consecutive ranks) and 8 x 2 accumulated read the
    same 16 examples per step as 16 on one process. Built per process batch, the mega-batches
    differ in size once the corpus is large (>= 3200 examples here)."""
    from transformers import TrainingArguments

    lengths = torch.randint(8, 128, (5000,), generator=torch.Generator().manual_seed(3)).tolist()
    ds = datasets.Dataset.from_dict({"length": lengths})

    def order(batch_size: int, accumulation: int, world: int) -> list[int]:
        monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: world))
        cfg = parse(PretrainTrain, {"batch_size": batch_size, "gradient_accumulation_steps": accumulation, "bf16": False})
        args = training_arguments(cfg, tmp_path, label_names=["labels"], bf16=False)
        trainer = Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=ds)
        return list(trainer._get_train_sampler(ds))

    one = order(16, 1, 1)
    assert order(8, 1, 2) == one
    assert order(8, 2, 1) == one
    assert order(4, 2, 2) == one

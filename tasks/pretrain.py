"""Stage `pretrain`: domain-adaptive pretraining (MLM + NSP) of any BERT on the clean corpus.

Reads data/work/clean/corpus/corpus.parquet (train documents for training, dev documents for
evaluation), trains with the HF Trainer (fused AdamW, bf16 autocast where supported, length-
grouped dynamic padding, SDPA, masked-only MLM decoding), checkpoints every `save_steps` into
a directory kept across runs and resumes from it, and writes the adapted model atomically.
Evaluation on held-out documents scores the base model before and the adapted model after on
the same pre-masked examples.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoConfig, set_seed

from finpipe.atomic import atomic_dir, write_json
from finpipe.config import Pretrain
from finpipe.errors import UserError
from finpipe.fingerprint import fingerprint
from finpipe.pretrain.base import extend_vocab, load_base, resolve
from finpipe.pretrain.collator import PretrainCollator
from finpipe.pretrain.data import cached_examples, read_documents, tokenizer_fingerprint
from finpipe.pretrain.dropout import use_bulk_mask_dropout
from finpipe.pretrain.heldout import heldout_metrics
from finpipe.run_summary import WALL_CLOCK, LogAtCheckpoints, checkpoint_progress, mean_training_loss
from finpipe.training import Trainer, dvclive_callback, is_main_process, resume_point, training_arguments, use_bf16

log = logging.getLogger(__name__)


def check(cfg: Pretrain, train_docs: list[list[str]], dev_docs: list[list[str]], corpus: Path) -> None:
    """Every user mistake we can see before loading weights or training."""
    if not train_docs:
        raise UserError(f"{corpus}: no train documents in the corpus")
    if not dev_docs:
        raise UserError(f"{corpus}: no dev documents to evaluate on; raise ingest.corpus.dev_fraction")
    if cfg.data.nsp:
        if sum(len(d) > 1 for d in train_docs) == 0:
            raise UserError(
                f"{corpus}: no document has more than one sentence, so NSP has no true continuations; "
                f"set pretrain.data.nsp: false for MLM only"
            )
        if len(train_docs) < 2:
            raise UserError(f"{corpus}: NSP needs at least two train documents for NotNext pairs")
    if cfg.model.base == "scratch":
        limit = cfg.model.max_position_embeddings
    else:
        limit = AutoConfig.from_pretrained(resolve(cfg.model.base)).max_position_embeddings
    if cfg.data.max_seq_length > limit:
        raise UserError(
            f"pretrain.data.max_seq_length: {cfg.data.max_seq_length} is above the model's limit of {limit} positions"
        )


def _warm_up_heads(model: Any, cfg: Pretrain, train_ds: Any, collator: Any, work: Path, bf16: bool, labels: list[str]) -> None:
    """Train the newly initialised heads with the encoder frozen, so random heads do not push
    large gradients into a pretrained encoder in the first steps."""
    frozen = [p for n, p in model.named_parameters() if n.startswith("bert.") and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    args = training_arguments(
        cfg.train, work / "head-warmup", label_names=labels, bf16=bf16, max_steps=cfg.model.head_warmup_steps, save=False
    )
    Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator).train()
    for p in frozen:
        p.requires_grad_(True)
    log.info("head warm-up: %d steps with the encoder frozen", cfg.model.head_warmup_steps)


def label_names(cfg: Pretrain) -> list[str]:
    """The batch keys that hold targets: MLM labels, and NSP's when it is on."""
    return ["labels", "next_sentence_label"] if cfg.data.nsp else ["labels"]


def collator_for(cfg: Pretrain, tokenizer: Any) -> PretrainCollator:
    return PretrainCollator(tokenizer, cfg.data.mlm_probability, cfg.data.whole_word_mask, seed=cfg.data.seed)


def _model(cfg: Pretrain, train_docs: list[list[str]], corpus_fp: str, cache: Path) -> tuple[Any, Any, list[str], list[str]]:
    """(model, tokenizer, newly initialised weights, words added to the vocabulary)."""
    set_seed(cfg.train.seed)  # new heads / a scratch model start from the same weights every run
    model, tokenizer, new_weights = load_base(
        cfg.model,
        (s for d in train_docs for s in d),
        cache / f"tokenizer-{fingerprint(corpus_fp, dataclasses.asdict(cfg.model))}",
    )
    added = (
        extend_vocab(model, tokenizer, (s for d in train_docs for s in d), cfg.model.extend_vocab)
        if cfg.model.extend_vocab
        else []
    )
    if cfg.train.bulk_dropout:
        log.info("dropout: %d modules draw their CPU masks in bulk", use_bulk_mask_dropout(model))
    return model, tokenizer, new_weights, added


def _examples(
    cfg: Pretrain, docs: tuple[list[list[str]], list[list[str]]], tokenizer: Any, key: str, cache: Path
) -> tuple[Any, Any, PretrainCollator]:
    """(train examples, pre-masked held-out examples, the collator), built once and cached."""
    train_docs, dev_docs = docs
    train_ds = cached_examples(train_docs, tokenizer, cfg.data, seed=cfg.data.seed, cache_dir=cache, key=f"train-{key}")
    collator = collator_for(cfg, tokenizer)
    eval_ds = cached_examples(
        dev_docs,
        tokenizer,
        cfg.data,
        seed=cfg.data.seed + 1,
        cache_dir=cache,
        key=f"eval-{key}",
        limit=cfg.data.max_eval_examples,
        premask=collator,
    )
    if not cfg.data.nsp:
        train_ds = train_ds.remove_columns([c for c in train_ds.column_names if c == "next_sentence_label"])
    return train_ds, eval_ds, collator


def _summary(
    before: dict[str, Any], after: dict[str, Any], trainer: Any, timing: dict[str, Any], facts: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json: held-out before/after, the run's totals, and this process's wall clock.
    timing: start (checkpoint_progress), seconds, result_metrics; facts: warm_up, examples,
    bf16, new_weights, added_words, resumed."""
    state, start, seconds = trainer.state, timing["start"], timing["seconds"]
    tokens = int(state.num_input_tokens_seen)
    return {
        "base": {**before, "heads_warmed_up": facts["warm_up"]},
        "adapted": after,
        "perplexity_change": round(after["perplexity"] - before["perplexity"], 4),
        "train": {
            "steps": state.global_step,
            "examples": facts["examples"],
            "loss": mean_training_loss(state.log_history),  # every step's, resumed or not
            "useful_tokens": tokens,  # non-padding tokens trained on, all processes
            "bf16": facts["bf16"],
            "world_size": trainer.args.world_size,
        },
        "new_weights": facts["new_weights"],
        "added_words": facts["added_words"],
        # declared wall-clock: this process's share of the run (after a resume, the steps since)
        WALL_CLOCK: {
            "resumed_from_step": start["step"] if facts["resumed"] else None,
            "steps": state.global_step - start["step"],
            "seconds": round(seconds, 2),
            "samples_per_s": round(timing["result_metrics"].get("train_samples_per_second", 0.0), 3),
            "useful_tokens_per_s": round((tokens - start["tokens"]) / seconds, 1) if seconds else None,
        },
    }


def _write(cfg: Pretrain, model: Any, tokenizer: Any, output_dir: Path, metrics_path: Path, metrics: dict[str, Any]) -> None:
    with atomic_dir(output_dir) as tmp:
        model.config.architectures = ["BertForPreTraining"]  # a standard checkpoint for any loader
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "finpipe_pretrain.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    write_json(metrics_path, metrics)


def run(
    cfg: Pretrain, corpus: Path, output_dir: Path, metrics_path: Path, live_dir: Path, checkpoints: Path, cache: Path
) -> dict[str, Any]:
    if not corpus.is_file():
        raise UserError(f"{corpus}: clean corpus not found; run the validate@corpus stage first")
    docs = read_documents(corpus, "train"), read_documents(corpus, "dev")
    check(cfg, *docs, corpus)
    bf16 = use_bf16(cfg.train.bf16)
    corpus_fp = fingerprint(corpus)
    model, tokenizer, new_weights, added = _model(cfg, docs[0], corpus_fp, cache)
    tok_fp = tokenizer_fingerprint(tokenizer)
    train_ds, eval_ds, collator = _examples(
        cfg, docs, tokenizer, fingerprint(corpus_fp, tok_fp, dataclasses.asdict(cfg.data)), cache
    )
    labels = label_names(cfg)

    # checkpoints belong to one configuration: a changed param or corpus starts afresh
    run_dir = checkpoints / fingerprint(corpus_fp, tok_fp, dataclasses.asdict(cfg))
    resume = resume_point(run_dir)
    warm_up = bool(new_weights) and new_weights != ["*"] and cfg.model.head_warmup_steps > 0
    if warm_up:
        # the base encoder with fitted heads is the fair "before": random heads would make the
        # base model's perplexity meaningless. On resume the warm-up is redone (seeded, same
        # result) for this evaluation; the checkpoint then restores the trained weights.
        _warm_up_heads(model, cfg, train_ds, collator, run_dir, bf16, labels)
    before = heldout_metrics(model, eval_ds, collator, cfg.train.eval_batch_size, bf16)
    log.info("base model on held-out documents%s: %s", " (heads warmed up, encoder as loaded)" if warm_up else "", before)
    if resume:
        log.info("resuming from %s (step %s)", resume, resume.rsplit("-", 1)[-1])

    args = training_arguments(cfg.train, run_dir, label_names=labels, bf16=bf16)
    args.include_num_input_tokens_seen = "non_padding"  # useful tokens, kept in the checkpoint's state
    callbacks: list[Any] = [LogAtCheckpoints()]
    if is_main_process():
        callbacks.append(dvclive_callback(live_dir, resume=bool(resume)))
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator, callbacks=callbacks)
    start = checkpoint_progress(resume)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    after = heldout_metrics(model, eval_ds, collator, cfg.train.eval_batch_size, bf16)
    log.info("adapted model on held-out documents: %s", after)
    metrics = _summary(
        before,
        after,
        trainer,
        {"start": start, "seconds": seconds, "result_metrics": result.metrics},
        {
            "warm_up": warm_up,
            "examples": len(train_ds),
            "bf16": bf16,
            "new_weights": 0 if new_weights == ["*"] else len(new_weights),
            "added_words": len(added),
            "resumed": bool(resume),
        },
    )
    if trainer.is_world_process_zero():
        _write(cfg, model, tokenizer, output_dir, metrics_path, metrics)
        shutil.rmtree(run_dir, ignore_errors=True)  # done: the model is in place, checkpoints are spent
    return metrics

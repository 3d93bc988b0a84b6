"""Continued pretraining of an encoder on documents: what the `pretrain` stage (domain-adaptive,
on the corpus) and the `tapt` stages (task-adaptive, on a task's train texts) both run.

The HF Trainer trains it (fused AdamW, bf16 autocast where it pays, length-grouped dynamic
padding, SDPA, masked-only MLM decoding); checkpoints go to a directory kept across runs and a
killed run resumes from them; the model is written atomically. Held-out documents are scored
before (the starting encoder, with its new heads fitted) and after, on the same pre-masked
examples.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import set_seed

from finpipe.atomic import atomic_dir, write_json
from finpipe.buckets import pad_multiple
from finpipe.config import Pretrain
from finpipe.fingerprint import fingerprint
from finpipe.pretrain.base import extend_vocab, load_base
from finpipe.pretrain.collator import PretrainCollator
from finpipe.pretrain.data import EXAMPLES_FORMAT, Documents, cached_examples, mix_replay, tokenizer_fingerprint
from finpipe.pretrain.dropout import use_bulk_mask_dropout
from finpipe.pretrain.heldout import heldout_metrics
from finpipe.run_summary import WALL_CLOCK, LogAtCheckpoints, checkpoint_progress, mean_training_loss
from finpipe.training import (
    L2SP,
    Trainer,
    dvclive_callback,
    is_main_process,
    resume_point,
    training_arguments,
    use_bf16,
)

log = logging.getLogger(__name__)

Docs = Documents  # sentences per document: a list, or streamed from the corpus (CorpusDocuments)


@dataclass(frozen=True)
class Outputs:
    model: Path  # the adapted model (BertForPreTraining + tokenizer)
    metrics: Path
    live: Path  # dvclive curves
    checkpoints: Path  # kept across runs: a killed run resumes from here
    cache: Path  # built examples (Arrow) and scratch tokenizers


def label_names(cfg: Pretrain) -> list[str]:
    """The batch keys that hold targets: MLM labels, and NSP's when it is on."""
    return ["labels", "next_sentence_label"] if cfg.data.nsp else ["labels"]


def collator_for(cfg: Pretrain, tokenizer: Any) -> PretrainCollator:
    """The stage's collator; on a CPU (`auto`) it pads to a multiple of 8, as it always has."""
    return PretrainCollator(
        tokenizer,
        cfg.data.mlm_probability,
        cfg.data.whole_word_mask,
        pad_to_multiple_of=pad_multiple(cfg.train.pad_to_multiple_of, 8),
        seed=cfg.data.seed,
        masking=cfg.data.masking,
        max_length=cfg.data.max_seq_length,
    )


def _train_heads(model: Any, cfg: Pretrain, train_ds: Any, collator: Any, work: Path, bf16: bool, steps: int) -> None:
    """Train the newly initialised heads with the encoder frozen."""
    frozen = [p for n, p in model.named_parameters() if n.startswith("bert.") and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    args = training_arguments(cfg.train, work, label_names=label_names(cfg), bf16=bf16, max_steps=steps, save=False)
    Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator).train()
    for p in frozen:
        p.requires_grad_(True)


def run_steps(cfg: Pretrain, examples: int, world_size: int = 1) -> int:
    """Optimizer steps of the whole run: max_steps, or num_epochs over the examples."""
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    per_step = cfg.train.batch_size * cfg.train.gradient_accumulation_steps * world_size
    return max(1, math.ceil(cfg.train.num_epochs * math.ceil(examples / per_step)))


def _before(model: Any, cfg: Pretrain, data: tuple[Any, Any, Any], work: Path, bf16: bool, new_heads: bool) -> dict[str, Any]:
    """The starting encoder's held-out metrics: the fair "before".

    New heads are warmed up first (random heads would push large gradients into a pretrained
    encoder, and would make the base's perplexity meaningless). With `before_heads: budget` a
    copy of the model then trains its heads alone, the encoder frozen, for as many steps as the
    run: the run's model gets the same head training plus encoder training, so before vs after
    measures what the encoder learned, not the heads fitting."""
    train_ds, eval_ds, collator = data
    if not new_heads:
        return {**heldout_metrics(model, eval_ds, collator, cfg.train.eval_batch_size, bf16), "head_steps": 0}
    warmup = cfg.model.head_warmup_steps
    _train_heads(model, cfg, train_ds, collator, work / "head-warmup", bf16, warmup)
    log.info("head warm-up: %d steps with the encoder frozen", warmup)
    if cfg.model.before_heads == "warmup":
        return {**heldout_metrics(model, eval_ds, collator, cfg.train.eval_batch_size, bf16), "head_steps": warmup}
    steps = run_steps(cfg, len(train_ds), world_size=int(os.environ.get("WORLD_SIZE", "1")))
    fitted = copy.deepcopy(model)
    _train_heads(fitted, cfg, train_ds, collator, work / "before-heads", bf16, steps)
    metrics = heldout_metrics(fitted, eval_ds, collator, cfg.train.eval_batch_size, bf16)
    del fitted
    return {**metrics, "head_steps": warmup + steps}


def _model(cfg: Pretrain, train_docs: Docs, data_fp: str, cache: Path) -> tuple[Any, Any, list[str], list[str]]:
    """(model, tokenizer, newly initialised weights, words added to the vocabulary)."""
    set_seed(cfg.train.seed)  # new heads / a scratch model start from the same weights every run
    model, tokenizer, new_weights = load_base(
        cfg.model,
        (s for d in train_docs for s in d),
        cache / f"tokenizer-{fingerprint(data_fp, dataclasses.asdict(cfg.model))}",
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
    cfg: Pretrain, docs: tuple[Docs, Docs], tokenizer: Any, key: str, cache: Path, replay: Docs | None
) -> tuple[tuple[Any, Any, PretrainCollator], int]:
    """((train examples, pre-masked held-out examples, the collator), general-domain examples
    among the train examples), built once and cached."""
    train_docs, dev_docs = docs
    train_ds = cached_examples(train_docs, tokenizer, cfg.data, seed=cfg.data.seed, cache_dir=cache, key=f"train-{key}")
    domain = len(train_ds)
    if replay is not None:
        general = cached_examples(replay, tokenizer, cfg.data, seed=cfg.data.seed + 2, cache_dir=cache, key=f"replay-{key}")
        mixed = cache / f"mixed-{fingerprint(key, cfg.data.replay_fraction, cfg.data.seed, domain)}-v{EXAMPLES_FORMAT}.arrow"
        train_ds = mix_replay(train_ds, general, cfg.data.replay_fraction, cfg.data.seed, cache_file=mixed)
        log.info("replay: %d general-domain examples mixed into %d domain ones", len(train_ds) - domain, domain)
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
    return (train_ds, eval_ds, collator), len(train_ds) - domain if replay is not None else 0


def _anchor(model: Any, cfg: Pretrain, new_weights: list[str]) -> L2SP | None:
    """L2-SP towards the weights the run starts from: the encoder's, never new heads'."""
    if cfg.train.l2sp <= 0:
        return None
    if new_weights == ["*"]:
        log.warning("pretrain.train.l2sp: a scratch model has no starting point to stay near; no penalty")
        return None
    new = set(new_weights)
    named = [(n, p) for n, p in model.named_parameters() if n.startswith("bert.") and n not in new]
    log.info("L2-SP: weight %g on %d encoder tensors", cfg.train.l2sp, len(named))
    return L2SP(named, cfg.train.l2sp)


def _summary(
    before: dict[str, Any], after: dict[str, Any], trainer: Any, timing: dict[str, Any], facts: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json: held-out before/after, the run's totals, and this process's wall clock.
    timing: start (checkpoint_progress), seconds, result_metrics; facts: warm_up, examples,
    replay_examples, bf16, new_weights, added_words, resumed, l2sp_distance."""
    state, start, seconds = trainer.state, timing["start"], timing["seconds"]
    tokens = int(state.num_input_tokens_seen)
    return {
        "base": {**before, "heads_warmed_up": facts["warm_up"]},
        "adapted": after,
        "perplexity_change": round(after["perplexity"] - before["perplexity"], 4),
        "train": {
            "steps": state.global_step,
            "examples": facts["examples"],
            "replay_examples": facts["replay_examples"],  # general-domain ones among them
            "loss": mean_training_loss(state.log_history),  # every step's, resumed or not
            "useful_tokens": tokens,  # non-padding tokens trained on, all processes
            "bf16": facts["bf16"],
            "world_size": trainer.args.world_size,
            "l2sp_distance": facts["l2sp_distance"],  # squared distance from the start (L2-SP on)
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


def _write(cfg: Pretrain, model: Any, tokenizer: Any, out: Outputs, metrics: dict[str, Any]) -> None:
    with atomic_dir(out.model) as tmp:
        model.config.architectures = ["BertForPreTraining"]  # a standard checkpoint for any loader
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "finpipe_pretrain.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    write_json(out.metrics, metrics)


def adapt(cfg: Pretrain, docs: tuple[Docs, Docs], data_fp: str, out: Outputs, replay: Docs | None = None) -> dict[str, Any]:
    """Continue pretraining cfg.model.base on docs (train, held-out), with general-domain
    `replay` documents (None: no replay) mixed in at cfg.data.replay_fraction; data_fp fingerprints the documents
    (cache keys, checkpoint directory). Returns the metrics it writes."""
    bf16 = use_bf16(cfg.train.bf16)
    model, tokenizer, new_weights, added = _model(cfg, docs[0], data_fp, out.cache)
    tok_fp = tokenizer_fingerprint(tokenizer)
    data, replayed = _examples(
        cfg, docs, tokenizer, fingerprint(data_fp, tok_fp, dataclasses.asdict(cfg.data)), out.cache, replay
    )
    train_ds, eval_ds, collator = data

    # checkpoints belong to one configuration: a changed param or corpus starts afresh
    run_dir = out.checkpoints / fingerprint(data_fp, tok_fp, dataclasses.asdict(cfg))
    resume = resume_point(run_dir)
    warm_up = bool(new_weights) and new_weights != ["*"] and cfg.model.head_warmup_steps > 0
    # on resume the head training is redone (seeded, same result) for this evaluation; the
    # checkpoint then restores the trained weights
    before = _before(model, cfg, data, run_dir, bf16, warm_up)
    log.info("base model on held-out documents%s: %s", " (heads fitted, encoder as loaded)" if warm_up else "", before)
    if resume:
        log.info("resuming from %s (step %s)", resume, resume.rsplit("-", 1)[-1])

    args = training_arguments(cfg.train, run_dir, label_names=label_names(cfg), bf16=bf16)
    args.include_num_input_tokens_seen = "non_padding"  # useful tokens, kept in the checkpoint's state
    callbacks: list[Any] = [LogAtCheckpoints()]
    if is_main_process():
        callbacks.append(dvclive_callback(out.live, resume=bool(resume)))
    anchor = _anchor(model, cfg, new_weights)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator, callbacks=callbacks, anchor=anchor)
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
            "replay_examples": replayed,
            "bf16": bf16,
            "new_weights": 0 if new_weights == ["*"] else len(new_weights),
            "added_words": len(added),
            "resumed": bool(resume),
            "l2sp_distance": round(float(anchor.distance().detach()), 6) if anchor else None,
        },
    )
    if trainer.is_world_process_zero():
        _write(cfg, model, tokenizer, out, metrics)
        shutil.rmtree(run_dir, ignore_errors=True)  # done: the model is in place, checkpoints are spent
    return metrics

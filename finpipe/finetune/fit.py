"""What both fine-tuning stages share: reading a clean labelled dataset, checking the starting
model, and one `fit` that trains with early stopping, resumes from checkpoints and reports speed."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import AutoConfig, EarlyStoppingCallback

from finpipe.config import FinetuneTrain
from finpipe.errors import UserError
from finpipe.finetune.discriminative import GradualUnfreezing, param_groups
from finpipe.training import Trainer, dvclive_callback, is_main_process, resume_point, training_arguments, use_bf16

log = logging.getLogger(__name__)


def read_dataset(data_dir: Path, name: str, section: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The clean rows and the meta (labels/tags) that validate wrote for dataset `name`."""
    table, meta = data_dir / f"{name}.parquet", data_dir / f"{name}.meta.json"
    if not table.is_file() or not meta.is_file():
        known = sorted(p.stem for p in data_dir.glob("*.parquet")) if data_dir.is_dir() else []
        raise UserError(f"{section}.dataset: {name!r} is not a clean dataset in {data_dir} (found: {known or 'none'})")
    return pd.read_parquet(table), json.loads(meta.read_text(encoding="utf-8"))


def check_labels(given: list[str] | None, found: list[str], where: str, dataset: str) -> None:
    if given is not None and list(given) != list(found):
        raise UserError(f"{where}.labels: {list(given)} does not match the labels of dataset {dataset!r}: {list(found)}")


def split(df: pd.DataFrame, name: str, dataset: str, required: bool = True) -> pd.DataFrame:
    part = df[df["split"] == name].reset_index(drop=True)
    if required and part.empty:
        raise UserError(f"dataset {dataset!r} has no {name} rows (set its {name}_fraction in the ingest params)")
    return part


def check_model_dir(path: Path, max_seq_length: int, where: str) -> None:
    """The starting point must be a BERT checkpoint directory (pretrain's or base-model's output)."""
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a model directory (no config.json); run the pretrain / base-model stage first")
    config = AutoConfig.from_pretrained(path)
    if config.model_type != "bert":
        raise UserError(f"{path}: a {config.model_type!r} model; fine-tuning needs a BERT checkpoint")
    if max_seq_length > config.max_position_embeddings:
        raise UserError(
            f"{where}.train.max_seq_length: {max_seq_length} is above the model's limit of {config.max_position_embeddings}"
        )


@dataclass
class Fit:
    """What training did: equal for an interrupted-and-resumed run and an uninterrupted one."""

    steps: int
    best_step: int | None
    best_metric: float | None
    stopped_early: bool
    # declared wall-clock fields of this process (finpipe.run_summary.WALL_CLOCK): seconds,
    # samples/s, the step it resumed from
    this_run: dict[str, Any]

    def train_fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("steps", "best_step", "best_metric", "stopped_early")}


def fit(
    model: Any,
    train_ds: Any,
    dev_ds: Any,
    collator: Any,
    scorer: Callable[[Any], dict[str, float]],
    cfg: FinetuneTrain,
    *,
    seed: int,
    best_metric: str,
    run_dir: Path,
    live_dir: Path,
    label_names: list[str],
) -> Fit:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = math.ceil(len(train_ds) / (cfg.batch_size * cfg.gradient_accumulation_steps * world))
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(per_epoch * cfg.num_epochs)
    eval_steps = max(1, min(cfg.eval_steps, total))  # a short run still gets evaluated
    bf16 = use_bf16(cfg.bf16)
    args = training_arguments(
        cfg, run_dir, label_names=label_names, bf16=bf16, seed=seed, eval_steps=eval_steps, best_metric=best_metric
    )
    callbacks: list[Any] = []
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.unfreeze_every:
        callbacks.append(GradualUnfreezing(model, cfg.unfreeze_every))
    resume = resume_point(run_dir)
    if is_main_process():
        callbacks.append(dvclive_callback(live_dir, resume=bool(resume)))
    groups = param_groups(
        model,
        learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate,
        layer_decay=cfg.layer_decay,
        weight_decay=cfg.weight_decay,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        data_collator=collator,
        callbacks=callbacks,
        scorer=scorer,
        param_groups=groups,
    )
    if resume:
        log.info("resuming from %s (step %s)", resume, resume.rsplit("-", 1)[-1])
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    state = trainer.state
    best_step = None
    if state.best_model_checkpoint:
        best_step = int(state.best_model_checkpoint.rsplit("-", 1)[-1])
    log.info(
        "trained %d steps in %.1f s; best %s = %s at step %s",
        state.global_step,
        seconds,
        best_metric,
        state.best_metric,
        best_step,
    )
    return Fit(
        steps=state.global_step,
        best_step=best_step,
        best_metric=state.best_metric,
        stopped_early=state.global_step < total,
        this_run={
            "resumed_from_step": int(resume.rsplit("-", 1)[-1]) if resume else None,
            "seconds": round(seconds, 2),
            "samples_per_s": round(result.metrics.get("train_samples_per_second", 0.0), 3),
        },
    )


def checkpoint_dir(checkpoints: Path, model_dir: Path, data_file: Path, *config: Any) -> Path:
    """Checkpoints belong to one (starting weights, data, configuration): any change starts afresh."""
    from finpipe.fingerprint import fingerprint

    return checkpoints / fingerprint(*sorted(model_dir.glob("*.safetensors")), fingerprint(data_file), *config)


def clear_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)

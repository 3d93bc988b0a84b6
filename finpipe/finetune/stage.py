"""The fine-tuning stage skeleton both tasks run: load -> encode -> fit -> score -> predict -> write.

A task (tasks/finetune_sentiment.py, tasks/finetune_ner.py) supplies a `TaskPlugin`: how to
build its model, encode a split, score the dev set and turn test predictions into rows. The
order of the steps is fixed here, so both stages seed, checkpoint and write their outputs
alike (and an output changes only when a task's own part does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd
from datasets import Dataset
from transformers import set_seed

from finpipe.atomic import write_json
from finpipe.config import FinetuneTrain
from finpipe.errors import UserError
from finpipe.finetune.fit import checkpoint_dir, clear_checkpoints, fit, read_dataset, split
from finpipe.finetune.outputs import RunId, prediction_meta, save_model, stage_metrics, write_predictions
from finpipe.loading import load_with_heads
from finpipe.training import is_main_process, use_bf16

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StagePaths:
    """The stage's inputs and outputs, as dvc.yaml passes them."""

    model_dir: Path  # the starting checkpoint (models/<variant>)
    data_dir: Path  # the clean <kind> folder
    output_dir: Path  # the fine-tuned model
    metrics: Path
    predictions: Path  # test.jsonl + meta.json
    live: Path  # dvclive curves
    checkpoints: Path  # kept across runs (resume)


@dataclass(frozen=True)
class LabelledSplits:
    """One clean dataset, split as ingest assigned it, and the meta validate wrote."""

    train: pd.DataFrame
    dev: pd.DataFrame
    test: pd.DataFrame  # may be empty: then the stage writes no prediction rows
    meta: dict[str, Any]


@dataclass(frozen=True)
class Encoded:
    """One split ready for the Trainer, and what the metrics' `train` section records about it."""

    dataset: Dataset
    stats: dict[str, Any]


class TaskPlugin(Protocol):
    """What a task plugs into `finetune`."""

    kind: str  # meta.json's `kind`: which reader the evaluate stage uses
    labels: list[str]  # the class labels / BIO tags, in the model's id order
    train_cfg: FinetuneTrain
    tokenizer: Any

    @property
    def best_metric(self) -> str: ...  # the dev metric that early stopping and the best checkpoint follow

    @property
    def label_names(self) -> list[str]: ...  # the batch keys that hold targets

    def build_model(self, model_dir: Path, seed: int) -> Any: ...

    def encode(self, rows: pd.DataFrame, split_name: str) -> Encoded: ...

    def collator(self) -> Any: ...

    def dev_metrics(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> dict[str, Any]: ...

    def prediction_rows(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> list[dict[str, Any]]: ...

    def metrics_fields(self) -> dict[str, Any]: ...  # metrics.json's task fields, after the run's identity

    def meta_fields(self) -> dict[str, Any]: ...  # meta.json's task fields, after the labels

    def fingerprint(self) -> tuple[Any, ...]: ...  # the configuration its checkpoints belong to

    def saved_config(self) -> dict[str, Any]: ...  # finpipe_finetune.yaml, before seed/variant/model


@dataclass(frozen=True)
class DevScorer:
    """fit's scorer: the task's dev metrics of the model as it stands."""

    task: TaskPlugin
    rows: pd.DataFrame
    bf16: bool

    def __call__(self, model: Any) -> dict[str, Any]:
        return self.task.dev_metrics(model, self.rows, bf16=self.bf16)


def task_config(tasks: dict[str, T], name: str, section: str) -> T:
    if name not in tasks:
        raise UserError(f"{section}.tasks: no task {name!r} (have: {sorted(tasks)})")
    return tasks[name]


def load_splits(data_dir: Path, dataset: str, where: str, check: Callable[[dict[str, Any]], None]) -> LabelledSplits:
    """Read the clean dataset, `check` its meta against the task's params, then split it."""
    df, meta = read_dataset(data_dir, dataset, where)
    check(meta)
    return LabelledSplits(
        train=split(df, "train", dataset),
        dev=split(df, "dev", dataset),
        test=split(df, "test", dataset, False),
        meta=meta,
    )


def seeded_model(cls: Any, model_dir: Path, what: str, seed: int, **kwargs: Any) -> Any:
    """`cls` from the starting checkpoint; the new head's initial weights depend on the seed,
    as in every HF fine-tuning, so the seed is set right before they are drawn."""
    set_seed(seed)
    model, _ = load_with_heads(cls, model_dir, what, attn_implementation="sdpa", **kwargs)
    return model


def finetune(task: TaskPlugin, data: LabelledSplits, run: RunId, paths: StagePaths) -> dict[str, Any]:
    """Train, keep the best dev checkpoint, write predictions, model and metrics; the metrics."""
    model = task.build_model(paths.model_dir, run.seed)
    train, dev = task.encode(data.train, "train"), task.encode(data.dev, "dev")
    bf16 = use_bf16(task.train_cfg.bf16)
    scorer = DevScorer(task, data.dev, bf16)
    data_file = paths.data_dir / f"{run.dataset}.parquet"
    run_dir = checkpoint_dir(paths.checkpoints, paths.model_dir, data_file, *task.fingerprint(), run.seed)
    result = fit(
        model,
        train.dataset,
        dev.dataset,
        task.collator(),
        scorer,
        task.train_cfg,
        seed=run.seed,
        best_metric=task.best_metric,
        run_dir=run_dir,
        live_dir=paths.live,
        label_names=task.label_names,
    )
    dev_metrics = scorer(model)  # the restored best checkpoint
    log.info("dev: %s", {k: v for k, v in dev_metrics.items() if not isinstance(v, (dict, list))})
    train_fields = {**result.train_fields(), **train.stats, "bf16": bf16}
    metrics = stage_metrics(run, task.metrics_fields(), dev_metrics, train_fields, result.this_run)
    if not is_main_process():
        return metrics
    rows = task.prediction_rows(model, data.test, bf16=bf16) if len(data.test) else []
    write_predictions(paths.predictions, rows, prediction_meta(task.kind, run, task.labels, task.meta_fields()))
    settings = {**task.saved_config(), "seed": run.seed, "variant": run.variant, "model": str(paths.model_dir)}
    save_model(paths.output_dir, model, task.tokenizer, settings)
    write_json(paths.metrics, metrics)
    clear_checkpoints(run_dir)
    return metrics

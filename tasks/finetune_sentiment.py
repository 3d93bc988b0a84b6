"""Stage `finetune-sentiment`: BertModel + our head on one clean sentiment dataset.

One DVC matrix variant per (task, variant, seed): the encoder comes from models/<variant>
(the adapted checkpoint or the base model), the head and loss from the task's params. Dev
metrics drive early stopping; the best checkpoint is saved and its test-set predictions are
written for the evaluate stage. The steps are finpipe.finetune.stage's; this module holds what
is sentiment's own (`SentimentPlugin`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from datasets import Dataset
from transformers import AutoConfig, AutoTokenizer

from finpipe.buckets import pad_multiple
from finpipe.config import Finetune, FinetuneTrain, SentimentTask
from finpipe.errors import UserError
from finpipe.finetune import sentiment as sm
from finpipe.finetune.fit import check_labels, check_model_dir
from finpipe.finetune.metrics import class_metrics, score_metrics
from finpipe.finetune.outputs import RunId
from finpipe.finetune.stage import Encoded, LabelledSplits, StagePaths, finetune, load_splits, seeded_model, task_config

log = logging.getLogger(__name__)


def check_task(task: SentimentTask, meta: dict[str, Any], where: str) -> None:
    check_labels(task.labels, meta["labels"], where, task.dataset)
    if (task.target == "score" or task.score_loss_weight > 0) and not meta.get("has_score"):
        raise UserError(f"{where}: target {task.target!r} with a score output, but dataset {task.dataset!r} has no scores")
    if task.target == "ordinal" and not meta.get("ordered"):
        raise UserError(
            f"{where}.target: 'ordinal' needs ordered labels; dataset {task.dataset!r} is not declared `ordered: true`"
        )
    if task.target == "ordinal" and len(meta["labels"]) < 3:
        raise UserError(f"{where}.target: 'ordinal' needs at least 3 ordered labels")


def has_score(task: SentimentTask) -> bool:
    """Whether the head has a score output: the target itself, or a weighted extra output."""
    return task.target == "score" or task.score_loss_weight > 0


def dev_scores(spec: dict[str, Any], result: dict[str, np.ndarray], gold: Any, gold_scores: Any) -> dict[str, Any]:
    """Full metrics of one prediction run on a labelled split (classes and/or score)."""
    out: dict[str, Any] = {}
    if "label" in result:
        ordered = spec["target"] == "ordinal"
        out.update(class_metrics(gold, result["label"], spec["labels"], ordered=ordered))
    if "score" in result and gold_scores is not None:
        known = ~np.isnan(gold_scores)
        if known.any():
            out.update(score_metrics(gold_scores[known], result["score"][known]))
    return out


def prediction_rows(rows: pd.DataFrame, result: dict[str, np.ndarray], labels: list[str]) -> list[dict[str, Any]]:
    """test.jsonl's lines: id, gold label/score and the prediction, one per test row."""
    out = []
    for i, row in enumerate(rows.itertuples(index=False)):
        line: dict[str, Any] = {"id": row.id, "gold": row.label}
        score = getattr(row, "score", None)
        if score is not None and score == score:  # NaN: no gold score for this row
            line["gold_score"] = float(score)
        if "label" in result:
            line["label"] = labels[int(result["label"][i])]
            line["probs"] = [round(float(p), 6) for p in result["probs"][i]]
        if "score" in result:
            line["score"] = round(float(result["score"][i]), 6)
        out.append(line)
    return out


@dataclass(frozen=True, eq=False)
class SentimentPlugin:
    """Sentiment's part of the fine-tuning skeleton (finpipe.finetune.stage.TaskPlugin)."""

    kind: ClassVar[str] = "sentiment"
    task: SentimentTask
    train_cfg: FinetuneTrain
    labels: list[str]
    ordered: bool
    spec: dict[str, Any]  # the head's spec, saved in config.json (sentiment.make_spec)
    train_y: np.ndarray  # training label ids: the class weights' and CORAL thresholds' prior
    tokenizer: Any

    @property
    def best_metric(self) -> str:
        return "cosine" if self.task.target == "score" else "macro_f1"

    @property
    def label_names(self) -> list[str]:
        return ["labels", "scores"] if has_score(self.task) else ["labels"]

    @property
    def label_id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def build_model(self, model_dir: Path, seed: int) -> sm.SentimentModel:
        config = AutoConfig.from_pretrained(model_dir)
        setattr(config, sm.SPEC_KEY, self.spec)
        model = seeded_model(sm.SentimentModel, model_dir, self.spec["task"], seed, config=config)
        sm.init_thresholds(model, self.train_y)
        return model

    def encode(self, rows: pd.DataFrame, split_name: str) -> Encoded:
        max_length = self.train_cfg.max_seq_length
        enc, truncated = sm.encode(self.tokenizer, rows["text"].tolist(), max_length)
        if truncated:
            log.warning("%s: %d of %d texts longer than max_seq_length %d were cut", split_name, truncated, len(rows), max_length)
        columns = dict(enc)
        columns["labels"] = rows["label"].map(self.label_id).astype(int).tolist()
        if has_score(self.task):
            columns["scores"] = rows["score"].astype(float).tolist()
        dataset = Dataset.from_dict(columns)
        return Encoded(dataset, {"examples": len(dataset), "truncated": truncated})

    def collator(self) -> sm.SentimentCollator:
        return sm.SentimentCollator(self.tokenizer, self.pad_to_multiple_of, self.train_cfg.max_seq_length)

    @property
    def pad_to_multiple_of(self) -> int | None:
        return pad_multiple(self.train_cfg.pad_to_multiple_of, None)  # CPU: the longest row, as before

    def predict(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> dict[str, np.ndarray]:
        return sm.predict(
            model,
            self.tokenizer,
            rows["text"].tolist(),
            batch_size=self.train_cfg.eval_batch_size,
            max_length=self.train_cfg.max_seq_length,
            bf16=bf16,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )

    def dev_metrics(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> dict[str, Any]:
        gold = rows["label"].map(self.label_id).to_numpy()
        gold_scores = rows["score"].to_numpy(dtype=float) if has_score(self.task) else None
        return dev_scores(self.spec, self.predict(model, rows, bf16=bf16), gold, gold_scores)

    def prediction_rows(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> list[dict[str, Any]]:
        return prediction_rows(rows, self.predict(model, rows, bf16=bf16), self.labels)

    def metrics_fields(self) -> dict[str, Any]:
        return {"target": self.task.target}

    def meta_fields(self) -> dict[str, Any]:
        return {"target": self.task.target, "ordered": self.ordered, "score": has_score(self.task)}

    def fingerprint(self) -> tuple[Any, ...]:
        return dataclasses.asdict(self.task), dataclasses.asdict(self.train_cfg)

    def saved_config(self) -> dict[str, Any]:
        return {"task": dataclasses.asdict(self.task), "train": dataclasses.asdict(self.train_cfg)}


def sentiment_plugin(
    name: str, task: SentimentTask, train_cfg: FinetuneTrain, data: LabelledSplits, tokenizer: Any
) -> SentimentPlugin:
    """The plugin for one task on its checked data: the head's spec is fixed here."""
    labels = list(data.meta["labels"])
    train_y = data.train["label"].map({n: i for i, n in enumerate(labels)}).to_numpy()
    weighted = task.loss == "weighted_cross_entropy"
    spec = sm.make_spec(
        task=name,
        labels=labels,
        target=task.target,
        has_score=has_score(task),
        score_range=data.meta.get("score_range", (-1.0, 1.0)),
        head=dataclasses.asdict(task.head),
        loss=task.loss,
        label_smoothing=task.label_smoothing,
        score_loss_weight=task.score_loss_weight,
        class_weights=sm.inverse_frequency_weights(train_y, len(labels)) if weighted else None,
    )
    spec["max_seq_length"] = train_cfg.max_seq_length  # predict truncates as training did
    return SentimentPlugin(task, train_cfg, labels, bool(data.meta.get("ordered")), spec, train_y, tokenizer)


def run(
    cfg: Finetune,
    task_name: str,
    variant: str,
    seed: int,
    model_dir: Path,
    data_dir: Path,
    output_dir: Path,
    metrics_path: Path,
    predictions_path: Path,
    live_dir: Path,
    checkpoints: Path,
) -> dict[str, Any]:
    task = task_config(cfg.sentiment.tasks, task_name, "finetune.sentiment")
    where = f"finetune.sentiment.tasks.{task_name}"
    train_cfg = task.train or cfg.sentiment.train
    data = load_splits(data_dir, task.dataset, where, partial(check_task, task, where=where))
    check_model_dir(model_dir, train_cfg.max_seq_length, "finetune.sentiment")
    plugin = sentiment_plugin(task_name, task, train_cfg, data, AutoTokenizer.from_pretrained(model_dir))
    paths = StagePaths(model_dir, data_dir, output_dir, metrics_path, predictions_path, live_dir, checkpoints)
    return finetune(plugin, data, RunId(task_name, variant, seed, task.dataset), paths)

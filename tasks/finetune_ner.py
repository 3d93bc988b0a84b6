"""Stage `finetune-ner`: BertForTokenClassification on one clean NER dataset.

Words come pre-split; the first sub-token of each word carries its BIO label (or every
sub-token, `label_all_subtokens`), sentences longer than a window are split into overlapping
windows (finpipe.finetune.ner) and predictions are stitched back to one tag per word. Dev
scores are seqeval entity-level F1 on whole sentences; test predictions go to the evaluate stage.
The steps are finpipe.finetune.stage's; this module holds what is NER's own (`NerPlugin`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from datasets import Dataset
from transformers import AutoTokenizer, BertForTokenClassification

from finpipe.buckets import pad_multiple
from finpipe.config import Finetune, FinetuneTrain, NerFinetune, NerTask
from finpipe.finetune import ner
from finpipe.finetune.fit import check_labels, check_model_dir
from finpipe.finetune.metrics import ner_metrics
from finpipe.finetune.outputs import RunId
from finpipe.finetune.stage import Encoded, StagePaths, finetune, load_splits, seeded_model, task_config

log = logging.getLogger(__name__)


def check_task(task: NerTask, meta: dict[str, Any], where: str) -> None:
    check_labels(task.labels, list(meta["tags"]), where, task.dataset)


def words(rows: pd.DataFrame) -> list[list[str]]:
    return [list(t) for t in rows["tokens"]]


@dataclass(frozen=True, eq=False)
class NerPlugin:
    """NER's part of the fine-tuning skeleton (finpipe.finetune.stage.TaskPlugin)."""

    kind: ClassVar[str] = "ner"
    name: str
    task: NerTask
    section: NerFinetune  # finetune.ner: the stride, and saved whole with the model
    train_cfg: FinetuneTrain
    labels: list[str]  # the dataset's BIO tags, in id order
    tokenizer: Any

    @property
    def best_metric(self) -> str:
        return "micro_f1"

    @property
    def label_names(self) -> list[str]:
        return ["labels"]

    @property
    def label2id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.labels)}

    @property
    def window(self) -> dict[str, int]:
        """How sentences are cut into windows, in training and prediction alike."""
        return {"max_length": self.train_cfg.max_seq_length, "stride": self.section.stride}

    def build_model(self, model_dir: Path, seed: int) -> BertForTokenClassification:
        model = seeded_model(
            BertForTokenClassification,
            model_dir,
            self.name,
            seed,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id=self.label2id,
        )
        model.config.architectures = ["BertForTokenClassification"]
        spec = {"task": self.name, **self.window, "label_all_subtokens": self.task.label_all_subtokens}
        setattr(model.config, ner.SPEC_KEY, spec)
        return model

    def encode(self, rows: pd.DataFrame, split_name: str) -> Encoded:
        tags = [list(t) for t in rows["tags"]]
        enc = ner.encode(
            self.tokenizer, words(rows), tags, self.label2id, label_all_subtokens=self.task.label_all_subtokens, **self.window
        )
        if enc.windowed_sentences:
            log.info(
                "%s: %d sentences longer than one window of %d were split into overlapping windows",
                split_name,
                enc.windowed_sentences,
                self.train_cfg.max_seq_length,
            )
        dataset = Dataset.from_dict(ner.dataset_rows(enc))
        return Encoded(dataset, {"sentences": len(rows), "windows": len(dataset), "windowed_sentences": enc.windowed_sentences})

    def collator(self) -> ner.NerCollator:
        return ner.NerCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.train_cfg.max_seq_length)

    @property
    def pad_to_multiple_of(self) -> int | None:
        return pad_multiple(self.train_cfg.pad_to_multiple_of, None)  # CPU: the longest window, as before

    def predict(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> list[list[str]]:
        """One tag per word of every row, stitched from the windows."""
        tags, _ = ner.predict_words(
            model,
            self.tokenizer,
            words(rows),
            batch_size=self.train_cfg.eval_batch_size,
            bf16=bf16,
            pad_to_multiple_of=self.pad_to_multiple_of,
            **self.window,
        )
        return tags

    def dev_metrics(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> dict[str, Any]:
        return ner_metrics([list(t) for t in rows["tags"]], self.predict(model, rows, bf16=bf16))

    def prediction_rows(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> list[dict[str, Any]]:
        tags = self.predict(model, rows, bf16=bf16)
        return [
            {"id": row.id, "tokens": list(row.tokens), "gold": list(row.tags), "tags": pred}
            for row, pred in zip(rows.itertuples(index=False), tags, strict=True)
        ]

    def metrics_fields(self) -> dict[str, Any]:
        return {}

    def meta_fields(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> tuple[Any, ...]:
        return dataclasses.asdict(self.task), dataclasses.asdict(self.train_cfg), self.section.stride

    def saved_config(self) -> dict[str, Any]:
        return {"task": dataclasses.asdict(self.task), "ner": dataclasses.asdict(self.section)}


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
    task = task_config(cfg.ner.tasks, task_name, "finetune.ner")
    where = f"finetune.ner.tasks.{task_name}"
    train_cfg = task.train or cfg.ner.train
    data = load_splits(data_dir, task.dataset, where, partial(check_task, task, where=where))
    check_model_dir(model_dir, train_cfg.max_seq_length, "finetune.ner")
    tags = list(data.meta["tags"])
    plugin = NerPlugin(task_name, task, cfg.ner, train_cfg, tags, AutoTokenizer.from_pretrained(model_dir))
    paths = StagePaths(model_dir, data_dir, output_dir, metrics_path, predictions_path, live_dir, checkpoints)
    return finetune(plugin, data, RunId(task_name, variant, seed, task.dataset), paths)

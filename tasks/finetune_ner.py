"""Stage `finetune-ner`: BertForTokenClassification on one clean NER dataset.

Words come pre-split; the first sub-token of each word carries its BIO label (or every
sub-token, `label_all_subtokens`), sentences longer than a window are split into overlapping
windows (finpipe.finetune.ner) and predictions are stitched back to one tag per word. Dev
scores are seqeval entity-level F1 on whole sentences; test predictions go to the evaluate stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset
from transformers import AutoTokenizer, BertForTokenClassification, set_seed

from finpipe.atomic import atomic_dir, write_json
from finpipe.config import Finetune, NerTask
from finpipe.errors import UserError
from finpipe.finetune import ner
from finpipe.finetune.fit import (
    check_labels,
    check_model_dir,
    checkpoint_dir,
    clear_checkpoints,
    fit,
    read_dataset,
    split,
)
from finpipe.finetune.metrics import ner_metrics
from finpipe.loading import load_with_heads
from finpipe.run_summary import WALL_CLOCK
from finpipe.training import is_main_process, use_bf16

log = logging.getLogger(__name__)


def _task(cfg: Finetune, name: str) -> NerTask:
    if name not in cfg.ner.tasks:
        raise UserError(f"finetune.ner.tasks: no task {name!r} (have: {sorted(cfg.ner.tasks)})")
    return cfg.ner.tasks[name]


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
    where = f"finetune.ner.tasks.{task_name}"
    task = _task(cfg, task_name)
    train_cfg = task.train or cfg.ner.train
    df, meta = read_dataset(data_dir, task.dataset, where)
    tags = list(meta["tags"])
    check_labels(task.labels, tags, where, task.dataset)
    train, dev, test = split(df, "train", task.dataset), split(df, "dev", task.dataset), split(df, "test", task.dataset, False)
    check_model_dir(model_dir, train_cfg.max_seq_length, "finetune.ner")
    label2id = {t: i for i, t in enumerate(tags)}
    window = {"max_length": train_cfg.max_seq_length, "stride": cfg.ner.stride}

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(seed)
    model, _ = load_with_heads(
        BertForTokenClassification,
        model_dir,
        task_name,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id=label2id,
        attn_implementation="sdpa",
    )
    model.config.architectures = ["BertForTokenClassification"]
    setattr(model.config, ner.SPEC_KEY, {"task": task_name, **window, "label_all_subtokens": task.label_all_subtokens})

    def table(part: Any) -> tuple[Dataset, ner.Encoded]:
        enc = ner.encode(
            tokenizer,
            [list(t) for t in part["tokens"]],
            [list(t) for t in part["tags"]],
            label2id,
            label_all_subtokens=task.label_all_subtokens,
            **window,
        )
        return Dataset.from_dict(ner.dataset_rows(enc)), enc

    train_ds, train_enc = table(train)
    dev_ds, _ = table(dev)
    if train_enc.windowed_sentences:
        log.info(
            "%d train sentences longer than one window of %d were split into overlapping windows",
            train_enc.windowed_sentences,
            train_cfg.max_seq_length,
        )
    bf16 = use_bf16(train_cfg.bf16)
    dev_words = [list(t) for t in dev["tokens"]]
    dev_gold = [list(t) for t in dev["tags"]]

    def predict(m: Any, words: list[list[str]]) -> list[list[str]]:
        pred, _ = ner.predict_words(m, tokenizer, words, batch_size=train_cfg.eval_batch_size, bf16=bf16, **window)
        return pred

    def scorer(m: Any) -> dict[str, Any]:
        return ner_metrics(dev_gold, predict(m, dev_words))

    run_dir = checkpoint_dir(
        checkpoints,
        model_dir,
        data_dir / f"{task.dataset}.parquet",
        dataclasses.asdict(task),
        dataclasses.asdict(train_cfg),
        cfg.ner.stride,
        seed,
    )
    result = fit(
        model,
        train_ds,
        dev_ds,
        ner.NerCollator(tokenizer.pad_token_id),
        scorer,
        train_cfg,
        seed=seed,
        best_metric="micro_f1",
        run_dir=run_dir,
        live_dir=live_dir,
        label_names=["labels"],
    )
    dev_metrics = scorer(model)
    log.info("dev: micro F1 %.4f, macro F1 %.4f", dev_metrics["micro_f1"], dev_metrics["macro_f1"])
    metrics = {
        "task": task_name,
        "variant": variant,
        "seed": seed,
        "dataset": task.dataset,
        "dev": dev_metrics,
        "train": {
            **result.train_fields(),
            "sentences": len(train),
            "windows": len(train_ds),
            "windowed_sentences": train_enc.windowed_sentences,
            "bf16": bf16,
        },
        WALL_CLOCK: result.this_run,
    }
    if not is_main_process():
        return metrics
    test_words = [list(t) for t in test["tokens"]]
    test_pred = predict(model, test_words) if len(test) else []
    with atomic_dir(predictions_path) as tmp:
        with open(tmp / "test.jsonl", "w", encoding="utf-8") as fh:
            for row, pred in zip(test.itertuples(index=False), test_pred, strict=True):
                fh.write(json.dumps({"id": row.id, "tokens": list(row.tokens), "gold": list(row.tags), "tags": pred}) + "\n")
        write_json(
            tmp / "meta.json",
            {"kind": "ner", "task": task_name, "variant": variant, "seed": seed, "dataset": task.dataset, "labels": tags},
        )
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "finpipe_finetune.yaml").write_text(
            yaml.safe_dump(
                {
                    "task": dataclasses.asdict(task),
                    "ner": dataclasses.asdict(cfg.ner),
                    "seed": seed,
                    "variant": variant,
                    "model": str(model_dir),
                },
                sort_keys=False,
            )
        )
    write_json(metrics_path, metrics)
    clear_checkpoints(run_dir)
    return metrics

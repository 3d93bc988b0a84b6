"""Stage `finetune-sentiment`: BertModel + our head on one clean sentiment dataset.

One DVC matrix variant per (task, variant, seed): the encoder comes from models/<variant>
(the adapted checkpoint or the base model), the head and loss from the task's params. Dev
metrics drive early stopping; the best checkpoint is saved and its test-set predictions are
written for the evaluate stage.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from datasets import Dataset
from transformers import AutoConfig, AutoTokenizer, set_seed

from finpipe.atomic import atomic_dir, write_json
from finpipe.config import Finetune, SentimentTask
from finpipe.errors import UserError
from finpipe.finetune import sentiment as sm
from finpipe.finetune.fit import (
    check_labels,
    check_model_dir,
    checkpoint_dir,
    clear_checkpoints,
    fit,
    read_dataset,
    split,
)
from finpipe.finetune.metrics import class_metrics, score_metrics
from finpipe.loading import load_with_heads
from finpipe.run_summary import WALL_CLOCK
from finpipe.training import is_main_process, use_bf16

log = logging.getLogger(__name__)


def _task(cfg: Finetune, name: str) -> SentimentTask:
    if name not in cfg.sentiment.tasks:
        raise UserError(f"finetune.sentiment.tasks: no task {name!r} (have: {sorted(cfg.sentiment.tasks)})")
    return cfg.sentiment.tasks[name]


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
    where = f"finetune.sentiment.tasks.{task_name}"
    task = _task(cfg, task_name)
    train_cfg = task.train or cfg.sentiment.train
    df, meta = read_dataset(data_dir, task.dataset, where)
    check_task(task, meta, where)
    train, dev, test = split(df, "train", task.dataset), split(df, "dev", task.dataset), split(df, "test", task.dataset, False)
    check_model_dir(model_dir, train_cfg.max_seq_length, "finetune.sentiment")
    labels = list(meta["labels"])
    label_id = {name: i for i, name in enumerate(labels)}
    has_score = task.target == "score" or task.score_loss_weight > 0

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_y = train["label"].map(label_id).to_numpy()
    spec = sm.make_spec(
        task=task_name,
        labels=labels,
        target=task.target,
        has_score=has_score,
        score_range=meta.get("score_range", (-1.0, 1.0)),
        head=dataclasses.asdict(task.head),
        loss=task.loss,
        label_smoothing=task.label_smoothing,
        score_loss_weight=task.score_loss_weight,
        class_weights=sm.inverse_frequency_weights(train_y, len(labels)) if task.loss == "weighted_cross_entropy" else None,
    )
    spec["max_seq_length"] = train_cfg.max_seq_length  # predict truncates as training did
    config = AutoConfig.from_pretrained(model_dir)
    setattr(config, sm.SPEC_KEY, spec)
    set_seed(seed)  # the head's initial weights depend on the seed, as in every HF fine-tuning
    model, _ = load_with_heads(sm.SentimentModel, model_dir, task_name, config=config, attn_implementation="sdpa")
    sm.init_thresholds(model, train_y)

    def table(part: Any, with_targets: bool = True) -> Dataset:
        enc, truncated = sm.encode(tokenizer, part["text"].tolist(), train_cfg.max_seq_length)
        if truncated:
            log.warning("%d of %d texts longer than max_seq_length %d were cut", truncated, len(part), train_cfg.max_seq_length)
        rows = dict(enc)
        if with_targets:
            rows["labels"] = part["label"].map(label_id).astype(int).tolist()
            if has_score:
                rows["scores"] = part["score"].astype(float).tolist()
        return Dataset.from_dict(rows), truncated

    train_ds, truncated = table(train)
    dev_ds, _ = table(dev)
    bf16 = use_bf16(train_cfg.bf16)
    dev_gold = dev["label"].map(label_id).to_numpy()
    dev_gold_scores = dev["score"].to_numpy(dtype=float) if has_score else None

    def scorer(m: Any) -> dict[str, Any]:
        result = sm.predict(
            m,
            tokenizer,
            dev["text"].tolist(),
            batch_size=train_cfg.eval_batch_size,
            max_length=train_cfg.max_seq_length,
            bf16=bf16,
        )
        return dev_scores(spec, result, dev_gold, dev_gold_scores)

    best_metric = "cosine" if task.target == "score" else "macro_f1"
    label_names = ["labels", "scores"] if has_score else ["labels"]
    run_dir = checkpoint_dir(
        checkpoints,
        model_dir,
        data_dir / f"{task.dataset}.parquet",
        dataclasses.asdict(task),
        dataclasses.asdict(train_cfg),
        seed,
    )
    result = fit(
        model,
        train_ds,
        dev_ds,
        sm.SentimentCollator(tokenizer),
        scorer,
        train_cfg,
        seed=seed,
        best_metric=best_metric,
        run_dir=run_dir,
        live_dir=live_dir,
        label_names=label_names,
    )
    dev_metrics = scorer(model)  # the restored best checkpoint
    log.info("dev: %s", {k: v for k, v in dev_metrics.items() if not isinstance(v, (dict, list))})

    metrics = {
        "task": task_name,
        "variant": variant,
        "seed": seed,
        "dataset": task.dataset,
        "target": task.target,
        "dev": dev_metrics,
        "train": {
            **result.train_fields(),
            "examples": len(train_ds),
            "truncated": truncated,
            "bf16": bf16,
        },
        WALL_CLOCK: result.this_run,
    }
    if not is_main_process():
        return metrics
    test_result = (
        sm.predict(
            model,
            tokenizer,
            test["text"].tolist(),
            batch_size=train_cfg.eval_batch_size,
            max_length=train_cfg.max_seq_length,
            bf16=bf16,
        )
        if len(test)
        else {}
    )
    with atomic_dir(predictions_path) as tmp:
        write_predictions(tmp / "test.jsonl", test, test_result, labels)
        write_json(
            tmp / "meta.json",
            {
                "kind": "sentiment",
                "task": task_name,
                "variant": variant,
                "seed": seed,
                "dataset": task.dataset,
                "labels": labels,
                "target": task.target,
                "ordered": bool(meta.get("ordered")),
                "score": has_score,
            },
        )
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "finpipe_finetune.yaml").write_text(
            yaml.safe_dump(
                {
                    "task": dataclasses.asdict(task),
                    "train": dataclasses.asdict(train_cfg),
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


def write_predictions(path: Path, rows: Any, result: dict[str, np.ndarray], labels: list[str]) -> None:
    """JSONL, one line per test row: id, gold label/score and the prediction."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows.itertuples(index=False)):
            line: dict[str, Any] = {"id": row.id, "gold": row.label}
            score = getattr(row, "score", None)
            if score is not None and score == score:
                line["gold_score"] = float(score)
            if "label" in result:
                line["label"] = labels[int(result["label"][i])]
                line["probs"] = [round(float(p), 6) for p in result["probs"][i]]
            if "score" in result:
                line["score"] = round(float(result["score"][i]), 6)
            fh.write(json.dumps(line) + "\n")

"""What a fine-tuning stage writes, for both tasks: metrics.json, the predictions folder
(test.jsonl + meta.json) and the model folder.

The evaluate stage reads the predictions of every task alike, and dvc compares metrics across
runs by key: so one writer builds them, and a task adds only its own fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from finpipe.atomic import atomic_dir, write_json
from finpipe.run_summary import WALL_CLOCK


@dataclass(frozen=True)
class RunId:
    """Which run of the DVC matrix this is: recorded in its metrics, meta and saved config."""

    task: str
    variant: str
    seed: int
    dataset: str

    def fields(self) -> dict[str, Any]:
        return {"task": self.task, "variant": self.variant, "seed": self.seed, "dataset": self.dataset}


def stage_metrics(
    run: RunId,
    task_fields: dict[str, Any],
    dev: dict[str, Any],
    train: dict[str, Any],
    this_run: dict[str, Any],
) -> dict[str, Any]:
    """The stage's metrics.json. `this_run` goes last, under WALL_CLOCK: only it may differ
    between an interrupted-and-resumed run and an uninterrupted one (finpipe.run_summary)."""
    return {**run.fields(), **task_fields, "dev": dev, "train": train, WALL_CLOCK: this_run}


def prediction_meta(kind: str, run: RunId, labels: list[str], task_fields: dict[str, Any]) -> dict[str, Any]:
    """meta.json beside test.jsonl: what the evaluate stage needs to read the rows."""
    return {"kind": kind, **run.fields(), "labels": labels, **task_fields}


def write_predictions(folder: Path, rows: Iterable[dict[str, Any]], meta: dict[str, Any]) -> None:
    """test.jsonl (one JSON object a line) and meta.json, replacing `folder` as a whole."""
    with atomic_dir(folder) as tmp:
        with open(tmp / "test.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        write_json(tmp / "meta.json", meta)


def save_model(folder: Path, model: Any, tokenizer: Any, settings: dict[str, Any]) -> None:
    """Weights, tokenizer and finpipe_finetune.yaml (the params the model was trained under),
    replacing `folder` as a whole."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "finpipe_finetune.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))

"""The fine-tuning skeleton (finpipe.finetune.stage) with a stand-in task and no training: what
the stage tests never reach, an empty test split and a process other than rank 0, and the
order of the metrics' keys that dvc compares across runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from datasets import Dataset

from finpipe.config import FinetuneTrain, parse
from finpipe.finetune.fit import Fit
from finpipe.finetune.outputs import RunId
from finpipe.finetune.stage import Encoded, LabelledSplits, StagePaths, finetune


class Saves:
    """A model or tokenizer that writes one marker file."""

    def save_pretrained(self, folder: Path, **_: Any) -> None:
        (Path(folder) / f"{type(self).__name__}.txt").write_text("saved")


class StandIn:
    """A TaskPlugin whose model predicts each row's own gold label."""

    kind = "stand-in"
    labels = ["a", "b"]
    best_metric = "accuracy"
    label_names = ["labels"]

    def __init__(self) -> None:
        self.train_cfg = parse(FinetuneTrain, {"bf16": False})
        self.tokenizer = Saves()

    def build_model(self, model_dir: Path, seed: int) -> Any:
        return Saves()

    def encode(self, rows: pd.DataFrame, split_name: str) -> Encoded:
        return Encoded(Dataset.from_dict({"labels": [0] * len(rows)}), {"examples": len(rows)})

    def collator(self) -> Any:
        return None

    def dev_metrics(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> dict[str, Any]:
        return {"accuracy": 1.0, "per_class": {}}

    def prediction_rows(self, model: Any, rows: pd.DataFrame, *, bf16: bool) -> list[dict[str, Any]]:
        return [{"id": r.id, "gold": r.label, "label": r.label} for r in rows.itertuples(index=False)]

    def metrics_fields(self) -> dict[str, Any]:
        return {"target": "classes"}

    def meta_fields(self) -> dict[str, Any]:
        return {"ordered": False}

    def fingerprint(self) -> tuple[Any, ...]:
        return ("stand-in",)

    def saved_config(self) -> dict[str, Any]:
        return {"task": {"dataset": "d"}}


def _fit(*_: Any, run_dir: Path, **__: Any) -> Fit:
    (run_dir / "checkpoint-3").mkdir(parents=True)
    return Fit(steps=3, best_step=3, best_metric=1.0, stopped_early=False, this_run={"seconds": 0.1})


def _run(tmp_path: Path, test_ids: list[int], monkeypatch: pytest.MonkeyPatch) -> tuple[dict, StagePaths]:
    monkeypatch.setattr("finpipe.finetune.stage.fit", _fit)
    rows = pd.DataFrame({"id": [1, 2], "label": ["a", "b"]})
    data = LabelledSplits(rows, rows, rows[rows["id"].isin(test_ids)], {})
    (tmp_path / "start").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.parquet").write_bytes(b"rows")  # the checkpoints' fingerprint reads it
    paths = StagePaths(*(tmp_path / n for n in ("start", "data", "model", "metrics.json", "pred", "live", "ckpt")))
    return finetune(StandIn(), data, RunId("t", "base", 13, "d"), paths), paths


def test_outputs_in_order_and_an_empty_test_split_gives_an_empty_file(tmp_path, monkeypatch):
    metrics, paths = _run(tmp_path, [], monkeypatch)
    assert list(metrics) == ["task", "variant", "seed", "dataset", "target", "dev", "train", "this_run"]
    assert list(metrics["train"]) == ["steps", "best_step", "best_metric", "stopped_early", "examples", "bf16"]
    assert json.loads(paths.metrics.read_text()) == metrics
    assert (paths.predictions / "test.jsonl").read_text() == ""
    meta = json.loads((paths.predictions / "meta.json").read_text())
    identity = [("task", "t"), ("variant", "base"), ("seed", 13), ("dataset", "d")]
    assert list(meta.items()) == [("kind", "stand-in"), *identity, ("labels", ["a", "b"]), ("ordered", False)]
    saved = (paths.output_dir / "finpipe_finetune.yaml").read_text()
    assert saved.splitlines() == ["task:", "  dataset: d", "seed: 13", "variant: base", f"model: {paths.model_dir}"]
    assert not any(paths.checkpoints.glob("*/checkpoint-*"))  # cleared once everything is written


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    metrics, paths = _run(tmp_path, [2], monkeypatch)
    assert metrics["dev"]["accuracy"] == 1.0
    assert not paths.metrics.exists() and not paths.predictions.exists() and not paths.output_dir.exists()
    assert any(paths.checkpoints.glob("*/checkpoint-*"))  # rank 0 clears them after writing
    monkeypatch.setenv("RANK", "0")
    _run(tmp_path / "rank0", [2], monkeypatch)
    rows = (tmp_path / "rank0" / "pred" / "test.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in rows] == [{"id": 2, "gold": "b", "label": "b"}]

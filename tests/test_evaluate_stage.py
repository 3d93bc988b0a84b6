"""The evaluate stage on hand-made prediction folders: flat metric keys, seeds, the paired
bootstrap, plot data, and a report whose first lines answer the question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finpipe.config import Evaluate, parse
from finpipe.errors import UserError
from tasks import evaluate

LABELS = ["negative", "neutral", "positive"]


def _write(root: Path, kind: str, task: str, variant: str, seed: int, rows: list[dict], **meta) -> None:
    d = root / kind / task / f"{variant}-s{seed}"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "meta.json").write_text(
        json.dumps({"kind": kind, "task": task, "variant": variant, "seed": seed, "dataset": task, **meta})
    )


def _sentiment(gold: list[int], pred: list[int], scores: list[float] | None = None) -> list[dict]:
    rows = []
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        row = {"id": f"r{i}", "gold": LABELS[g], "label": LABELS[p], "probs": [0.0, 0.0, 0.0]}
        if scores is not None:
            row["gold_score"], row["score"] = (g - 1) * 0.5, scores[i]
        rows.append(row)
    return rows


@pytest.fixture
def predictions(tmp_path) -> Path:
    root = tmp_path / "pred"
    gold = [0, 1, 2, 1, 0, 2, 1, 1, 2, 0] * 4
    meta = {"labels": LABELS, "target": "classes", "ordered": False, "score": False}
    _write(root, "sentiment", "fpb", "adapted", 1, _sentiment(gold, gold), **meta)  # perfect
    _write(root, "sentiment", "fpb", "adapted", 2, _sentiment(gold, gold), **meta)
    _write(root, "sentiment", "fpb", "base", 1, _sentiment(gold, [1] * 40), **meta)  # always neutral
    _write(root, "sentiment", "fpb", "base", 2, _sentiment(gold, [1] * 40), **meta)
    ner_rows = [
        {"id": "n1", "tokens": ["A", "B", "c"], "gold": ["B-ORG", "I-ORG", "O"], "tags": ["B-ORG", "I-ORG", "O"]},
        {"id": "n2", "tokens": ["D", "e"], "gold": ["B-PER", "O"], "tags": ["O", "O"]},
    ]
    _write(root, "ner", "sec", "adapted", 1, ner_rows, labels=["O", "B-PER", "I-PER", "B-ORG", "I-ORG"])
    return root


def test_flat_metrics_bootstrap_and_report(tmp_path, predictions):
    cfg = parse(
        Evaluate,
        {
            "bootstrap_resamples": 200,
            "baselines": [{"task": "fpb", "metric": "accuracy", "value": 0.86, "source": "FinBERT (Araci 2019)"}],
        },
    )
    evaluate.run(cfg, predictions, tmp_path / "out", tmp_path / "report.md")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["fpb/adapted/accuracy"] == 1.0 and metrics["fpb/base/accuracy"] == pytest.approx(0.4)
    assert metrics["fpb/adapted/accuracy_std"] == 0.0 and metrics["fpb/adapted-s2/macro_f1"] == 1.0
    # base macro-F1: only `neutral` is ever predicted: F1 = 2*16/(16+40) for neutral, 0 elsewhere
    assert metrics["fpb/base/macro_f1"] == pytest.approx((2 * 16 / 56) / 3, abs=1e-5)
    assert metrics["fpb/delta/accuracy"] == pytest.approx(0.6)
    assert 0 < metrics["fpb/delta/accuracy_ci_low"] <= 0.6 <= metrics["fpb/delta/accuracy_ci_high"]
    assert metrics["sec/adapted/micro_f1"] == pytest.approx(2 / 3, abs=1e-5)  # 1 of 1 predicted, 1 of 2 gold
    assert "sec/delta/micro_f1" not in metrics  # no base variant to compare with
    assert all("/" in k for k in metrics) and all(isinstance(v, (int, float)) for v in metrics.values())

    report = (tmp_path / "report.md").read_text().splitlines()
    assert report[0] == "# What domain pretraining bought"
    fpb = next(line for line in report[:5] if "**fpb**" in line)
    assert "changed macro-F1 by +" in fpb and "the interval excludes zero: adapted is better" in fpb
    assert any("**sec**" in line and "no adapted/base pair" in line for line in report[:5])
    assert "| fpb | accuracy | 0.8600 | 1.0000 | 0.4000 | FinBERT (Araci 2019) |" in report
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<table>" in html
    confusion = json.loads((tmp_path / "out" / "plots" / "confusion" / "fpb-base.json").read_text())
    assert len(confusion) == 80 and {"actual", "predicted"} == set(confusion[0])
    per_class = json.loads((tmp_path / "out" / "plots" / "per_class" / "sec-adapted.json").read_text())
    assert {r["class"] for r in per_class} == {"ORG", "PER"}


def test_mismatched_test_sets_and_missing_predictions(tmp_path, predictions):
    cfg = parse(Evaluate, {})
    rows = [json.loads(x) for x in (predictions / "sentiment/fpb/base-s2/test.jsonl").read_text().splitlines()]
    (predictions / "sentiment/fpb/base-s2/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.raises(UserError, match="tested on other rows"):
        evaluate.run(cfg, predictions, tmp_path / "out", tmp_path / "r.md")
    with pytest.raises(UserError, match="no predictions folder"):
        evaluate.run(cfg, tmp_path / "nothing", tmp_path / "out", tmp_path / "r.md")

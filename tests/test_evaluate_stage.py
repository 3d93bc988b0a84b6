"""The evaluate stage on hand-made prediction folders: flat metric keys, seeds, the paired
bootstrap, plot data, and a report whose first lines answer the question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finpipe.config import Evaluate, parse
from finpipe.errors import UserError
from finpipe.evaluation import declared_runs
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


DECLARED = [f"sentiment/fpb/{v}-s{s}" for v in ("adapted", "base") for s in (1, 2)] + ["ner/sec/adapted-s1"]


def test_flat_metrics_bootstrap_and_report(tmp_path, predictions):
    cfg = parse(
        Evaluate,
        {
            "bootstrap_resamples": 200,
            "baselines": [{"task": "fpb", "metric": "accuracy", "value": 0.86, "source": "FinBERT (Araci 2019)"}],
        },
    )
    evaluate.run(cfg, DECLARED, predictions, tmp_path / "out", tmp_path / "report.md")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["fpb/adapted/accuracy"] == 1.0 and metrics["fpb/base/accuracy"] == pytest.approx(0.4)
    assert metrics["fpb/adapted/accuracy_std"] == 0.0 and metrics["fpb/adapted-s2/macro_f1"] == 1.0
    # base macro-F1: only `neutral` is ever predicted: F1 = 2*16/(16+40) for neutral, 0 elsewhere
    assert metrics["fpb/base/macro_f1"] == pytest.approx((2 * 16 / 56) / 3, abs=1e-5)
    assert metrics["fpb/delta/accuracy"] == pytest.approx(0.6)
    assert 0 < metrics["fpb/delta/accuracy_ci_low"] <= 0.6 <= metrics["fpb/delta/accuracy_ci_high"]
    assert metrics["sec/adapted/micro_f1"] == pytest.approx(2 / 3, abs=1e-5)  # 1 of 1 predicted, 1 of 2 gold
    assert "sec/delta/micro_f1" not in metrics  # no base variant to compare with
    assert metrics["fpb/delta"] == metrics["fpb/delta/macro_f1"] and "sec/delta" not in metrics  # the headline
    # the headline per task: one file each, the same keys in each, so `dvc metrics show` prints rows
    fpb = json.loads((tmp_path / "out" / "summary" / "fpb.json").read_text())
    sec = json.loads((tmp_path / "out" / "summary" / "sec.json").read_text())
    assert fpb == {
        "metric": "macro_f1",
        "adapted": 1.0,
        "base": pytest.approx((2 * 16 / 56) / 3, abs=1e-5),
        "delta": metrics["fpb/delta/macro_f1"],
        "ci_low": metrics["fpb/delta/macro_f1_ci_low"],
        "ci_high": metrics["fpb/delta/macro_f1_ci_high"],
        "n_test": 40,
        "seeds": 2,
    }
    assert list(sec) == list(fpb) and sec["metric"] == "micro_f1" and sec["base"] is None and sec["delta"] is None
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
        evaluate.run(cfg, DECLARED, predictions, tmp_path / "out", tmp_path / "r.md")
    with pytest.raises(UserError, match="no predictions folder"):
        evaluate.run(cfg, DECLARED, tmp_path / "nothing", tmp_path / "out", tmp_path / "r.md")


def test_declared_runs_follow_the_params_matrix():
    from finpipe.config import Finetune

    cfg = parse(
        Finetune,
        {
            "variants": ["adapted", "base"],
            "seeds": [1, 2],
            "sentiment": {"tasks": {"fpb": {"dataset": "fpb"}}},
            "ner": {"tasks": {"sec": {"dataset": "sec"}}},
        },
    )
    assert set(declared_runs(cfg)) == set(DECLARED) | {"ner/sec/adapted-s2", "ner/sec/base-s1", "ner/sec/base-s2"}


def test_a_seed_removed_from_params_leaves_the_report(tmp_path, predictions):
    """The folder of seed 2 stays on disk after the seed is dropped from params: the report must
    then show seed 1 alone, not average the stale run in."""
    cfg = parse(Evaluate, {"bootstrap_resamples": 100})
    gold = [0, 1, 2, 1, 0, 2, 1, 1, 2, 0] * 4
    stale_pred = [1] * 40  # seed 2 of adapted, later removed, was always `neutral`
    (predictions / "sentiment/fpb/adapted-s2/test.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _sentiment(gold, stale_pred))
    )
    declared = ["sentiment/fpb/adapted-s1", "sentiment/fpb/base-s1", "ner/sec/adapted-s1"]
    evaluate.run(cfg, declared, predictions, tmp_path / "out", tmp_path / "r.md")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["fpb/adapted/accuracy"] == 1.0  # seed 1 only; with seed 2 averaged in: 0.7
    assert not any("s2" in k for k in metrics) and "fpb/adapted/accuracy_std" not in metrics
    details = json.loads((tmp_path / "out" / "details.json").read_text())
    assert details[0]["variants"]["adapted"]["seeds"] == [1]
    assert "bootstrap over test items only, one seed per variant" in (tmp_path / "r.md").read_text()
    with pytest.raises(UserError, match="no predictions for 1 declared fine-tuning run"):
        evaluate.run(cfg, [*declared, "sentiment/fpb/adapted-s3"], predictions, tmp_path / "out", tmp_path / "r.md")


def test_undefined_metrics_are_null_in_strict_json(tmp_path):
    """A constant prediction has no Spearman correlation: null in the metrics (strict JSON), and
    n/a with the reason in the report."""
    root = tmp_path / "pred"
    gold = [0, 1, 2, 1, 0, 2] * 3
    meta = {"labels": LABELS, "target": "ordinal", "ordered": True, "score": False}
    _write(root, "sentiment", "h", "adapted", 1, _sentiment(gold, [1] * 18), **meta)
    _write(root, "sentiment", "h", "base", 1, _sentiment(gold, gold), **meta)
    evaluate.run(
        parse(Evaluate, {"bootstrap_resamples": 100}),
        ["sentiment/h/adapted-s1", "sentiment/h/base-s1"],
        root,
        tmp_path / "out",
        tmp_path / "r.md",
    )
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "NaN" not in text
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert metrics["h/adapted/spearman"] is None and metrics["h/base/spearman"] == pytest.approx(1.0)
    details = json.loads((tmp_path / "out" / "details.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert details[0]["per_run"]["adapted-s1"]["spearman"] is None
    report = (tmp_path / "r.md").read_text()
    assert "| Spearman | n/a |" in report and "undefined for the run (Spearman or Pearson of a constant prediction" in report


def test_small_samples_make_a_weak_verdict(tmp_path, predictions):
    """A firm "adapted is better" needs enough test items and seeds: below the params' minimums
    the verdict says the evidence is weak and why."""
    declared = ["sentiment/fpb/adapted-s1", "sentiment/fpb/base-s1", "ner/sec/adapted-s1"]
    evaluate.run(parse(Evaluate, {"bootstrap_resamples": 100}), declared, predictions, tmp_path / "a", tmp_path / "a.md")
    line = next(x for x in (tmp_path / "a.md").read_text().splitlines() if "**fpb**" in x)
    assert "adapted is better, but the evidence is weak: only 40 test items (evaluate.min_test_items: 200)" in line
    assert "1 seed per variant, so seed-to-seed variation is not in the interval" in line
    assert "Add seeds (finetune.seeds)" in line
    enough = parse(Evaluate, {"bootstrap_resamples": 100, "min_test_items": 40, "min_seeds": 2})
    evaluate.run(enough, DECLARED, predictions, tmp_path / "b", tmp_path / "b.md")
    line = next(x for x in (tmp_path / "b.md").read_text().splitlines() if "**fpb**" in x)
    assert line.endswith("the interval excludes zero: adapted is better") and "weak" not in line


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_confusion_png_keeps_long_class_names_clear():
    """Long class names ("strongly negative") once ran under the next panel: every tick label
    drawn must stay off the other panels and inside the saved image, the class names apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finpipe.evaluation_report import _confusion_figure

    labels = ["strongly negative", "mildly negative", "neutral", "mildly positive", "strongly positive"]
    grid = [[i * 5 + j for j in range(5)] for i in range(5)]
    fig = _confusion_figure("headlines", labels, {"adapted": grid, "base": grid})
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2
    saved = fig.get_tightbbox(renderer)  # inches: what bbox_inches="tight" keeps
    for ax in panels:
        ticks = [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in ticks]
        for t, box in zip(ticks, boxes, strict=True):
            inches = box.transformed(fig.dpi_scale_trans.inverted())
            assert saved.x0 <= inches.x0 and inches.x1 <= saved.x1 and saved.y0 <= inches.y0 and inches.y1 <= saved.y1
            for other in panels:
                if other is not ax:
                    assert not _overlaps(box, other.get_window_extent(renderer)), f"{t.get_text()!r} runs into the next panel"
        # the y labels are horizontal, so their boxes are the text (rotated x labels' boxes overlap by design)
        rows = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                assert not _overlaps(a, b), "class names overlap each other"
    plt.close(fig)


def test_dev_curves_from_resumed_runs_and_their_cadence(tmp_path):
    """A resumed run appends to dvclive's TSV and logs again the evaluations made after its
    checkpoint: one point per step, the later value. The figure says how often dev was
    evaluated (dvclive's params.yaml and metrics.json), which explains a curve of two points."""
    from finpipe.evaluation_report import _eval_cadence, _read_tsv

    live = tmp_path / "base-s13" / "live"
    tsv = live / "plots" / "metrics" / "eval" / "micro_f1.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tmicro_f1\n23\t0.26\n46\t0.70\n46\t0.75\n")  # killed after step 46's eval, resumed from 23
    assert _read_tsv(tsv) == ([23.0, 46.0], [0.26, 0.75])
    (live / "params.yaml").write_text("eval_steps: 23\nsave_steps: 23\n")
    (live / "metrics.json").write_text(json.dumps({"step": 46, "eval": {"micro_f1": 0.75}}))
    assert _eval_cadence([live]) == "dev evaluated every 23 of 46 optimizer steps (fine-tuning eval_steps)"
    assert _eval_cadence([tmp_path / "missing"]) is None

"""The evaluate stage on hand-made prediction folders: flat metric keys, seeds, the paired
bootstrap of every variant against base, the winner, the summary files, plot data, and a report
whose first lines answer the question."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from pathlib import Path

import pytest

from finpipe.config import Evaluate, Finetune, Tapt, load_params, parse
from finpipe.errors import UserError
from finpipe.evaluation import declared_runs, split_run
from tasks import evaluate

REPO = Path(__file__).resolve().parents[1]

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


GOLD = [0, 1, 2, 1, 0, 2, 1, 1, 2, 0] * 4
# base-tapt: every `negative` item read as `neutral`, the rest right (accuracy 28/40)
HALFWAY = [1 if g == 0 else g for g in GOLD]
# params' order (declared_runs): finetune.variants, then the TAPT variants; names with '-' included
VARIANTS = ("adapted", "base", "base-tapt", "adapted-tapt")


@pytest.fixture
def predictions(tmp_path) -> Path:
    """fpb: four variants x seeds 1, 2 (adapted perfect, base always `neutral`, base-tapt in
    between, adapted-tapt as base); sec (NER): adapted and adapted-tapt, no base to compare."""
    root = tmp_path / "pred"
    meta = {"labels": LABELS, "target": "classes", "ordered": False, "score": False}
    preds = {"adapted": GOLD, "base": [1] * 40, "base-tapt": HALFWAY, "adapted-tapt": [1] * 40}
    for variant, pred in preds.items():
        for seed in (1, 2):
            _write(root, "sentiment", "fpb", variant, seed, _sentiment(GOLD, pred), **meta)
    ner_rows = [
        {"id": "n1", "tokens": ["A", "B", "c"], "gold": ["B-ORG", "I-ORG", "O"], "tags": ["B-ORG", "I-ORG", "O"]},
        {"id": "n2", "tokens": ["D", "e"], "gold": ["B-PER", "O"], "tags": ["O", "O"]},
    ]
    worse = [{**r, "tags": ["O"] * len(r["tags"])} for r in ner_rows]
    ner_labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    _write(root, "ner", "sec", "adapted", 1, ner_rows, labels=ner_labels)
    _write(root, "ner", "sec", "adapted-tapt", 1, worse, labels=ner_labels)
    return root


DECLARED = [f"sentiment/fpb/{v}-s{s}" for v in VARIANTS for s in (1, 2)] + [
    "ner/sec/adapted-s1",
    "ner/sec/adapted-tapt-s1",
]
# base's macro-F1: only `neutral` is ever predicted: F1 = 2*16/(16+40) for neutral, 0 elsewhere
BASE_MACRO_F1 = (2 * 16 / 56) / 3


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
    assert metrics["fpb/base-tapt/accuracy"] == pytest.approx(0.7) and metrics["fpb/base-tapt-s1/accuracy"] == pytest.approx(0.7)
    assert metrics["fpb/base/macro_f1"] == pytest.approx(BASE_MACRO_F1, abs=1e-5)
    assert metrics["sec/adapted/micro_f1"] == pytest.approx(2 / 3, abs=1e-5)  # 1 of 1 predicted, 1 of 2 gold
    assert all("/" in k for k in metrics) and all(isinstance(v, (int, float)) for v in metrics.values())

    report = (tmp_path / "report.md").read_text().splitlines()
    assert report[0] == "# What domain pretraining bought"
    fpb = next(line for line in report[:5] if "**fpb**" in line)
    assert "winner: adapted (+" in fpb and "the interval excludes zero: adapted is better" in fpb
    assert "seeds per variant: base 2, adapted 2, base-tapt 2, adapted-tapt 2" in fpb  # base first: the reference
    assert any("**sec**" in line and "no base variant to compare with" in line for line in report[:5])
    assert "| fpb | accuracy | 0.8600 | 0.4000 | 1.0000 | 0.7000 | 0.4000 | FinBERT (Araci 2019) |" in report
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "<table>" in page
    confusion = json.loads((tmp_path / "out" / "plots" / "confusion" / "fpb-base.json").read_text())
    assert len(confusion) == 80 and {"actual", "predicted"} == set(confusion[0])
    tapt = json.loads((tmp_path / "out" / "plots" / "confusion" / "fpb-base-tapt.json").read_text())
    assert len(tapt) == 80 and sum(r["actual"] != r["predicted"] for r in tapt) == 24
    per_class = json.loads((tmp_path / "out" / "plots" / "per_class" / "sec-adapted-tapt.json").read_text())
    assert {r["class"] for r in per_class} == {"ORG", "PER"}


def test_every_variant_is_compared_with_base(tmp_path, predictions):
    """comparison is {variant: {metric: result}} for each variant other than base, the same
    paired bootstrap for each, and the flat keys are task/<variant>/delta[_<metric>[_ci_*]]."""
    evaluate.run(parse(Evaluate, {"bootstrap_resamples": 200}), DECLARED, predictions, tmp_path / "out", tmp_path / "r.md")
    details = {s["task"]: s for s in json.loads((tmp_path / "out" / "details.json").read_text())}
    fpb = details["fpb"]
    assert list(fpb["variants"]) == ["base", "adapted", "base-tapt", "adapted-tapt"]
    assert list(fpb["comparison"]) == ["adapted", "base-tapt", "adapted-tapt"]
    assert all(set(by) == {"macro_f1", "accuracy"} for by in fpb["comparison"].values())
    assert fpb["comparison"]["adapted"]["accuracy"]["difference"] == pytest.approx(0.6)
    assert fpb["comparison"]["base-tapt"]["accuracy"]["difference"] == pytest.approx(0.3)
    assert fpb["comparison"]["base-tapt"]["accuracy"]["per_seed"] == {"1": pytest.approx(0.3), "2": pytest.approx(0.3)}
    same = fpb["comparison"]["adapted-tapt"]["macro_f1"]  # the same predictions as base
    assert same["difference"] == 0.0 and not same["excludes_zero"]
    assert details["sec"]["comparison"] == {}  # no base variant

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # `dvc exp show --keep '.*/delta$'`: one column per task and variant compared with base
    assert {k for k in metrics if re.fullmatch(r".*/delta", k)} == {
        "fpb/adapted/delta",
        "fpb/base-tapt/delta",
        "fpb/adapted-tapt/delta",
    }
    assert metrics["fpb/adapted/delta"] == metrics["fpb/adapted/delta_macro_f1"]  # the headline
    assert metrics["fpb/base-tapt/delta_accuracy"] == pytest.approx(0.3)
    assert 0 < metrics["fpb/base-tapt/delta_accuracy_ci_low"] <= 0.3 <= metrics["fpb/base-tapt/delta_accuracy_ci_high"]
    for v in ("adapted", "base-tapt", "adapted-tapt"):
        for m in ("macro_f1", "accuracy"):
            assert {f"fpb/{v}/delta_{m}", f"fpb/{v}/delta_{m}_ci_low", f"fpb/{v}/delta_{m}_ci_high"} <= set(metrics)
    assert not [k for k in metrics if k.startswith("fpb/delta") or k.startswith("sec/") and "delta" in k]


def test_the_winner_and_the_summary_files(tmp_path, predictions, caplog):
    """The winner is the best mean headline metric; one summary file per task and variant
    other than base, all with the same keys, `best` marking the winner."""
    caplog.set_level("INFO", logger="tasks.evaluate")
    evaluate.run(parse(Evaluate, {"bootstrap_resamples": 200}), DECLARED, predictions, tmp_path / "out", tmp_path / "r.md")
    details = {s["task"]: s for s in json.loads((tmp_path / "out" / "details.json").read_text())}
    assert details["fpb"]["winner"] == "adapted" and details["sec"]["winner"] == "adapted"
    summary = tmp_path / "out" / "summary"
    files = sorted(str(p.relative_to(summary)) for p in summary.rglob("*.json"))
    assert files == [
        "fpb/adapted-tapt.json",
        "fpb/adapted.json",
        "fpb/base-tapt.json",
        "sec/adapted-tapt.json",
        "sec/adapted.json",
    ]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    tapt = json.loads((summary / "fpb" / "base-tapt.json").read_text())
    assert tapt == {
        "score": metrics["fpb/base-tapt/macro_f1"],
        "base": pytest.approx(BASE_MACRO_F1, abs=1e-5),
        "delta": metrics["fpb/base-tapt/delta_macro_f1"],
        "ci_low": metrics["fpb/base-tapt/delta_macro_f1_ci_low"],
        "ci_high": metrics["fpb/base-tapt/delta_macro_f1_ci_high"],
        "seeds": 2,
        "best": 0,
    }
    rows = {f: json.loads((summary / f).read_text()) for f in files}
    assert all(list(r) == list(tapt) for r in rows.values())  # same keys: DVC prints rows
    assert [f for f, r in rows.items() if r["best"]] == ["fpb/adapted.json", "sec/adapted.json"]
    sec = rows["sec/adapted-tapt.json"]
    assert sec["base"] is None and sec["delta"] is None and sec["seeds"] == 1

    lines = (tmp_path / "r.md").read_text().splitlines()
    assert "winner: adapted (+" in lines[lines.index("## fpb (sentiment, dataset fpb)") + 2]
    row = next(x for x in lines if x.startswith("| base-tapt |"))
    # the headline, macro-F1: (0 + 32/44 + 1) / 3 - base's; accuracy would be +0.3000
    assert "| +0.3853 |" in row and "| excludes zero: better; weak evidence: only 40 test items" in row
    assert any(x.startswith("| adapted-tapt | ") and "includes zero" in x for x in lines)
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("fpb: base-tapt - base macro_f1 = +") for m in logged)
    assert any(m.startswith("fpb: winner adapted") and "excludes zero" in m for m in logged)


def test_no_variant_beat_base(tmp_path):
    """Base best (or tied): no winner is claimed, no summary file marks a best variant."""
    root = tmp_path / "pred"
    meta = {"labels": LABELS, "target": "classes", "ordered": False, "score": False}
    for variant, pred in (("base", GOLD), ("adapted", GOLD), ("base-tapt", HALFWAY)):
        _write(root, "sentiment", "fpb", variant, 1, _sentiment(GOLD, pred), **meta)
    declared = ["sentiment/fpb/adapted-s1", "sentiment/fpb/base-s1", "sentiment/fpb/base-tapt-s1"]
    evaluate.run(parse(Evaluate, {"bootstrap_resamples": 100}), declared, root, tmp_path / "out", tmp_path / "r.md")
    assert json.loads((tmp_path / "out" / "details.json").read_text())[0]["winner"] == "base"  # a tie goes to base
    assert not any(json.loads(p.read_text())["best"] for p in (tmp_path / "out" / "summary").rglob("*.json"))
    assert "no variant beat base on macro-F1 (base 1.0000)" in (tmp_path / "r.md").read_text().splitlines()[2]


def test_the_report_opens_with_the_note(tmp_path, predictions):
    note = "The embedded default's numbers are synthetic: not evidence <for> anything."
    cfg = parse(Evaluate, {"bootstrap_resamples": 100, "note": note})
    evaluate.run(cfg, DECLARED, predictions, tmp_path / "out", tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text().splitlines()[2] == f"**Note:** {note}"
    expected = f"<h1>What domain pretraining bought</h1><p><b>Note:</b> {html.escape(note)}</p>"
    assert expected in (tmp_path / "r.html").read_text()
    evaluate.run(parse(Evaluate, {"bootstrap_resamples": 100}), DECLARED, predictions, tmp_path / "o2", tmp_path / "r2.md")
    assert "Note:" not in (tmp_path / "r2.md").read_text()


def test_run_names_split_at_the_last_seed_suffix(tmp_path, predictions):
    """Variant names contain '-': the seed is the last -s<digits>; and a folder must hold the
    run its name says, or it would be compared as another variant."""
    assert split_run("adapted-tapt-s13") == ("adapted-tapt", 13)
    assert split_run("base-s2") == ("base", 2) and split_run("x-s1-s22") == ("x-s1", 22)
    with pytest.raises(ValueError):
        split_run("base-tapt")
    meta_path = predictions / "sentiment/fpb/base-tapt-s1/meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "variant": "base"}))
    with pytest.raises(UserError, match=r"describes sentiment/fpb/base-s1, not sentiment/fpb/base-tapt-s1"):
        evaluate.run(parse(Evaluate, {}), DECLARED, predictions, tmp_path / "out", tmp_path / "r.md")


def test_mismatched_test_sets_and_missing_predictions(tmp_path, predictions):
    cfg = parse(Evaluate, {})
    rows = [json.loads(x) for x in (predictions / "sentiment/fpb/base-s2/test.jsonl").read_text().splitlines()]
    (predictions / "sentiment/fpb/base-s2/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.raises(UserError, match="tested on other rows"):
        evaluate.run(cfg, DECLARED, predictions, tmp_path / "out", tmp_path / "r.md")
    with pytest.raises(UserError, match="no predictions folder"):
        evaluate.run(cfg, DECLARED, tmp_path / "nothing", tmp_path / "out", tmp_path / "r.md")


def test_declared_runs_follow_the_params_matrix():
    """tasks x (finetune.variants, then one <start>-tapt per tapt.starts) x seeds."""
    params = load_params(REPO / "params.yaml")
    finetune = parse(
        Finetune,
        {
            "variants": ["adapted", "base"],
            "seeds": [1, 2],
            "sentiment": {"tasks": {"fpb": {"dataset": "fpb"}}},
            "ner": {"tasks": {"sec": {"dataset": "sec"}}},
        },
    )
    both = dataclasses.replace(params, finetune=finetune, tapt=parse(Tapt, {"starts": ["base", "adapted"]}))
    expected = [f"{k}/{t}/{v}-s{s}" for k, t in (("sentiment", "fpb"), ("ner", "sec")) for v in VARIANTS for s in (1, 2)]
    assert declared_runs(both) == expected
    off = dataclasses.replace(params, finetune=finetune, tapt=parse(Tapt, {"starts": []}))
    assert declared_runs(off) == [x for x in expected if "tapt" not in x]
    one = dataclasses.replace(params, finetune=finetune, tapt=parse(Tapt, {"starts": ["adapted"]}))
    assert {x.rsplit("/", 1)[1] for x in declared_runs(one)} == {
        f"{v}-s{s}" for v in ("adapted", "base", "adapted-tapt") for s in (1, 2)
    }


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
    fpb = next(s for s in details if s["task"] == "fpb")
    assert fpb["variants"]["adapted"]["seeds"] == [1] and list(fpb["variants"]) == ["base", "adapted"]
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
    assert "| Spearman | 1.0000 | n/a |" in report  # base's column first
    assert "undefined for the run (Spearman or Pearson of a constant prediction" in report


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


@pytest.mark.parametrize("variants", [VARIANTS[:2], VARIANTS[:3], VARIANTS])
def test_confusion_png_keeps_long_class_names_clear(variants):
    """Long class names ("strongly negative") once ran under the next panel: every tick label
    drawn must stay off the other panels and inside the saved image, the class names apart,
    with two variants side by side and three or four in rows of two."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finpipe.evaluation_report import _confusion_figure

    labels = ["strongly negative", "mildly negative", "neutral", "mildly positive", "strongly positive"]
    grid = [[i * 5 + j for j in range(5)] for i in range(5)]
    fig = _confusion_figure("headlines", labels, dict.fromkeys(variants, grid))
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == len(variants) and len(fig.axes) == len(variants) + 1  # + the colour bar, no empty slot
    # at most two panels a row: four in a row would be shrunk to illegible in the report
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == min(2, len(variants))
    assert {ax.get_title() for ax in panels} == {f"headlines: {v} (all seeds)" for v in variants}
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


def test_plots_tell_hyphenated_variants_apart(tmp_path):
    """`base` must not collect `base-tapt`'s runs (run keys split at the last -s<digits>), and
    the dev curves name each run by variant and seed, the stale ones left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finpipe.evaluation import Run
    from finpipe.evaluation_report import _confusion_total, _curve_files, _curves_figure

    per_run = {
        "base-s1": {"confusion_matrix": [[1, 0], [0, 1]]},
        "base-tapt-s1": {"confusion_matrix": [[5, 0], [0, 5]]},
        "adapted-tapt-s13": {"confusion_matrix": [[7, 0], [0, 7]]},
    }
    s = {"task": "t", "kind": "ner", "headline": "micro_f1", "per_run": per_run}
    s["variants"] = {"base": {}, "adapted": {}, "base-tapt": {}, "adapted-tapt": {}}
    assert _confusion_total(s, "base", 2) == [[1, 0], [0, 1]]
    assert _confusion_total(s, "base-tapt", 2) == [[5, 0], [0, 5]]
    for name in ("adapted-tapt-s1", "base-s1", "base-tapt-s1", "base-tapt-s3"):  # s3: stale
        tsv = tmp_path / "ner" / "t" / name / "live" / "plots" / "metrics" / "eval" / "micro_f1.tsv"
        tsv.parent.mkdir(parents=True)
        tsv.write_text("step\tmicro_f1\n10\t0.5\n20\t0.7\n")
    group = [Run("ner", "t", v, 1, {}, []) for v in ("adapted-tapt", "base", "base-tapt")]
    found = _curve_files(s, group, tmp_path)
    assert [p.parents[4].name for p in found] == ["base-s1", "base-tapt-s1", "adapted-tapt-s1"]  # variant order
    fig = _curves_figure(s, found)
    lines = fig.axes[0].get_lines()
    assert [x.get_label() for x in lines] == ["base s1", "base-tapt s1", "adapted-tapt s1"]
    assert len({x.get_color() for x in lines}) == 3  # a colour per variant
    plt.close(fig)

"""The fine-tuning stages on a 2-layer BERT for a few steps: outputs, one-call reload, every
head/loss option, bad params; then `finpipe predict` and `finpipe evaluate --model` on the
models they wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tiny_finetune

from finpipe.config import Finetune, parse
from finpipe.errors import UserError
from finpipe.finetune.load import load
from tasks import evaluate, finetune_ner, finetune_sentiment, predict

pytestmark = pytest.mark.slow


def _cfg(**changes) -> Finetune:
    data = tiny_finetune()
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        node[last] = value
    return parse(Finetune, data)


def _sentiment(tmp: Path, model: Path, data: Path, cfg: Finetune, task: str = "headlines") -> dict:
    return finetune_sentiment.run(
        cfg,
        task,
        "base",
        13,
        model,
        data / "sentiment",
        tmp / "model",
        tmp / "metrics.json",
        tmp / "pred",
        tmp / "live",
        tmp / "ckpt",
    )


def _ner(tmp: Path, model: Path, data: Path, cfg: Finetune) -> dict:
    return finetune_ner.run(
        cfg,
        "news",
        "base",
        13,
        model,
        data / "ner",
        tmp / "model",
        tmp / "metrics.json",
        tmp / "pred",
        tmp / "live",
        tmp / "ckpt",
    )


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory, tiny_bert, clean_labelled) -> Path:
    tmp = tmp_path_factory.mktemp("ft-sentiment")
    _sentiment(tmp, tiny_bert, clean_labelled, _cfg())
    return tmp


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory, tiny_bert, clean_labelled) -> Path:
    tmp = tmp_path_factory.mktemp("ft-ner")
    _ner(tmp, tiny_bert, clean_labelled, _cfg())
    return tmp


def test_sentiment_outputs_and_one_call_reload(sentiment_model, clean_labelled):
    tmp = sentiment_model
    metrics = json.loads((tmp / "metrics.json").read_text())
    assert metrics["train"]["steps"] <= 6 and metrics["train"]["samples_per_s"] > 0
    assert {"accuracy", "macro_f1", "mae_steps", "spearman", "cosine", "pearson", "mse"} <= set(metrics["dev"])
    assert len(metrics["dev"]["confusion_matrix"]) == 5
    kind, model, tokenizer = load(tmp / "model")
    assert kind == "sentiment" and model.spec["target"] == "ordinal" and model.spec["labels"][0] == "strongly negative"
    meta = json.loads((tmp / "pred" / "meta.json").read_text())
    rows = [json.loads(x) for x in (tmp / "pred" / "test.jsonl").read_text().splitlines()]
    assert meta["ordered"] and len(rows) > 0
    assert all(abs(sum(r["probs"]) - 1) < 1e-4 and -1 <= r["score"] <= 1 for r in rows)
    # the reloaded model predicts exactly what the stage wrote
    import pandas as pd

    from finpipe.finetune.sentiment import predict as sm_predict

    clean = pd.read_parquet(clean_labelled / "sentiment" / "headlines.parquet")
    texts = clean.set_index("id").loc[[r["id"] for r in rows], "text"].tolist()
    again = sm_predict(model, tokenizer, texts, batch_size=7, max_length=48)
    assert [model.spec["labels"][i] for i in again["label"]] == [r["label"] for r in rows]
    np.testing.assert_allclose(again["score"], [r["score"] for r in rows], atol=1e-5)
    assert (tmp / "live" / "plots" / "metrics" / "eval" / "macro_f1.tsv").is_file()
    assert yaml.safe_load((tmp / "model" / "finpipe_finetune.yaml").read_text())["seed"] == 13
    assert not any((tmp / "ckpt").glob("*/checkpoint-*"))


@pytest.mark.parametrize(
    "changes",
    [
        {
            "sentiment.tasks.headlines.target": "classes",
            "sentiment.tasks.headlines.loss": "weighted_cross_entropy",
            "sentiment.tasks.headlines.score_loss_weight": 0.0,
            "sentiment.tasks.headlines.head": {"pooling": "mean", "hidden_size": 16},
        },
        {
            "sentiment.tasks.headlines.target": "classes",
            "sentiment.tasks.headlines.label_smoothing": 0.1,
            "sentiment.tasks.headlines.score_loss_weight": 0.0,
            "sentiment.train.layer_decay": 0.5,
            "sentiment.train.unfreeze_every": 2,
        },
        {"sentiment.tasks.headlines.target": "score"},
    ],
    ids=["weighted-ce-mean-pool-hidden", "smoothing-layer-decay-unfreezing", "score-only"],
)
def test_sentiment_head_and_loss_options(tmp_path, tiny_bert, clean_labelled, changes):
    metrics = _sentiment(tmp_path, tiny_bert, clean_labelled, _cfg(**changes))
    _, model, _ = load(tmp_path / "model")
    if metrics["target"] == "score":
        assert "macro_f1" not in metrics["dev"] and -1 <= metrics["dev"]["cosine"] <= 1 and model.classes is None
    else:
        assert 0 <= metrics["dev"]["macro_f1"] <= 1 and model.scorer is None
    assert all(p.requires_grad for p in model.parameters())  # unfreezing leaves nothing frozen


def test_ner_windows_and_stitching(ner_model, clean_labelled):
    tmp = ner_model
    metrics = json.loads((tmp / "metrics.json").read_text())
    assert metrics["train"]["windowed_sentences"] > 0  # max_seq_length 16: long sentences were split
    assert metrics["train"]["windows"] > metrics["train"]["sentences"]
    assert {"micro_f1", "macro_f1", "per_type"} <= set(metrics["dev"])
    rows = [json.loads(x) for x in (tmp / "pred" / "test.jsonl").read_text().splitlines()]
    assert rows and all(len(r["tags"]) == len(r["tokens"]) == len(r["gold"]) for r in rows)  # one tag per word
    kind, model, _ = load(tmp / "model")
    assert kind == "ner" and model.config.finpipe_ner["max_length"] == 16


def test_bad_params_end_in_one_clear_message(tmp_path, tiny_bert, clean_labelled):
    cases = [
        ({"sentiment.tasks.headlines.labels": ["negative", "neutral", "positive"]}, "does not match the labels"),
        ({"sentiment.tasks.headlines.dataset": "nope"}, "'nope' is not a clean dataset"),
    ]
    for changes, message in cases:
        with pytest.raises(UserError, match=message):
            _sentiment(tmp_path, tiny_bert, clean_labelled, _cfg(**changes))
    with pytest.raises(UserError, match="not a model directory"):
        _sentiment(tmp_path, tmp_path, clean_labelled, _cfg())
    with pytest.raises(UserError, match="no task 'other'"):
        _sentiment(tmp_path, tiny_bert, clean_labelled, _cfg(), task="other")
    with pytest.raises(UserError, match="above the model's limit of 128"):
        _sentiment(tmp_path, tiny_bert, clean_labelled, _cfg(**{"sentiment.train.max_seq_length": 256}))
    with pytest.raises(UserError, match="does not match the labels"):
        _ner(tmp_path, tiny_bert, clean_labelled, _cfg(**{"ner.tasks.news.labels": ["O", "B-PER", "I-PER"]}))
    with pytest.raises(UserError, match="stride must be below"):
        _cfg(**{"ner.stride": 40})


def test_unordered_labels_refuse_an_ordinal_head(tmp_path, tiny_bert, clean_labelled):
    meta = {"labels": ["negative", "neutral", "positive"], "ordered": False, "has_score": False}
    task = _cfg(**{"sentiment.tasks.headlines.score_loss_weight": 0.0}).sentiment.tasks["headlines"]
    with pytest.raises(UserError, match="'ordinal' needs ordered labels"):
        finetune_sentiment.check_task(task, meta, "w")
    task = _cfg(**{"sentiment.tasks.headlines.target": "score"}).sentiment.tasks["headlines"]
    with pytest.raises(UserError, match="has no scores"):
        finetune_sentiment.check_task(task, meta, "w")


# --- finpipe predict -------------------------------------------------------------------------

TEXTS = ["Aurelia Mining cuts guidance as demand collapses", "Kestrel Logistics raises its dividend"]


def _finpipe(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finpipe.cli", *args], input=stdin, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("form", ["csv", "tsv", "jsonl", "text", "stdin"])
def test_predict_sentiment_every_input_form(tmp_path, sentiment_model, form):
    model = sentiment_model / "model"
    bad = {
        "csv": 'id,text\n1,"{0}"\n2,""\n3,"{1}"\n',
        "tsv": "id\ttext\n1\t{0}\n2\t \n3\t{1}\n",
        "jsonl": '{{"id": 1, "text": "{0}"}}\n{{"id": 2, "text": 42}}\nnot json\n{{"id": 3, "text": "{1}"}}\n',
        "text": "{0}\n\n{1}\n",
        "stdin": "{0}\n   \n{1}\n",
    }[form]
    content = bad.format(*TEXTS)
    out = tmp_path / "out.jsonl"
    if form == "stdin":
        proc = _finpipe("predict", "sentiment", "--model", str(model), "--input", "-", "--output", "-", stdin=content)
        lines = proc.stdout.splitlines()
    else:
        src = tmp_path / f"in.{'txt' if form == 'text' else form}"
        src.write_text(content)
        proc = _finpipe("predict", "sentiment", "--model", str(model), "--input", str(src), "--output", str(out))
        lines = out.read_text().splitlines()
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in lines]
    assert [r["text"] for r in records] == TEXTS
    labels = load(model)[1].spec["labels"]
    for r in records:
        assert r["label"] in labels and set(r["probs"]) == set(labels) and abs(sum(r["probs"].values()) - 1) < 1e-4
        assert -1 <= r["score"] <= 1
    skipped = 2 if form == "jsonl" else 1
    assert f"{skipped} of {skipped + 2} rows skipped" in proc.stderr


def test_predict_ner_offsets_map_back_to_the_exact_text(tmp_path, ner_model):
    texts = [
        "Chen Wei told investors in Johannesburg that Kestrel Logistics expects stable margins.",
        "  Shares of  Aurelia Mining (AUR.L) rose in Mumbai after Elena Petrova's talk, said Müller-Lüdenscheidt.",
        " ".join(["Corvallis Motors opened a plant near Mumbai employing about 5000 people ."] * 6),  # several windows
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    proc = _finpipe("predict", "ner", "--model", str(ner_model / "model"), "--input", str(src), "--output", "-")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(records) == 3
    for rec, text in zip(records, texts, strict=True):
        for ent in rec["entities"]:
            assert text[ent["start"] : ent["end"]] == ent["text"] and ent["type"] in {"PER", "ORG", "LOC"}
            assert ent["text"] == ent["text"].strip() and ent["text"]


def test_char_spans_are_exact_for_a_known_tagging(tiny_bert):
    from transformers import AutoTokenizer

    from finpipe.finetune.ner import char_spans, words_with_offsets

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    text = "  Shares of  Aurelia Mining (AUR.L) rose, said Müller."
    words = words_with_offsets(tok, text)
    names = [w for w, _, _ in words]
    tags = ["O"] * len(words)
    tags[names.index("Aurelia")], tags[names.index("Mining")] = "B-ORG", "I-ORG"
    tags[names.index("Müller")] = "B-PER"
    assert char_spans(text, words, tags) == [
        {"type": "ORG", "start": 13, "end": 27, "text": "Aurelia Mining"},
        {"type": "PER", "start": 47, "end": 53, "text": "Müller"},
    ]


def test_predict_errors(tmp_path, sentiment_model, ner_model, tiny_bert):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    with pytest.raises(UserError, match="no such file"):
        predict.run("sentiment", sentiment_model / "model", str(tmp_path / "missing.csv"), "-")
    with pytest.raises(UserError, match="not a fine-tuned finpipe model"):
        predict.run("sentiment", tiny_bert, str(src), "-")
    with pytest.raises(UserError, match="a fine-tuned ner model, but sentiment was asked for"):
        predict.run("sentiment", ner_model / "model", str(src), "-")
    csv = tmp_path / "in.csv"
    csv.write_text("id,body\n1,hello\n")
    with pytest.raises(UserError, match="no column 'text'"):
        predict.run("sentiment", sentiment_model / "model", str(csv), "-")
    proc = _finpipe("predict", "sentiment", "--model", str(tmp_path / "nope"), "--input", str(src))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("finpipe predict: error:")
    assert "Traceback" not in proc.stderr


# --- finpipe evaluate --model (an external labelled file) --------------------------------------


def test_evaluate_external_files(tmp_path, sentiment_model, ner_model):
    labels = load(sentiment_model / "model")[1].spec["labels"]
    csv = tmp_path / "scored.csv"
    csv.write_text(
        "text,label,score\n"
        + "".join(
            f'"{t}",{labels[i % 5]},{(-0.8 + 0.4 * (i % 5)):.2f}\n'
            for i, t in enumerate(["Profit falls sharply", "Sales slip", "Board meets", "Orders rise", "Record profit", ""])
        )
    )
    m = evaluate.evaluate_file(sentiment_model / "model", csv, label_column="label", score_column="score")
    assert m["rows"] == 6 and m["scored"] == 5 and m["skipped"] == 1
    assert {"accuracy", "macro_f1", "mae_steps", "spearman", "cosine", "pearson", "mse", "confusion_matrix"} <= set(m)
    conll = tmp_path / "t.conll"
    conll.write_text("Chen B-PER\nWei I-PER\nvisited O\nMumbai B-LOC\n. O\n\nKestrel B-ORG\nLogistics I-ORG\ngrew O\n\n")
    m = evaluate.evaluate_file(ner_model / "model", conll, fmt="conll")
    assert m["kind"] == "ner" and m["scored"] == 2 and {"micro_f1", "macro_f1", "per_type"} <= set(m)
    proc = _finpipe(
        "evaluate",
        "--model",
        str(ner_model / "model"),
        "--test",
        str(conll),
        "--format",
        "conll",
        "--output",
        str(tmp_path / "m.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m.json").read_text())["micro_f1"] == m["micro_f1"]

"""The fine-tuning stages on a 2-layer BERT for a few steps: outputs, one-call reload, every
head/loss option, bad params; then `finpipe predict` and `finpipe evaluate --model` on the
models they wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import oracle_tag, tiny_finetune, token_oracle

from finpipe import predict
from finpipe.config import Finetune, parse
from finpipe.errors import UserError
from finpipe.evaluate_model import evaluate_file
from finpipe.finetune.discriminative import GradualUnfreezing, layer_of
from finpipe.finetune.load import load
from tasks import finetune_ner, finetune_sentiment

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
    assert metrics["train"]["steps"] <= 6 and metrics["this_run"]["samples_per_s"] > 0
    assert {"accuracy", "macro_f1", "mae_steps", "spearman", "cosine", "pearson", "mse"} <= set(metrics["dev"])
    assert len(metrics["dev"]["confusion_matrix"]) == 5
    kind, model, tokenizer = load(tmp / "model")
    assert kind == "sentiment" and model.spec["target"] == "ordinal" and model.spec["labels"][0] == "strongly negative"
    meta = json.loads((tmp / "pred" / "meta.json").read_text())
    rows = [json.loads(x) for x in (tmp / "pred" / "test.jsonl").read_text().splitlines()]
    assert meta["ordered"] and len(rows) > 0
    assert all(abs(sum(r["probs"]) - 1) < 1e-4 and -1 <= r["score"] <= 1 for r in rows)
    # the reloaded model predicts exactly what the stage wrote
    from finpipe.finetune.sentiment import predict as sm_predict

    clean = pd.read_parquet(clean_labelled / "sentiment" / "headlines.parquet")
    texts = clean.set_index("id").loc[[r["id"] for r in rows], "text"].tolist()
    again = sm_predict(model, tokenizer, texts, batch_size=7, max_length=48)
    assert [model.spec["labels"][i] for i in again["label"]] == [r["label"] for r in rows]
    np.testing.assert_allclose(again["score"], [r["score"] for r in rows], atol=1e-5)
    assert (tmp / "live" / "plots" / "metrics" / "eval" / "macro_f1.tsv").is_file()
    assert yaml.safe_load((tmp / "model" / "finpipe_finetune.yaml").read_text())["seed"] == 13
    assert not any((tmp / "ckpt").glob("*/checkpoint-*"))


def _recording_unfreezing(records: list[dict]) -> type:
    """The stage's own GradualUnfreezing, also recording at every optimizer step, per encoder
    depth (None = the head): which parameters had requires_grad, which received a gradient,
    which the step changed, and the learning rates of the depth's optimizer groups."""

    class Recording(GradualUnfreezing):
        def _depths(self, test) -> set:
            return {layer_of(n, self.num_layers) for n, p in self.model.named_parameters() if test(n, p)}

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            depth = {id(p): layer_of(n, self.num_layers) for n, p in self.model.named_parameters()}
            lr: dict = {}
            for group in optimizer.param_groups:
                for param in group["params"]:
                    lr.setdefault(depth[id(param)], set()).add(group["lr"])
            self._before = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            records.append(
                {
                    "step": state.global_step,
                    "trainable": self._depths(lambda n, p: p.requires_grad),
                    "gradient": self._depths(lambda n, p: p.grad is not None and bool(p.grad.any())),
                    "lr": lr,
                }
            )

        def on_optimizer_step(self, args, state, control, **kwargs):
            records[-1]["changed"] = self._depths(lambda n, p: not torch.equal(p.detach(), self._before[n]))

    return Recording


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
            "sentiment.train.unfreeze_every": 1,
            "sentiment.train.warmup_ratio": 0.0,  # every step moves what it trains
        },
        {"sentiment.tasks.headlines.target": "score"},
    ],
    ids=["weighted-ce-mean-pool-hidden", "smoothing-layer-decay-unfreezing", "score-only"],
)
def test_sentiment_head_and_loss_options(tmp_path, tiny_bert, clean_labelled, changes, monkeypatch):
    steps: list[dict] = []
    monkeypatch.setattr("finpipe.finetune.fit.GradualUnfreezing", _recording_unfreezing(steps))
    cfg = _cfg(**changes)
    metrics = _sentiment(tmp_path, tiny_bert, clean_labelled, cfg)
    _, model, _ = load(tmp_path / "model")
    if metrics["target"] == "score":
        assert "macro_f1" not in metrics["dev"] and -1 <= metrics["dev"]["cosine"] <= 1 and model.classes is None
    else:
        assert 0 <= metrics["dev"]["macro_f1"] <= 1 and model.scorer is None
    # the loss options reach the model's spec, from which its loss reads them (the loss itself:
    # test_finetune_units.test_class_weights_and_label_smoothing_reach_the_loss)
    task = cfg.sentiment.tasks["headlines"]
    assert model.spec["loss"] == task.loss and model.spec["label_smoothing"] == task.label_smoothing
    if task.loss == "weighted_cross_entropy":
        clean = pd.read_parquet(clean_labelled / "sentiment" / "headlines.parquet")
        counts = clean[clean["split"] == "train"]["label"].value_counts()
        n, k = counts.sum(), len(model.spec["labels"])
        expected = [n / (k * counts[label]) for label in model.spec["labels"]]  # every class has train rows here
        assert model.spec["class_weights"] == pytest.approx(expected) and len(set(expected)) > 1
    else:
        assert model.spec["class_weights"] is None
    assert all(p.requires_grad for p in model.parameters())  # unfreezing leaves nothing frozen
    if not cfg.sentiment.train.unfreeze_every:
        assert steps == []
        return
    # gradual unfreezing, step by step: head and pooler (depth 3) first, then one more layer a
    # step, from the top, the embeddings (0) last; what is frozen gets no gradient and stays put
    assert [r["step"] for r in steps] == list(range(6))
    for r in steps:
        lowest = max(3 - r["step"], 0)
        expected = {None} | {d for d in range(4) if d >= lowest}
        assert r["trainable"] == r["gradient"] == r["changed"] == expected, r
        # layer decay 0.5 below the top layer (2: layer 1; the pooler shares its rate), the head 3x
        assert r["lr"].keys() == {None, 0, 1, 2, 3} and all(len(rates) == 1 for rates in r["lr"].values()), r
        lr = {d: min(rates) for d, rates in r["lr"].items()}
        assert lr[2] > 0
        ratios = {d: lr[d] / lr[2] for d in lr}
        assert ratios == pytest.approx({None: 3.0, 3: 1.0, 2: 1.0, 1: 0.5, 0: 0.25}), r


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


def _expected_entities(tokenizer, text: str) -> list[dict]:
    """What `token_oracle` must yield for `text`, worked out here from the tokenizer alone: the
    oracle's tag of each word, then runs of I-ORG words joined, each B- word an entity alone."""
    out: list[dict] = []
    last = "O"
    for word, (start, end) in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text):
        tag = oracle_tag(tokenizer.tokenize(word)[0])
        if tag == "I-ORG" and last == "I-ORG":
            out[-1]["end"] = end
        elif tag != "O":
            out.append({"type": tag[2:], "start": start, "end": end})
        last = tag
    return [{**e, "text": text[e["start"] : e["end"]]} for e in out]


def test_predict_ner_offsets_map_back_to_the_exact_text(tmp_path, ner_model):
    """`finpipe predict ner` on a model whose tags are known in advance (a token oracle built from
    the fine-tuned model, see helpers.token_oracle): the entities, their types and their
    character offsets must be exactly those the tagging implies, across windows too."""
    from transformers import AutoTokenizer

    texts = [
        "Chen Wei told investors in Johannesburg that Kestrel Logistics expects stable margins.",
        "  Shares of  Aurelia Mining (AUR.L) rose in Mumbai after Elena Petrova's talk, said Müller-Lüdenscheidt.",
        " ".join(["Corvallis Motors opened a plant near Mumbai employing about 5000 people ."] * 6),  # several windows
    ]
    oracle = token_oracle(ner_model / "model", tmp_path / "oracle")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    proc = _finpipe("predict", "ner", "--model", str(oracle), "--input", str(src), "--output", "-")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["text"] for r in records] == texts
    tokenizer = AutoTokenizer.from_pretrained(oracle)
    for rec, text in zip(records, texts, strict=True):
        assert rec["entities"] == _expected_entities(tokenizer, text)
        for ent in rec["entities"]:
            assert text[ent["start"] : ent["end"]] == ent["text"] == ent["text"].strip() != ""
    names = [[e["text"] for e in r["entities"]] for r in records]
    assert names[0] == ["Chen Wei", "Johannesburg", "Kestrel Logistics"]
    assert {"Shares", "Aurelia Mining", "Mumbai", "Elena Petrova", "Müller", "Lüdenscheidt"} <= set(names[1])
    assert names[2] == ["Corvallis Motors", "Mumbai", "5000"] * 6  # read from windows of 16 tokens, stitched
    assert [e["type"] for e in records[2]["entities"]] == ["ORG", "ORG", "PER"] * 6


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
    m = evaluate_file(sentiment_model / "model", csv, label_column="label", score_column="score")
    assert m["rows"] == 6 and m["scored"] == 5 and m["skipped"] == 1
    assert {"accuracy", "macro_f1", "mae_steps", "spearman", "cosine", "pearson", "mse", "confusion_matrix"} <= set(m)
    conll = tmp_path / "t.conll"
    conll.write_text("Chen B-PER\nWei I-PER\nvisited O\nMumbai B-LOC\n. O\n\nKestrel B-ORG\nLogistics I-ORG\ngrew O\n\n")
    m = evaluate_file(ner_model / "model", conll, fmt="conll")
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


def test_evaluate_model_on_a_score_only_file_and_io_tags(tmp_path, sentiment_model, ner_model):
    """`--label-column none` scores a file that has scores and no labels (SemEval-style);
    `--tag-scheme io` reads an IO-tagged CoNLL file as ingest does (FIN5-style): the same
    sentences tagged IO and BIO score the same."""
    scores = tmp_path / "scores.csv"
    scores.write_text("text,score\nProfit falls sharply,-0.8\nSales slip,-0.3\nOrders rise,0.4\nRecord profit,0.9\n")
    out = tmp_path / "s.json"
    proc = _finpipe(
        "evaluate", "--model", str(sentiment_model / "model"), "--test", str(scores),
        "--label-column", "none", "--score-column", "score", "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())
    assert m["scored"] == 4 and "cosine" in m and "accuracy" not in m

    bio = "Chen B-PER\nWei I-PER\nvisited O\nMumbai B-LOC\n. O\n\nKestrel B-ORG\nLogistics I-ORG\ngrew O\n\n"
    io = bio.replace("B-", "I-")
    (tmp_path / "bio.conll").write_text(bio)
    (tmp_path / "io.conll").write_text(io)
    as_bio = evaluate_file(ner_model / "model", tmp_path / "bio.conll", fmt="conll")
    as_io = evaluate_file(ner_model / "model", tmp_path / "io.conll", fmt="conll", tag_scheme="io")
    assert as_io["scored"] == 2 and as_io["micro_f1"] == as_bio["micro_f1"]
    assert (as_io["tag_scheme"], as_io["tags_converted"]) == ("io", 3)  # Chen, Mumbai, Kestrel
    assert (as_bio["tag_scheme"], as_bio["tags_converted"]) == ("bio", 0)
    proc = _finpipe(
        "evaluate", "--model", str(ner_model / "model"), "--test", str(tmp_path / "io.conll"),
        "--format", "conll", "--tag-scheme", "io", "--output", str(tmp_path / "n.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "n.json").read_text())["micro_f1"] == as_bio["micro_f1"]

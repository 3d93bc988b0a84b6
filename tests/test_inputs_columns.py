"""Issue #15 points 1 and 4: a table's text, label and score columns are detected by their usual
names when the configured ones are absent, in `finpipe check`, the ingest stage and `finpipe
evaluate --model` alike (one code path: finpipe.labelled.read_sentiment_dataset). Fixtures are
written here; none is copied from ../shared/data."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from finpipe.cli import main
from finpipe.config import DEFAULT_BINS, CorpusIngest, SentimentDataset, SentimentIngest, parse
from finpipe.errors import UserError
from finpipe.labelled import read_sentiment_dataset
from tasks import ingest

HEADLINES = [
    ("Norvik books second consecutive quarter of sales growth", 0.43),
    ("Castellan posts drop in first-quarter revenue; warns on full year", -0.344),
    ("Aurelia shares jump after upbeat outlook", 0.61),
    ("Kestrel cuts jobs as orders slump", -0.72),
    ("Brightwater holds dividend steady", 0.02),
    ("Orion Mining lifts output forecast", 0.35),
]


def semeval_like(path: Path) -> Path:
    """SemEval-2017 task 5 headline layout: a JSON array of {id, company, title, sentiment}."""
    records = [{"id": i + 2, "company": t.split()[0], "title": t, "sentiment": s} for i, (t, s) in enumerate(HEADLINES)]
    path.write_text(json.dumps(records, indent=4))
    return path


def _spec(path: Path, **spec) -> SentimentDataset:
    return parse(SentimentDataset, {"path": path.name, "dev_fraction": 0.0, "test_fraction": 0.0, **spec})


def test_semeval_headlines_check_needs_no_flags(tmp_path, capsys, caplog):
    """text=title and score=sentiment (numbers) detected; no label column, so the classes come
    from the score bins."""
    path = semeval_like(tmp_path / "Headline_Trainingdata.json")
    with caplog.at_level(logging.INFO, logger="finpipe.readers"):
        assert main(["check", "sentiment", str(path), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["rows_in"], report["rows_passed"]) == (6, 6)
    logged = [r.getMessage() for r in caplog.records]
    assert "Headline_Trainingdata.json: text column: title (detected)" in logged
    assert "Headline_Trainingdata.json: score column: sentiment (detected, holds numbers)" in logged
    df, spec = read_sentiment_dataset(tmp_path, "h", _spec(path), seed=0)
    assert (spec.text_column, spec.label_column, spec.score_column) == ("title", None, "sentiment")
    assert list(df["text"])[0] == HEADLINES[0][0] and list(df["label"])[:2] == ["mildly positive", "mildly negative"]


def test_ingest_stage_writes_what_it_detected_into_the_meta(tmp_path):
    semeval_like(tmp_path / "h.json")
    cfg = parse(SentimentIngest, {"datasets": {"h": {"path": "h.json"}}})
    ingest.run_sentiment(cfg, tmp_path, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "h.meta.json").read_text())
    assert meta == {"labels": DEFAULT_BINS.labels, "ordered": True, "has_score": True, "score_range": [-1.0, 1.0]}


def test_a_sentiment_column_of_strings_is_the_label_column(tmp_path, capsys):
    path = tmp_path / "s.csv"
    path.write_text("headline,sentiment\nProfit rose,positive\nSales fell,negative\nBoard met,neutral\n")
    df, spec = read_sentiment_dataset(tmp_path, "s", _spec(path, labels=["negative", "neutral", "positive"]), seed=0)
    assert (spec.text_column, spec.label_column, spec.score_column) == ("headline", "sentiment", None)
    assert list(df["label"]) == ["positive", "negative", "neutral"]
    assert main(["check", "sentiment", str(path)]) == 0  # labels: negative/neutral/positive by default


def test_configured_columns_that_exist_always_win(tmp_path):
    """A configured column present in the file is used even where a usual name is there too,
    and a label file's extra numbers are not taken as scores."""
    path = tmp_path / "s.csv"
    path.write_text("text,headline,label,score\nlong text one,Profit rose,positive,0.5\nlong text two,Sales fell,negative,-0.5\n")
    _, spec = read_sentiment_dataset(tmp_path, "s", _spec(path, text_column="headline", labels=["negative", "positive"]), seed=0)
    assert (spec.text_column, spec.label_column, spec.score_column) == ("headline", "label", None)


def test_detection_ignores_case_and_separators(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("Title,Sentiment Score\nProfit rose,0.5\nSales fell,-0.5\n")
    _, spec = read_sentiment_dataset(tmp_path, "s", _spec(path), seed=0)
    assert (spec.text_column, spec.label_column, spec.score_column) == ("Title", None, "Sentiment Score")


def test_ambiguous_columns_are_an_error_listing_them(tmp_path, capsys):
    path = tmp_path / "s.csv"
    path.write_text("title,body,label\nProfit rose,Norvik said profit rose,positive\n")
    assert main(["check", "sentiment", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"finpipe check: error: {path}: no column 'text' (param text_column), and several columns could hold the text: "
        "['title', 'body']; set text_column (--text-column) to one of them"
    )
    assert main(["check", "sentiment", str(path), "--text-column", "body"]) == 0  # the flag settles it


def test_no_label_nor_score_column_lists_both_name_lists(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("text,mood\nProfit rose,good\n")
    with pytest.raises(UserError) as err:
        read_sentiment_dataset(tmp_path, "s", _spec(path), seed=0)
    assert str(err.value) == (
        f"{path}: no column 'label' (param label_column), nor one of the usual label columns (label, class, "
        "sentiment (strings)) or score columns (score, sentiment (numbers), sentiment_score); columns are ['text', 'mood']; "
        "set label_column or score_column"
    )


def test_corpus_text_column_detected_apart_from_the_configured_title(tmp_path, caplog):
    rows = [{"doc": "a", "title": "Norvik rises", "body": "Norvik rose. Sales fell."}]
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = {"name": "n", "path": "n.jsonl", "id_column": "doc"}
    cfg = parse(CorpusIngest, {"sources": [{**source, "title_column": "title"}]})
    with caplog.at_level(logging.INFO, logger="finpipe.readers"):
        metrics = ingest.run_corpus(cfg, tmp_path, tmp_path / "out")
    assert metrics["sentences"] == 3 and "n.jsonl: text column: body (detected)" in [r.getMessage() for r in caplog.records]
    with pytest.raises(UserError, match=r"several columns could hold the text: \['title', 'body'\]"):
        ingest.run_corpus(parse(CorpusIngest, {"sources": [source]}), tmp_path, tmp_path / "out2")


def test_evaluate_model_reads_a_file_as_check_does(tmp_path, monkeypatch):
    """`finpipe evaluate --model M --test FILE`, no column flags, on the SemEval layout: the
    text comes from `title` and the gold scores from `sentiment`. The model is a stub that
    knows each headline's score, so a perfect cosine shows the columns were the right ones."""
    import finpipe.finetune.load as load_mod
    import finpipe.finetune.sentiment as sm
    import finpipe.training as training

    gold = dict(HEADLINES)
    spec = {"labels": list(DEFAULT_BINS.labels), "score_range": [-1.0, 1.0], "target": "classes", "max_seq_length": 32}
    monkeypatch.setattr(load_mod, "load", lambda path: ("sentiment", SimpleNamespace(spec=spec), None))
    monkeypatch.setattr(training, "use_bf16", lambda setting: False)
    monkeypatch.setattr(sm, "predict", lambda model, tok, texts, **kw: {"score": np.array([gold[t] for t in texts])})
    path = semeval_like(tmp_path / "h.json")
    assert main(["evaluate", "--model", str(tmp_path), "--test", str(path), "--output", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["columns"] == {"text": "title", "label": None, "score": "sentiment"}
    assert (m["rows"], m["scored"], m["cosine"], m["mse"], m["damage"]) == (6, 6, 1.0, 0.0, [])

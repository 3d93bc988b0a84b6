import json
from fractions import Fraction

import pytest
from test_check_split import leaky_conll

from finpipe.config import NerIngest, SentimentIngest, Validate, parse
from finpipe.errors import ValidationFailed
from finpipe.validation_report import passing_fraction
from tasks import ingest, validate


def _ingest(tmp_path, lines: list[str]):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "fpb.txt").write_text("\n".join(lines) + "\n")
    cfg = parse(
        SentimentIngest,
        {
            "datasets": {
                "fpb": {
                    "path": "fpb.txt",
                    "labels": ["negative", "neutral", "positive"],
                    "dev_fraction": 0.2,
                    "test_fraction": 0.2,
                }
            }
        },
    )
    ingest.run_sentiment(cfg, raw, tmp_path / "ingested")
    return tmp_path / "ingested"


def test_writes_clean_quarantine_and_report(tmp_path):
    lines = [f"Sentence number {i} about profit .@{['negative', 'neutral', 'positive'][i % 3]}" for i in range(200)]
    lines[10] = "no separator here"
    lines += ["Same text twice .@positive", "Same text twice .@positive"]  # groups never straddle splits
    ingested = _ingest(tmp_path, lines)
    metrics = validate.run_sentiment(
        parse(Validate, {"max_bad_fraction": 0.05}), ingested, tmp_path / "clean", tmp_path / "q", tmp_path / "reports"
    )
    assert metrics == {"fpb": {"rows_in": 202, "rows_passed": 201, "rows_quarantined": 1, "bad_fraction": 0.00495}}
    report = json.loads((tmp_path / "reports" / "sentiment.json").read_text())
    assert report["datasets"]["fpb"]["checks"] == {"unparsable row": 1}
    assert report["datasets"]["fpb"]["first_failures"][0]["origin"].endswith("fpb.txt:line 11")
    assert "| fpb | 202 | 201 | 1 |" in (tmp_path / "reports" / "sentiment.md").read_text()
    quarantined = [json.loads(x) for x in (tmp_path / "q" / "fpb.jsonl").read_text().splitlines()]
    assert quarantined[0]["reasons"] == ["no '@' separating sentence and label"]
    import pandas as pd

    clean = pd.read_parquet(tmp_path / "clean" / "fpb.parquet")
    assert len(clean) == 201 and set(clean["split"]) == {"train", "dev", "test"}
    assert clean[clean["text"] == "Same text twice ."]["split"].nunique() == 1


def test_fails_above_threshold_naming_file_and_rows(tmp_path):
    lines = [f"Line {i} .@positive" for i in range(50)] + ["bad line one", "Bad label .@great"]
    ingested = _ingest(tmp_path, lines)
    with pytest.raises(ValidationFailed) as err:
        validate.run_sentiment(parse(Validate, {}), ingested, tmp_path / "clean", tmp_path / "q", tmp_path / "reports")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("validate sentiment/fpb: 2 of 52 rows (3.8%) failed, above max_bad_fraction 1.0%, in ")
    assert "fpb.txt:line 51: no '@' separating sentence and label" in msg
    assert "fpb.txt:line 52: label 'great' not in ['negative', 'neutral', 'positive']" in msg
    assert msg.endswith(
        f"To pass: fix or remove the failing texts in {tmp_path / 'raw' / 'fpb.txt'} (listed in {tmp_path / 'q' / 'fpb.jsonl'}), "
        "or raise validate.max_bad_fraction to at least 0.039 in params.yaml"
    )
    assert (tmp_path / "reports" / "sentiment.json").exists()  # the report is written before failing


def _validate_ner(tmp_path, max_bad_fraction: float) -> None:
    cfg = parse(Validate, {"max_bad_fraction": max_bad_fraction})
    validate.run_ner(cfg, tmp_path / "in", tmp_path / "clean", tmp_path / "q", tmp_path / "r")


def test_a_leak_failure_says_what_to_remove_and_the_max_bad_fraction_that_passes(tmp_path):
    leaky_conll(tmp_path / "news.conll")
    ingest.run_ner(parse(NerIngest, {"datasets": {"news": {"path": "news.conll"}}}), tmp_path, tmp_path / "in")
    with pytest.raises(ValidationFailed) as err:
        _validate_ner(tmp_path, 0.01)
    assert str(err.value).endswith(
        f"To pass: remove the duplicated sentences from {tmp_path / 'news.conll'} (listed in {tmp_path / 'q' / 'news.jsonl'}), "
        "or raise validate.max_bad_fraction to at least 0.034 in params.yaml"
    )
    with pytest.raises(ValidationFailed):
        _validate_ner(tmp_path, 0.033)  # 2 of 60 is 0.0333...: rounded up, not to the nearest
    _validate_ner(tmp_path, 0.034)  # the suggested value passes


def test_the_suggested_fraction_passes_and_is_the_smallest_with_3_decimals():
    for total in range(1, 301):
        for bad in range(total + 1):
            need = passing_fraction({"rows_in": total, "rows_quarantined": bad})
            assert bad / total <= need  # the pass test of finpipe.validation_report.summarise
            assert Fraction(need).limit_denominator(1000) - Fraction(bad, total) < Fraction(1, 1000)


def test_leak_between_user_splits_is_quarantined(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.csv").write_text("text,label\nProfit rose,positive\nSales fell,negative\n")
    (raw / "test.csv").write_text("text,label\nprofit  ROSE,positive\nCosts rose,negative\n")
    cfg = parse(
        SentimentIngest,
        {
            "datasets": {
                "s": {
                    "splits": {"train": "train.csv", "test": "test.csv"},
                    "labels": ["negative", "positive"],
                    "dev_fraction": 0.0,
                }
            }
        },
    )
    ingest.run_sentiment(cfg, raw, tmp_path / "ingested")
    with pytest.raises(ValidationFailed):
        validate.run_sentiment(parse(Validate, {}), tmp_path / "ingested", tmp_path / "c", tmp_path / "q", tmp_path / "r")
    report = json.loads((tmp_path / "r" / "sentiment.json").read_text())
    assert report["datasets"]["s"]["checks"] == {"text also appears in the train split": 1}


def test_repeated_corpus_ids_are_in_the_validation_report(tmp_path):
    """Issue #15 point 2: ingest keeps a document whose id an earlier one has, with other text, as
    `<id>#2`, and notes the count and first ids beside the corpus (corpus.notes.json, in the
    folder validate reads), so the validation report has them too. A corpus without such ids
    gets no notes file: its ingested folder is what it always was."""
    from finpipe.config import CorpusIngest

    rows = [{"id": "a", "text": "Norvik rose. Sales fell."}, {"id": "a", "text": "Castellan hired staff."}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse(CorpusIngest, {"sources": [{"name": "d", "path": "d.jsonl", "id_column": "id"}]})
    ingest.run_corpus(cfg, tmp_path, tmp_path / "in")
    validate.run_corpus(parse(Validate, {}), tmp_path / "in", tmp_path / "clean", tmp_path / "q", tmp_path / "rep")
    report = json.loads((tmp_path / "rep" / "corpus.json").read_text())["datasets"]["corpus"]
    assert (report["colliding_ids"], report["first_colliding_ids"]) == (1, ["d:a"])
    assert "1 document reuses the id of an earlier document with other text" in (tmp_path / "rep" / "corpus.md").read_text()
    (tmp_path / "d.jsonl").write_text(json.dumps(rows[0]) + "\n")
    ingest.run_corpus(cfg, tmp_path, tmp_path / "in")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["corpus.parquet"]
    validate.run_corpus(parse(Validate, {}), tmp_path / "in", tmp_path / "clean", tmp_path / "q", tmp_path / "rep")
    report = json.loads((tmp_path / "rep" / "corpus.json").read_text())["datasets"]["corpus"]
    assert (report["colliding_ids"], report["first_colliding_ids"], report["damage"]) == (0, [], [])

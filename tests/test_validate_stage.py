import json

import pytest

from finpipe.config import SentimentIngest, Validate, parse
from finpipe.errors import ValidationFailed
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
    assert (tmp_path / "reports" / "sentiment.json").exists()  # the report is written before failing


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

"""Issue #15 point 3: a file cut short or broken inside its container (a Reuters record without
</REUTERS>, a JSON array cut inside a record, a gzip stream that ends early, a JSONL file whose
last line is cut) keeps its complete records and reports the damage with file and position:
the ingest stage warns and counts it, validate reports it, `finpipe check` exits 1. Fixtures
are written here; none is copied from ../shared/data."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
from helpers import corpus

from finpipe.cli import main
from finpipe.config import CorpusIngest, NerIngest, SentimentIngest, Validate, parse
from finpipe.errors import UserError
from finpipe.readers.corpus import read_corpus
from tasks import ingest, validate

RECORD = """<REUTERS TOPICS="YES" NEWID="{id}">
<DATE>26-FEB-1987 15:01:01.79</DATE>
<TEXT>&#2;
<TITLE>{title}</TITLE>
<BODY>{body}
 Reuter
&#3;</BODY></TEXT>
</REUTERS>
"""
HEAD = '<!DOCTYPE lewis SYSTEM "lewis.dtd">\n'


def sgml(*records: tuple[int, str, str]) -> str:
    return HEAD + "".join(RECORD.format(id=i, title=t, body=b) for i, t, b in records)


NORVIK = (7, "NORVIK PROFIT UP", "Norvik said profit rose 12 pct.")
CASTELLAN = (8, "CASTELLAN HIRES", "Castellan Bank hired staff. It opened in Oslo.")
KESTREL = (9, "KESTREL CUTS JOBS", "Kestrel cut jobs as orders fell.")


def _source(path: str, **spec) -> CorpusIngest:
    return parse(CorpusIngest, {"sources": [{"name": "r", "path": path, **spec}]})


def _read(tmp_path: Path, name: str, **spec):
    damage: list = []
    docs = list(read_corpus(tmp_path, _source(name, **spec).sources[0], damage))
    return docs, [str(d) for d in damage]


def test_reuters_record_cut_short_is_reported_not_taken_as_a_document(tmp_path):
    full = sgml(NORVIK, CASTELLAN)
    cut = full[: full.index("It opened")]  # the file ends inside record 8's BODY
    (tmp_path / "reut2-000.sgm").write_bytes(cut.encode("latin-1"))
    docs, damage = _read(tmp_path, "reut2-000.sgm")
    assert [d.doc_id for d in docs] == ["r:7"]
    offset = cut.index('<REUTERS TOPICS="YES" NEWID="8"')
    assert damage == [
        f"{tmp_path / 'reut2-000.sgm'}: line 10, byte {offset} (NEWID=8): the file ends inside this record "
        "(no </REUTERS>): skipped it, kept the 1 record before it"
    ]
    with pytest.raises(UserError, match="NEWID=8"):  # a caller that collects no damage is stopped by it
        corpus(tmp_path, [{"name": "r", "path": "reut2-000.sgm"}])


def test_reuters_record_without_its_closing_tag_is_not_merged_with_the_next(tmp_path):
    broken = sgml(NORVIK, CASTELLAN, KESTREL).replace(
        '</REUTERS>\n<REUTERS TOPICS="YES" NEWID="9"', '<REUTERS TOPICS="YES" NEWID="9"'
    )
    (tmp_path / "r.sgm").write_text(broken, encoding="latin-1")
    docs, damage = _read(tmp_path, "r.sgm")
    assert [d.doc_id for d in docs] == ["r:7", "r:9"] and "Castellan" not in docs[1].text
    assert len(damage) == 1 and "(NEWID=8): no </REUTERS> before the next record: skipped it" in damage[0]


def test_json_array_cut_inside_a_record(tmp_path, capsys):
    records = [{"id": i, "text": f"Headline {i} about profit", "label": "positive"} for i in range(4)]
    text = json.dumps(records, indent=2)
    (tmp_path / "s.json").write_text(text[: text.index('"id": 2') + 10])
    assert main(["check", "sentiment", str(tmp_path / "s.json"), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["rows_in"], report["rows_passed"], report["passed"]) == (2, 2, False)
    assert report["damage"] == [
        f"{tmp_path / 's.json'}: line 12 (record 3): the file ends inside this record; kept the 2 complete records before it"
    ]
    assert "## s.json: damaged input" in out
    assert out.rstrip().endswith(
        f"To pass: restore the complete {tmp_path / 's.json'} (damaged input above), then check it again"
    )


def test_json_array_broken_in_the_middle_and_broken_from_the_start(tmp_path):
    (tmp_path / "c.json").write_text('[{"text": "Profit rose."}, {"text": "Sales fell."} {"text": "Lost."}]')
    docs, damage = _read(tmp_path, "c.json")
    assert [d.text for d in docs] == ["Profit rose.", "Sales fell."]
    assert damage == [
        f"{tmp_path / 'c.json'}: line 1 (after record 2): expected ',' or ']'; kept the 2 complete records before it"
    ]
    (tmp_path / "d.json").write_text('[{"text": "Profit ro')
    with pytest.raises(UserError, match=r"d.json: line 1: invalid JSON"):  # nothing complete: unusable
        _read(tmp_path, "d.json")


def test_gzip_inputs_read_as_the_plain_file_and_a_cut_one_keeps_its_complete_lines(tmp_path, capsys):
    lines = "".join(json.dumps({"id": i, "text": f"Document {i} rose. It fell again."}) + "\n" for i in range(300))
    (tmp_path / "d.jsonl").write_text(lines)
    packed = gzip.compress(lines.encode(), mtime=0)
    (tmp_path / "d.jsonl.gz").write_bytes(packed)
    plain, _ = _read(tmp_path, "d.jsonl", id_column="id")
    whole, damage = _read(tmp_path, "d.jsonl.gz", id_column="id")
    assert [(d.doc_id, d.text) for d in whole] == [(d.doc_id, d.text) for d in plain] and damage == []
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    docs, damage = _read(tmp_path, "cut.jsonl.gz", id_column="id")
    kept = len(docs)
    assert 0 < kept < 300 and [d.text for d in docs] == [d.text for d in plain[:kept]]
    assert damage == [
        f"{tmp_path / 'cut.jsonl.gz'}: line {kept + 1} of the gunzipped content: the gzip data end early, at byte "
        f"{len(packed) // 2} of the file; kept the {kept} complete lines before it"
    ]
    assert main(["check", "corpus", str(tmp_path / "cut.jsonl.gz"), "--id-column", "id"]) == 1
    assert "the gzip data end early" in capsys.readouterr().out


def test_gzip_sentiment_and_ner_files_and_gzip_parquet(tmp_path, capsys):
    (tmp_path / "s.csv.gz").write_bytes(gzip.compress(b"text,label\nProfit rose,positive\nSales fell,negative\n"))
    assert main(["check", "sentiment", str(tmp_path / "s.csv.gz")]) == 0
    (tmp_path / "n.conll.gz").write_bytes(gzip.compress(b"Norvik B-ORG\nrose O\n\nShares O\nfell O\n\n"))
    assert main(["check", "ner", str(tmp_path / "n.conll.gz"), "--dev-fraction", "0", "--test-fraction", "0"]) == 0
    (tmp_path / "p.parquet").write_bytes(gzip.compress(b"PAR1 not really"))
    assert main(["check", "sentiment", str(tmp_path / "p.parquet")]) == 2
    assert "a gzip-compressed Parquet file; decompress it (gunzip)" in capsys.readouterr().err


def test_jsonl_cut_inside_its_last_line(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "Profit rose."}\n{"text": "Sales fell."}\n{"text": "Costs ro')
    docs, damage = _read(tmp_path, "c.jsonl")
    assert [d.text for d in docs] == ["Profit rose.", "Sales fell."]
    assert damage == [
        f"{tmp_path / 'c.jsonl'}: line 3: the file ends inside this line (not valid JSON, no newline); "
        "kept the 2 records before it"
    ]
    (tmp_path / "bad.jsonl").write_text('{"text": "Profit rose."}\n{"text": broken\n{"text": "Sales fell."}\n')
    with pytest.raises(UserError, match="bad.jsonl: line 2: invalid JSON"):  # a bad line inside: unusable, as before
        _read(tmp_path, "bad.jsonl")


def test_ingest_warns_counts_and_validate_reports_the_damage(tmp_path, caplog):
    full = sgml(NORVIK, CASTELLAN)
    (tmp_path / "r.sgm").write_text(full[: full.index("It opened")], encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="tasks.ingest"):
        metrics = ingest.run_corpus(_source("r.sgm"), tmp_path, tmp_path / "in")
    assert metrics["damaged_inputs"] == 1 and "NEWID=8" in metrics["damage"][0]
    assert any("corpus: damaged input:" in r.getMessage() and "NEWID=8" in r.getMessage() for r in caplog.records)
    validate.run_corpus(parse(Validate, {}), tmp_path / "in", tmp_path / "clean", tmp_path / "q", tmp_path / "rep")
    report = json.loads((tmp_path / "rep" / "corpus.json").read_text())["datasets"]["corpus"]
    assert report["damage"] == metrics["damage"] and report["passed"]  # reported; the stage goes on with the rest
    assert f"## corpus: damaged input\n\n- {metrics['damage'][0]}" in (tmp_path / "rep" / "corpus.md").read_text()


def test_labelled_sets_carry_their_damage_to_the_validation_report(tmp_path):
    text = json.dumps([{"text": f"Headline {i} on profit", "label": "positive"} for i in range(3)])
    (tmp_path / "s.json").write_text(text[:-30])
    (tmp_path / "n.conll.gz").write_bytes(gzip.compress(b"Norvik B-ORG\nrose O\n\nShares O\nfell O\n\n")[:-6])
    cfg = parse(SentimentIngest, {"datasets": {"s": {"path": "s.json", "labels": ["positive"], "dev_fraction": 0.0}}})
    sentiment = ingest.run_sentiment(cfg, tmp_path, tmp_path / "in-s")
    ner = ingest.run_ner(parse(NerIngest, {"datasets": {"n": {"path": "n.conll.gz"}}}), tmp_path, tmp_path / "in-n")
    assert sentiment["s"]["damaged_inputs"] == 1 and ner["n"]["damaged_inputs"] == 1
    cfg_v = parse(Validate, {"max_bad_fraction": 1.0})
    validate.run_sentiment(cfg_v, tmp_path / "in-s", tmp_path / "c-s", tmp_path / "q-s", tmp_path / "rep")
    validate.run_ner(cfg_v, tmp_path / "in-n", tmp_path / "c-n", tmp_path / "q-n", tmp_path / "rep")
    assert json.loads((tmp_path / "rep" / "sentiment.json").read_text())["datasets"]["s"]["damage"] == sentiment["s"]["damage"]
    assert json.loads((tmp_path / "rep" / "ner.json").read_text())["datasets"]["n"]["damage"] == ner["n"]["damage"]

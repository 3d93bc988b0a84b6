"""`finpipe check KIND PATH`: exit 0 pass, 1 fail, 2 unusable; report on stdout."""

import json

from finpipe.cli import main


def test_check_pass(tmp_path, capsys):
    (tmp_path / "s.csv").write_text("text,label\nProfit rose,positive\nSales fell,negative\n")
    assert main(["check", "sentiment", str(tmp_path / "s.csv"), "--label-column", "label"]) == 0
    assert "| s.csv | 2 | 2 | 0 |" in capsys.readouterr().out


def test_check_fail_writes_json(tmp_path, capsys):
    (tmp_path / "fpb.txt").write_text("Profit rose .@positive\nno separator\n")
    assert main(["check", "sentiment", str(tmp_path / "fpb.txt"), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "**FAIL**" in out and "no '@' separating sentence and label" in out
    assert json.loads((tmp_path / "r.json").read_text())["rows_quarantined"] == 1


def test_check_unusable(tmp_path, capsys):
    assert main(["check", "ner", str(tmp_path / "missing.conll")]) == 2
    assert capsys.readouterr().err.strip() == f"finpipe check: error: {tmp_path / 'missing.conll'}: file not found"
    (tmp_path / "x.weird").write_text("hello")
    assert main(["check", "corpus", str(tmp_path / "x.weird")]) == 2
    assert "cannot tell the format from the extension '.weird'" in capsys.readouterr().err


def test_check_ner_and_corpus_formats(tmp_path, capsys):
    (tmp_path / "n.conll").write_text("Norvik NNP B-NP I-ORG\nrose VBD B-VP O\n\n")
    assert main(["check", "ner", str(tmp_path / "n.conll"), "--tag-scheme", "io"]) == 0
    (tmp_path / "c.csv").write_text("body\nProfit rose. Sales fell.\n")
    assert main(["check", "corpus", str(tmp_path / "c.csv"), "--text-column", "body"]) == 0
    (tmp_path / "f.csv").write_text("gold_label,gold_token,doc_idx,sent_idx\n5,Norvik,0,0\n0,rose,0,0\n9,x,0,1\n")
    assert main(["check", "ner", str(tmp_path / "f.csv"), "--format", "finer_csv"]) == 1
    assert "line 4: tag code '9' is not one of 0-6" in capsys.readouterr().out


def test_check_score_file(tmp_path):
    (tmp_path / "h.json").write_text(
        json.dumps([{"title": "Norvik soars", "sentiment": 0.8}, {"title": "Castellan slips", "sentiment": -0.2}])
    )
    assert main(["check", "sentiment", str(tmp_path / "h.json"), "--text-column", "title", "--score-column", "sentiment"]) == 0

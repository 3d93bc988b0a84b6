"""Every bad input of issue #2: a one-line UserError naming file/line/key, or a quarantine row
with its reason. Never a traceback, never a silent drop."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import corpus, ner, real_data_present, reasons, sentiment

from finpipe.config import load_params
from finpipe.errors import UserError


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        sentiment(tmp_path / "nope.csv", score_column="score", label_column=None)
    assert one_line(err) == f"{tmp_path / 'nope.csv'}: file not found"


def test_empty_file(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(UserError) as err:
        sentiment(tmp_path / "e.csv")
    assert one_line(err).endswith("e.csv: file is empty")


def test_header_only_csv(tmp_path):
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(UserError) as err:
        sentiment(tmp_path / "h.csv", labels=["neg", "pos"])
    assert one_line(err).endswith("h.csv: no data rows")


def test_misnamed_column(tmp_path):
    """A text column under no usual name: the error names the param, the usual names and the columns."""
    (tmp_path / "s.csv").write_text("phrase,label\nProfit rose,positive\n")
    with pytest.raises(UserError) as err:
        sentiment(tmp_path / "s.csv", labels=["negative", "positive"])
    assert one_line(err) == (
        f"{tmp_path / 's.csv'}: no column 'text' (param text_column), nor one of the usual text columns "
        "(text, title, headline, sentence, body, content); columns are ['phrase', 'label']"
    )


def test_missing_column_in_corpus_csv(tmp_path):
    (tmp_path / "c.csv").write_text("id,words\n1,Profit rose.\n")
    with pytest.raises(UserError) as err:
        corpus(tmp_path, [{"name": "c", "path": "c.csv"}])
    assert "c.csv: no column 'text' (param text_column), nor one of the usual text columns" in one_line(err)


def test_undecodable_bytes_with_explicit_encoding(tmp_path):
    (tmp_path / "s.csv").write_bytes(b"text,label\nok line,positive\nbad \xff\xfe byte,negative\n")
    with pytest.raises(UserError) as err:
        sentiment(tmp_path / "s.csv", encoding="utf-8", labels=["negative", "positive"])
    msg = one_line(err)
    assert "s.csv: line 3: bytes" in msg and "not valid utf-8" in msg


def test_undecodable_bytes_in_streamed_corpus(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(b'{"text": "fine."}\n{"text": "caf\xe9 bad."}\n')
    with pytest.raises(UserError) as err:
        corpus(tmp_path, [{"name": "c", "path": "c.jsonl", "encoding": "utf-8"}])
    assert "c.jsonl: line 2: bytes" in one_line(err)


def test_fpb_latin1_detected_and_line_without_at(tmp_path):
    (tmp_path / "fpb.txt").write_bytes(
        "Profit rose in Espoo, Finland .@positive\nNo separator on this line\nSales fell at M\xe4ntt\xe4 .@negative\n".encode(
            "latin-1"
        )
    )
    df, outcome = sentiment(tmp_path / "fpb.txt", labels=["negative", "neutral", "positive"])
    assert "Mänttä" in df.loc[2, "text"]
    assert reasons(outcome) == [["no '@' separating sentence and label"]]
    assert outcome.quarantined.iloc[0]["origin"].endswith("fpb.txt:line 2")


def test_fpb_splits_on_last_at(tmp_path):
    (tmp_path / "fpb.txt").write_text("Contact ir@norvik.example for details .@neutral\n")
    df, outcome = sentiment(tmp_path / "fpb.txt", labels=["negative", "neutral", "positive"])
    assert df.loc[0, "text"] == "Contact ir@norvik.example for details ." and len(outcome.passed) == 1


def test_label_not_in_set(tmp_path):
    """The rejected value is named, with the allowed label it nearly is; counts stay per rule."""
    (tmp_path / "s.csv").write_text("text,label\nProfit rose,positive\nProfit flat,meh\nLoss,Negative\nOops,postive\n")
    _, outcome = sentiment(tmp_path / "s.csv", labels=["negative", "neutral", "positive"])
    assert reasons(outcome) == [
        ["label 'meh' not in ['negative', 'neutral', 'positive']"],
        ["label 'Negative' not in ['negative', 'neutral', 'positive'] (did you mean 'negative'?)"],
        ["label 'postive' not in ['negative', 'neutral', 'positive'] (did you mean 'positive'?)"],
    ]
    assert outcome.check_counts == {"label not in ['negative', 'neutral', 'positive']": 3}


def test_label_near_match_across_case_spaces_underscores_hyphens(tmp_path):
    """The allowed labels come from the schema itself (not read back out of the message), so
    labels with spaces, quotes or brackets are named as they are."""
    labels = ["strongly negative", "it's [fine]", "mildly positive", "n a"]
    rows = ["text,label", "A fall,strongly_negative", "A rise,Mildly-Positive", 'Okay,"IT\'S  [FINE]"', "Nope,N-A"]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    _, outcome = sentiment(tmp_path / "s.csv", labels=labels)
    allowed = "['strongly negative', \"it's [fine]\", 'mildly positive', 'n a']"
    assert reasons(outcome) == [
        [f"label 'strongly_negative' not in {allowed} (did you mean 'strongly negative'?)"],
        [f"label 'Mildly-Positive' not in {allowed} (did you mean 'mildly positive'?)"],
        [f'label "IT\'S  [FINE]" not in {allowed} (did you mean "it\'s [fine]"?)'],
        [f"label 'N-A' not in {allowed} (did you mean 'n a'?)"],  # too short for a spelling match
    ]


@pytest.mark.parametrize(
    ("score", "reason"), [("1.7", "score outside [-1.0, 1.0]"), ("abc", "score 'abc' is not a number"), ("", "score is missing")]
)
def test_bad_scores(tmp_path, score, reason):
    (tmp_path / "s.csv").write_text(f"text,score\nProfit rose sharply,0.8\nSomething odd,{score}\n")
    df, outcome = sentiment(tmp_path / "s.csv", label_column=None, score_column="score")
    assert df.loc[0, "label"] == "strongly positive"
    assert reasons(outcome) == [[reason]]


def test_score_derives_ordered_classes(tmp_path):
    rows = "\n".join(f"headline {i},{s}" for i, s in enumerate([-0.9, -0.5, -0.2, -0.05, 0.0, 0.05, 0.3, 0.5, 0.51]))
    (tmp_path / "s.csv").write_text("text,score\n" + rows + "\n")
    df, _ = sentiment(tmp_path / "s.csv", label_column=None, score_column="score")
    assert list(df["label"]) == [
        "strongly negative",
        "strongly negative",
        "mildly negative",
        "mildly negative",
        "neutral",
        "neutral",
        "mildly positive",
        "mildly positive",
        "strongly positive",
    ]


def test_conll_wrong_column_count(tmp_path):
    (tmp_path / "n.conll").write_text("Norvik B-ORG\nrose O\n\nShares O\nof O extra\nNorvik B-ORG\n\n")
    _, outcome, _ = ner(tmp_path / "n.conll")
    assert reasons(outcome) == [["line 5: 3 columns, expected 2"]]


def test_conll_unusable_width(tmp_path):
    (tmp_path / "n.conll").write_text("Norvik NNP B-ORG\n\n")
    with pytest.raises(UserError) as err:
        ner(tmp_path / "n.conll")
    assert "n.conll: line 1: 3 columns; CoNLL input needs 2 (token tag) or 4" in one_line(err)


def test_i_after_o_repaired_or_quarantined(tmp_path):
    (tmp_path / "n.conll").write_text("-DOCSTART- O\n\nShares O\nof O\nNorvik I-ORG\nHoldings I-ORG\n\n")
    df, outcome, changed = ner(tmp_path / "n.conll", repair_bio=True)
    assert changed == 1 and df.loc[0, "tags"] == ["O", "O", "B-ORG", "I-ORG"] and len(outcome.quarantined) == 0
    _, outcome, changed = ner(tmp_path / "n.conll", repair_bio=False)
    assert changed == 0 and reasons(outcome) == [["tags are not well-formed BIO"]]


def test_ner_tag_outside_set(tmp_path):
    (tmp_path / "n.conll").write_text("Norvik B-COMPANY\n\n")
    _, outcome, _ = ner(tmp_path / "n.conll")
    assert reasons(outcome) == [["tag not in ['B-LOC', 'B-ORG', 'B-PER', 'I-LOC', 'I-ORG', 'I-PER', 'O']"]]


def test_nul_bytes_are_quarantined(tmp_path):
    (tmp_path / "s.csv").write_bytes(b"text,label\nProfit rose,positive\nProfit\x00 fell,negative\n")
    _, outcome = sentiment(tmp_path / "s.csv", labels=["negative", "positive"])
    assert reasons(outcome) == [["text contains NUL or other control characters"]]
    (tmp_path / "c.txt").write_bytes(b"Good sentence here. Bad\x00 one here.\n")
    _, outcome, _ = corpus(tmp_path, [{"name": "c", "path": "c.txt"}])
    assert reasons(outcome) == [["text contains NUL or other control characters"]]


def test_one_megabyte_single_line(tmp_path):
    (tmp_path / "fpb.txt").write_text("Normal line .@neutral\n" + "x" * 1_000_000 + "@neutral\n")
    _, outcome = sentiment(tmp_path / "fpb.txt", labels=["negative", "neutral", "positive"])
    assert reasons(outcome) == [["text longer than 1000 characters"]]  # validate.sentiment.max_chars
    (tmp_path / "c.txt").write_text("A short start. " + "y" * 1_000_000 + "\n")
    _, outcome, _ = corpus(tmp_path, [{"name": "c", "path": "c.txt"}], validate={"corpus": {"max_chars": 2000}})
    assert reasons(outcome) == [["text longer than 2000 characters"]]


def test_duplicate_ids_keep_first(tmp_path):
    (tmp_path / "s.jsonl").write_text(
        '{"id": 1, "text": "Profit rose", "label": "positive"}\n{"id": 1, "text": "Profit fell", "label": "negative"}\n'
    )
    _, outcome = sentiment(tmp_path / "s.jsonl", id_column="id", labels=["negative", "positive"])
    assert reasons(outcome) == [["duplicate id"]]
    assert outcome.quarantined.iloc[0]["origin"].endswith("s.jsonl:line 2")


def test_repeated_corpus_id_is_a_second_document(tmp_path):
    """One id, two texts: two documents (`<id>#2`), counted; nothing quarantined or merged."""
    (tmp_path / "c.csv").write_text("id,text\nA,First doc here.\nA,Second doc here.\n")
    df, outcome, stats = corpus(tmp_path, [{"name": "c", "path": "c.csv", "id_column": "id"}])
    assert reasons(outcome) == [] and list(df["doc_id"]) == ["c:A", "c:A#2"]
    assert (stats.colliding_ids, stats.first_colliding_ids) == (1, ["c:A"])


def test_directory_where_file_expected(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(UserError) as err:
        sentiment(tmp_path / "d.csv")
    assert one_line(err).endswith("d.csv: is a directory, expected a file")


def test_invalid_json(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"text": "ok", "label": "positive"}\n{"text": broken\n')
    with pytest.raises(UserError) as err:
        sentiment(tmp_path / "s.jsonl", labels=["positive"])
    assert "s.jsonl: line 2: invalid JSON" in one_line(err)


def _params(tmp_path, repo, edit):
    import yaml

    data = yaml.safe_load((repo / "params.yaml").read_text())
    edit(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_params_unknown_key(tmp_path, repo):
    path = _params(tmp_path, repo, lambda d: d["ingest"]["corpus"].update(dev_fractoin=0.2))
    with pytest.raises(UserError) as err:
        load_params(path)
    assert (
        one_line(err)
        == f"{path}: ingest.corpus.dev_fractoin: unknown key (check the spelling; see params.yaml in the repo for every key)"
    )


def test_params_wrong_type(tmp_path, repo):
    path = _params(tmp_path, repo, lambda d: d["validate"].update(max_bad_fraction="lots"))
    with pytest.raises(UserError) as err:
        load_params(path)
    assert one_line(err).startswith(f"{path}: validate.max_bad_fraction: Input should be a valid number")


def test_params_nested_dataset_key(tmp_path, repo):
    path = _params(tmp_path, repo, lambda d: d["ingest"]["sentiment"]["datasets"]["headlines"].update(lables=["a"]))
    with pytest.raises(UserError) as err:
        load_params(path)
    assert "ingest.sentiment.datasets.headlines.lables: unknown key" in one_line(err)


def test_params_unknown_section(tmp_path, repo):
    path = _params(tmp_path, repo, lambda d: d.update(ingset={}))
    with pytest.raises(UserError) as err:
        load_params(path)
    assert f"{path}: ingset: unknown key" in one_line(err)


def test_shipped_params_and_profiles_load(repo):
    assert load_params(repo / "params.yaml").validate.max_bad_fraction == 0.01
    real = load_params(repo / "profiles" / "real.yaml", check_paths=real_data_present())
    assert "fpb50" in real.ingest.sentiment.datasets


def test_quarantine_keeps_origin_for_every_row(tmp_path):
    (tmp_path / "s.csv").write_text("text,label\n,positive\nok text,positive\n")
    _, outcome = sentiment(tmp_path / "s.csv", labels=["positive"])
    assert reasons(outcome) == [["text is empty", "text shorter than 1 characters"]] or reasons(outcome)[0][0] == "text is empty"
    assert isinstance(outcome.quarantined, pd.DataFrame) and outcome.quarantined.iloc[0]["origin"].endswith("s.csv:row 1")

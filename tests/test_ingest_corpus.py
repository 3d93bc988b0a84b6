import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import corpus

from finpipe.config import CorpusIngest, parse
from tasks.ingest import run_corpus

DOCS = [
    {"id": "a", "date": "2026-01-02", "text": "<p>Norvik Inc. rose 5.5 pct.</p> Sales fell. Outlook is &amp; stays weak."},
    {"id": "b", "date": "2026-01-03", "text": "Castellan Bank hired staff. It opened in Oslo."},
    {
        "id": "c",
        "date": "2026-01-04",
        "text": "Castellan Bank hired staff.   It opened in Oslo.",
    },  # duplicate after normalisation
    {"id": "d", "date": "2026-01-05", "text": "   "},
]


def _expect(df: pd.DataFrame, stats) -> None:
    assert stats.documents_read == 4 and stats.documents_kept == 2
    assert stats.duplicate_documents == 1 and stats.empty_documents == 1
    assert list(df["text"]) == [
        "Norvik Inc. rose 5.5 pct.",
        "Sales fell.",
        "Outlook is & stays weak.",
        "Castellan Bank hired staff.",
        "It opened in Oslo.",
    ]
    assert list(df["sent_idx"]) == [0, 1, 2, 0, 1]
    assert list(df["doc_id"]) == ["src:a"] * 3 + ["src:b"] * 2


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_tabular_formats(tmp_path, fmt):
    frame = pd.DataFrame(DOCS)
    path = tmp_path / f"docs.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif fmt == "json":
        path.write_text(json.dumps(DOCS))
    else:
        frame.to_parquet(path)
    df, outcome, stats = corpus(
        tmp_path,
        [{"name": "src", "path": path.name, "id_column": "id", "date_column": "date"}],
        validate={"corpus": {"min_chars": 3}},
    )
    _expect(df, stats)
    assert list(df["date"]) == ["2026-01-02"] * 3 + ["2026-01-03"] * 2
    assert len(outcome.quarantined) == 0


def test_plain_text_blocks_and_folder(tmp_path):
    (tmp_path / "t.txt").write_text("First doc. Two lines\nof it.\n\n\nSecond doc here.\n")
    df, _, stats = corpus(tmp_path, [{"name": "t", "path": "t.txt"}])
    assert stats.documents_kept == 2 and list(df["text"]) == ["First doc.", "Two lines of it.", "Second doc here."]
    assert df["origin"].iloc[2].endswith("t.txt:5")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "one.txt").write_text("Alpha rose.\n\nBeta fell.")
    (folder / "two.txt").write_text("Gamma held.")
    df, _, stats = corpus(tmp_path, [{"name": "f", "path": "docs", "format": "text_dir", "pattern": "*.txt"}])
    assert list(df["doc_id"]) == ["f:one.txt", "f:one.txt", "f:two.txt"]


SGML = """<!DOCTYPE lewis SYSTEM "lewis.dtd">
<REUTERS TOPICS="YES" NEWID="7">
<DATE>26-FEB-1987 15:01:01.79</DATE>
<TEXT>&#2;
<TITLE>NORVIK &lt;NVK> PROFIT UP</TITLE>
<DATELINE>    OSLO, Feb 26 - </DATELINE><BODY>&lt;Norvik Holdings> said profit
rose 12 pct.
    Sales were 5.93 mln dlrs &amp; rising.
 Reuter
&#3;</BODY></TEXT>
</REUTERS>
<REUTERS TOPICS="NO" NEWID="8">
<TEXT TYPE="UNPROC">&#2;
RESERVES....644 vs.....1,337
&#3;</TEXT>
</REUTERS>
"""


def test_reuters_sgml(tmp_path):
    (tmp_path / "reut2-000.sgm").write_bytes(SGML.encode("latin-1"))
    df, outcome, stats = corpus(tmp_path, [{"name": "r", "path": ".", "format": "reuters_sgml"}])
    assert list(df["text"]) == [
        "NORVIK NVK PROFIT UP",
        "Norvik Holdings said profit rose 12 pct.",
        "Sales were 5.93 mln dlrs & rising.",
    ]
    assert set(df["doc_id"]) == {"r:7"} and df["date"].iloc[0] == "26-FEB-1987 15:01:01.79"
    assert stats.documents_read == 2 and stats.empty_documents == 1
    df, _, stats = corpus(tmp_path, [{"name": "r", "path": ".", "include_unprocessed": True}])  # auto-detected
    assert stats.empty_documents == 0 and df["text"].iloc[-1] == "RESERVES....644 vs.....1,337"


def test_run_corpus_streams_in_row_groups_and_splits_by_document(tmp_path):
    rows = [{"id": i, "text": f"Doc {i} first sentence. Doc {i} second sentence."} for i in range(200)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = parse(
        CorpusIngest, {"sources": [{"name": "d", "path": "d.jsonl", "id_column": "id"}], "chunk_rows": 50, "dev_fraction": 0.2}
    )
    metrics = run_corpus(cfg, tmp_path, tmp_path / "out")
    pf = pq.ParquetFile(tmp_path / "out" / "corpus.parquet")
    assert pf.metadata.num_row_groups == 8 and pf.metadata.num_rows == 400 == metrics["sentences"]
    df = pf.read().to_pandas()
    assert df.groupby("doc_id")["split"].nunique().max() == 1
    assert 0.1 < (df["split"] == "dev").mean() < 0.3
    again = run_corpus(cfg, tmp_path, tmp_path / "out2")
    assert again == metrics
    assert (tmp_path / "out2" / "corpus.parquet").read_bytes() == (tmp_path / "out" / "corpus.parquet").read_bytes()


def test_a_repeated_document_id_with_other_text_is_kept_apart_and_counted(tmp_path):
    """Two records with one id and different text are two documents (`a`, `a#2`), each split and
    numbered on its own; merging them would change the document split and the NSP pairs. An
    exact repeat is still dropped as a duplicate, and does not count as a collision."""
    rows = [
        {"id": "a", "text": "Norvik rose. Sales fell."},
        {"id": "a", "text": "Castellan hired staff. It opened in Oslo. Margins held."},
        {"id": "a", "text": "Norvik rose. Sales fell."},  # exact duplicate of the first
        {"id": "b", "text": "Orders rose."},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = parse(CorpusIngest, {"sources": [{"name": "d", "path": "d.jsonl", "id_column": "id"}]})
    metrics = run_corpus(cfg, tmp_path, tmp_path / "out")
    assert metrics["duplicate_documents"] == 1 and metrics["documents_kept"] == 3
    assert metrics["colliding_ids"] == 1 and metrics["first_colliding_ids"] == ["d:a"]
    df = pq.read_table(tmp_path / "out" / "corpus.parquet").to_pandas()
    assert df.groupby("doc_id")["sent_idx"].apply(list).to_dict() == {"d:a": [0, 1], "d:a#2": [0, 1, 2], "d:b": [0]}
    assert not df.duplicated(["doc_id", "sent_idx"]).any()  # validate's uniqueness contract holds

"""The real public data sets (../shared/data, or FINPIPE_DATA) ingest and validate with
profiles/real.yaml, and the counts match each data set's SOURCE.txt. Skipped without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    repo_root = Path(__file__).resolve().parents[1]
    data = Path(os.environ.get("FINPIPE_DATA", repo_root.parent / "shared" / "data"))
    if not data.is_dir():
        pytest.skip(f"real data not found at {data} (set FINPIPE_DATA)")
    out = tmp_path_factory.mktemp("real")
    env = {
        **os.environ,
        "FINPIPE_DATA": str(data),
        "REAL_OUT": str(out),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(["bash", "profiles/real-data.sh"], cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_reuters_counts(real_run):
    m = _json(real_run / "reports/ingest/corpus.json")
    assert m["documents_read"] == 21578  # SOURCE.txt: 21578 documents
    # the 737 TYPE="UNPROC" records are table-only; every other record has a TITLE or a BODY
    assert m["empty_documents"] == 737
    assert m["documents_kept"] + m["duplicate_documents"] + m["empty_documents"] == 21578
    v = _json(real_run / "reports/validation/corpus.json")
    assert v["rows_in"] == v["rows_passed"] + v["rows_quarantined"] == m["sentences"]


def _labels(real_run: Path, name: str) -> dict[str, int]:
    return _json(real_run / "reports/ingest/sentiment.json")[name]["labels"]


def test_phrasebank_counts(real_run):
    assert _labels(real_run, "fpb50") == {"negative": 604, "neutral": 2879, "positive": 1363}  # 4846
    assert _labels(real_run, "fpb_allagree") == {"negative": 303, "neutral": 1391, "positive": 570}  # 2264
    v = _json(real_run / "reports/validation/sentiment.json")["datasets"]
    assert v["fpb50"]["rows_in"] == 4846 and v["fpb_allagree"]["rows_in"] == 2264
    clean = pd.read_parquet(real_run / "clean/sentiment/fpb50.parquet")
    assert clean.groupby("text")["split"].nunique().max() == 1  # repeated sentences never straddle splits


def test_semeval_headlines(real_run):
    m = _json(real_run / "reports/ingest/sentiment.json")["semeval_headlines"]
    assert m["rows"] == 1156 and m["unparsed_rows"] == 0
    df = pd.read_parquet(real_run / "clean/sentiment/semeval_headlines.parquet")
    assert df["score"].between(-1, 1).all() and df["score"].min() == -1.0 and df["score"].max() == 0.989
    assert set(df["label"]) == {"strongly negative", "mildly negative", "neutral", "mildly positive", "strongly positive"}


def test_fin5_counts(real_run):
    m = _json(real_run / "reports/ingest/ner.json")["fin5"]
    assert (m["documents"], m["sentences"], m["tokens"]) == (5, 1164, 41010)
    # IO → BIO: one B- per entity span; span counts from SOURCE.txt
    assert {k: v for k, v in m["tags"].items() if k.startswith("B-")} == {"B-LOC": 171, "B-MISC": 7, "B-ORG": 243, "B-PER": 747}
    assert m["tags"]["O"] == 39480
    assert m["tags"]["B-PER"] + m["tags"]["I-PER"] == 783 and m["tags"]["B-ORG"] + m["tags"]["I-ORG"] == 384


def test_finer_ord_counts(real_run):
    m = _json(real_run / "reports/ingest/ner.json")["finer_ord"]
    assert m["sentences"] == 3262 + 402 and m["tokens"] == 80531 + 10233 and m["documents"] == 135 + 24
    assert m["tags"]["O"] == 74462 + 9220
    for etype, (b, i) in {"ORG": (2026 + 274, 1414 + 250), "LOC": (966 + 193, 289 + 74), "PER": (821 + 138, 553 + 84)}.items():
        assert m["tags"][f"B-{etype}"] + m["tags"][f"I-{etype}"] == b + i  # repairs move I→B, never lose a token
    assert m["splits"]["dev"] == 402  # the source's own val split is kept


def test_make_real_runs_what_the_report_needs(tmp_path):
    """`make real` (profiles/real-run.sh) reproduces `evaluate` and its upstream stages: with
    the profile's variants (base, base-tapt) the domain pretraining is not among them, TAPT and
    every fine-tuning run are; a target given on the command line replaces `evaluate`."""
    import networkx as nx
    from dvc.repo import Repo

    repo_root = Path(__file__).resolve().parents[1]
    data = Path(os.environ.get("FINPIPE_DATA", repo_root.parent / "shared" / "data"))
    if not data.is_dir():
        pytest.skip(f"real data not found at {data} (set FINPIPE_DATA)")
    # a `dvc` that records its arguments, so the script's `dvc repro` call can be read back
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "dvc").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/dvc-calls\n')
    (stub / "dvc").chmod(0o755)
    ws = tmp_path / "ws"
    env = {**os.environ, "FINPIPE_DATA": str(data), "REAL_WORKSPACE": str(ws), "PATH": f"{stub}{os.pathsep}{os.environ['PATH']}"}

    def repro_args(*args: str) -> str:
        (tmp_path / "dvc-calls").unlink(missing_ok=True)
        proc = subprocess.run(
            ["bash", "profiles/real-run.sh", *args], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [c for c in (tmp_path / "dvc-calls").read_text().splitlines() if c.startswith("repro")][0]

    assert repro_args() == "repro evaluate"
    assert repro_args("--no-run-cache") == "repro --no-run-cache evaluate"
    assert repro_args("pretrain", "-f") == "repro pretrain -f"
    # what `dvc repro evaluate` runs in that workspace: evaluate's upstream stages
    with Repo(str(ws)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        evaluate = next(s for s in graph if s.name == "evaluate")
        upstream = {s.name for s in nx.descendants(graph, evaluate)}
    assert {
        "base-model",
        "tapt-sentiment@fpb50-base",
        "tapt-ner@finer_ord-base",
        "finetune-ner-tapt@finer_ord-base-15",
    } <= upstream
    assert "finetune-sentiment@semeval-base-14" in upstream
    assert "pretrain" not in upstream and not any("adapted" in s for s in upstream)

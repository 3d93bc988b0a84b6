"""The pretrain stage on a 2-layer model for a handful of steps: outputs, bad params, and a
2-process run under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import tiny_pretrain

from finpipe.config import Pretrain, Validate, load_params, parse
from finpipe.errors import UserError
from tasks import ingest, pretrain, validate

REPO = Path(__file__).resolve().parents[1]
TINY = tiny_pretrain()


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("corpus")
    params = load_params(REPO / "params.yaml")
    ingest.run_corpus(params.ingest.corpus, REPO / "data/embedded/corpus", work / "ingested")
    validate.run_corpus(parse(Validate, {}), work / "ingested", work / "clean", work / "q", work / "r")
    return work / "clean" / "corpus.parquet"


def _run(tmp: Path, corpus: Path, cfg: dict) -> dict:
    return pretrain.run(
        parse(Pretrain, cfg), corpus, tmp / "model", tmp / "metrics.json", tmp / "live", tmp / "ckpt", tmp / "cache"
    )


def test_pretrain_tiny_scratch(tmp_path, clean_corpus):
    metrics = _run(tmp_path, clean_corpus, TINY)
    assert metrics["train"]["steps"] == 6 and metrics["adapted"]["masked_tokens"] == metrics["base"]["masked_tokens"] > 0
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]  # lr 1e-3 from random: it must learn something
    assert 0 <= metrics["adapted"]["nsp_accuracy"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    from transformers import AutoTokenizer, BertForPreTraining, BertModel

    BertForPreTraining.from_pretrained(tmp_path / "model")
    BertModel.from_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert yaml.safe_load((tmp_path / "model" / "finpipe_pretrain.yaml").read_text())["train"]["max_steps"] == 6
    assert (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    assert not any((tmp_path / "ckpt").glob("*/checkpoint-*"))  # spent checkpoints are removed
    # examples are cached: a second run loads them
    again = _run(tmp_path, clean_corpus, TINY)
    assert again["adapted"] == metrics["adapted"]  # seeded: the same result


def test_mlm_only_whole_word_and_extend_vocab(tmp_path, clean_corpus):
    cfg = {
        **TINY,
        "data": {**TINY["data"], "nsp": False, "whole_word_mask": True},
        "model": {**TINY["model"], "extend_vocab": 5, "vocab_size": 300},
    }
    metrics = _run(tmp_path, clean_corpus, cfg)
    assert "nsp_accuracy" not in metrics["adapted"] and metrics["added_words"] == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"max_seq_length": 1024}}, "pretrain.data.max_seq_length: 1024 is above the model's limit of 512 positions"),
        ({"model": {"base": "./no/such/model"}}, "pretrain.model.base: ./no/such/model: no such model directory"),
        ({"model": {"base": "package:not_a_package/model"}}, "Python package 'not_a_package' is not installed"),
    ],
)
def test_bad_params_stop_before_training(tmp_path, clean_corpus, change, message):
    cfg = {k: {**TINY[k], **change.get(k, {})} for k in TINY}
    with pytest.raises(UserError) as err:
        _run(tmp_path, clean_corpus, cfg)
    assert message in str(err.value)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"learning_rate": -1e-4}}, "pretrain.train.learning_rate: Input should be greater than 0"),
        ({"data": {"mlm_probability": 1.5}}, "pretrain.data.mlm_probability: Input should be less than 1"),
    ],
)
def test_bad_param_values(change, message):
    cfg = {k: {**TINY[k], **change.get(k, {})} for k in TINY}
    with pytest.raises(UserError) as err:
        parse(Pretrain, cfg, prefix="pretrain")
    assert message in str(err.value)


def test_nsp_needs_multi_sentence_documents(tmp_path):
    import pandas as pd

    corpus = tmp_path / "corpus.parquet"
    pd.DataFrame(
        {"doc_id": ["a", "b"], "sent_idx": [0, 0], "text": ["One sentence.", "Another one."], "split": ["train", "dev"]}
    ).to_parquet(corpus)
    with pytest.raises(UserError) as err:
        _run(tmp_path, corpus, TINY)
    assert "no document has more than one sentence" in str(err.value) and "pretrain.data.nsp: false" in str(err.value)


@pytest.mark.slow
def test_two_processes_gloo(tmp_path, clean_corpus):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pretrain"] = TINY
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "finpipe.cli",
        "pretrain",
        "--params",
        str(tmp_path / "params.yaml"),
        "--corpus",
        str(clean_corpus),
        "--output",
        str(tmp_path / "model"),
        "--metrics",
        str(tmp_path / "m.json"),
        "--live",
        str(tmp_path / "live"),
        "--checkpoints",
        str(tmp_path / "ckpt"),
        "--cache",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["train"]["world_size"] == 2 and metrics["train"]["steps"] == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model")] == []  # one model, no leftovers
    assert (tmp_path / "model" / "model.safetensors").is_file()

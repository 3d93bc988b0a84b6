"""The pretrain stage on a 2-layer model for a handful of steps: outputs, bad params, and a
2-process run under torchrun (gloo)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_bert_config
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


@pytest.fixture(scope="module")
def no_dropout_base(tmp_path_factory, clean_corpus) -> Path:
    """A 2-layer BertForPreTraining without dropout (with dropout, 2 processes and 1 draw
    different masks, and the runs could not be compared weight for weight)."""
    import pandas as pd
    import torch
    from transformers import BertForPreTraining

    from finpipe.pretrain.base import train_wordpiece

    tokenizer = train_wordpiece(pd.read_parquet(clean_corpus)["text"], vocab_size=800, lowercase=True)
    torch.manual_seed(0)
    config = tiny_bert_config(tokenizer, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    out = tmp_path_factory.mktemp("base")
    BertForPreTraining(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _cli_pretrain(work: Path, corpus: Path, pretrain_section: dict, nproc: int) -> subprocess.CompletedProcess:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pretrain"] = pretrain_section
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", "29517"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "finpipe.cli", "pretrain", "--params", str(work / "params.yaml")]
    cmd += ["--corpus", str(corpus)]
    for flag, name in [("output", "model"), ("metrics", "m.json"), ("live", "live"), ("checkpoints", "ckpt"), ("cache", "cache")]:
        cmd += [f"--{flag}", str(work / name)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_two_processes_gloo_equal_one_process_with_the_doubled_batch(tmp_path, clean_corpus, no_dropout_base):
    """2 processes x batch 8 (gloo) train on the same examples per step as 1 process x batch 16
    and end with the same loss and weights. Before the loss fix (finpipe.training.Trainer),
    the Trainer multiplied each process's mean loss by the world size: the logged loss and the
    gradient norm were 2x."""
    import torch
    from safetensors.torch import load_file

    section = {
        **TINY,
        "model": {"base": str(no_dropout_base), "head_warmup_steps": 0},
        "train": {**TINY["train"], "learning_rate": 1e-4, "max_steps": 4, "logging_steps": 1},
    }
    two = _cli_pretrain(tmp_path / "two", clean_corpus, section, nproc=2)
    assert two.returncode == 0, two.stderr[-4000:]
    one = _cli_pretrain(tmp_path / "one", clean_corpus, {**section, "train": {**section["train"], "batch_size": 16}}, nproc=1)
    assert one.returncode == 0, one.stderr[-4000:]
    m2, m1 = (json.loads((tmp_path / w / "m.json").read_text()) for w in ("two", "one"))
    assert m2["train"]["world_size"] == 2 and m2["train"]["steps"] == 4 == m1["train"]["steps"]
    assert [p.name for p in (tmp_path / "two").iterdir() if p.name.startswith(".model")] == []  # one model, no leftovers
    # each process averages its own masked tokens, so the two agree up to how the masked
    # tokens split between the halves (a few %), far from the 2x of a scaling error
    assert m2["train"]["loss"] == pytest.approx(m1["train"]["loss"], rel=0.03)
    tolerance = {"loss": 0.005, "grad_norm": 0.05}  # per step (measured: 0.03 % and 1 %)
    for name in ("loss", "grad_norm"):
        curves = [(tmp_path / w / "live/plots/metrics" / f"{name}.tsv").read_text().split("\n")[1:] for w in ("two", "one")]
        for row2, row1 in zip(*curves, strict=True):
            if row2:
                assert float(row2.split("\t")[-1]) == pytest.approx(float(row1.split("\t")[-1]), rel=tolerance[name]), name
    w2, w1 = (load_file(tmp_path / w / "model/model.safetensors") for w in ("two", "one"))
    start = load_file(no_dropout_base / "model.safetensors")
    # Adam's first steps are ~lr * sign(gradient), so elementwise comparisons of near-zero
    # gradients are noise: compare the whole update
    moved = torch.cat([(w1[k].float() - start[k].float()).flatten() for k in w1])
    apart = torch.cat([(w2[k].float() - w1[k].float()).flatten() for k in w1])
    assert float(apart.norm() / moved.norm()) < 0.1


def _texts(docs) -> set[str]:
    return {s for d in docs for s in d}


def test_replay_trains_on_general_text_but_never_holds_it_out(monkeypatch, tmp_path, clean_corpus):
    import pyarrow.parquet as pq

    general = set(pq.read_table(clean_corpus, filters=[("source", "==", "general")])["text"].to_pylist())
    assert general  # the embedded corpus has a general-domain source
    seen: dict = {}

    def spy(cfg, docs, data_fp, out, replay=None):
        seen.update(train=docs[0], heldout=docs[1], replay=replay)
        return {}

    monkeypatch.setattr(pretrain, "adapt", spy)
    for fraction in (0.25, 0.0):
        cfg = {**TINY, "data": {**TINY["data"], "replay_sources": ["general"], "replay_fraction": fraction}}
        _run(tmp_path, clean_corpus, cfg)
        assert not _texts(seen["train"]) & general and not _texts(seen["heldout"]) & general
        assert (_texts(seen["replay"]) <= general and _texts(seen["replay"])) if fraction else seen["replay"] is None


def test_replay_makes_up_its_fraction_of_the_examples(tmp_path, clean_corpus):
    cfg = {**TINY, "data": {**TINY["data"], "replay_sources": ["general"], "replay_fraction": 0.25}}
    metrics = _run(tmp_path, clean_corpus, cfg)
    replayed, total = metrics["train"]["replay_examples"], metrics["train"]["examples"]
    assert replayed == round(0.25 / 0.75 * (total - replayed)) > 0


def test_mix_replay_numbers_every_example_apart():
    import datasets

    from finpipe.pretrain.data import mix_replay

    domain = datasets.Dataset.from_list([{"input_ids": [1, i], "idx": i} for i in range(30)])
    general = datasets.Dataset.from_list([{"input_ids": [2, i], "idx": i} for i in range(4)])
    mixed = mix_replay(domain, general, 0.25, seed=3)
    assert len(mixed) == 40 and sorted(mixed["idx"]) == list(range(40))  # each example its own masks
    drawn = [ids[1] for ids in mixed["input_ids"][30:]]
    assert all(ids[0] == 2 for ids in mixed["input_ids"][30:]) and sorted(set(drawn)) == [0, 1, 2, 3]
    assert mixed["input_ids"][:30] == domain["input_ids"]


def test_replay_params_are_checked():
    from finpipe.config import Tapt, check_across_sections, load_params

    with pytest.raises(UserError, match="replay_sources applies to pretrain only"):
        parse(Tapt, {"data": {"replay_sources": ["general"]}}, prefix="tapt")
    params = load_params(REPO / "params.yaml")
    for names, message in ((["gossip"], "not among the corpus sources"), (["newswire", "briefs", "general"], "every corpus")):
        data = dataclasses.replace(params.pretrain.data, replay_sources=names)
        changed = dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, data=data))
        with pytest.raises(UserError, match=message):
            check_across_sections(changed)

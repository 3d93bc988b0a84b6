"""Small builders for tests: run one file through ingest + validate in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from finpipe.config import CorpusIngest, NerDataset, SentimentDataset, Validate, parse
from finpipe.labelled import ingest_ner_dataset, ingest_sentiment_dataset
from finpipe.readers.corpus import read_corpus
from finpipe.schemas import Outcome
from finpipe.sentence_rows import CorpusStats, sentence_batches
from finpipe.validation import validate_corpus, validate_ner, validate_sentiment

REPO = Path(__file__).resolve().parents[1]


def real_data_present() -> bool:
    """The folder profiles/real.yaml reads (../shared/data): its input paths exist only there."""
    return (REPO.parent / "shared" / "data").is_dir()


def sentiment(path: Path, validate: dict[str, Any] | None = None, **spec: Any) -> tuple[Any, Outcome]:
    spec.setdefault("path", path.name)
    spec.setdefault("dev_fraction", 0.0)
    spec.setdefault("test_fraction", 0.0)
    ds = parse(SentimentDataset, spec)
    df = ingest_sentiment_dataset(path.parent, "t", ds, seed=0)
    meta = {"labels": ds.label_set, "score_range": list(ds.score_range), "has_score": ds.score_column is not None}
    outcome = validate_sentiment(df, meta, parse(Validate, validate or {}))
    assert len(outcome.passed) + len(outcome.quarantined) == len(df)  # the invariant, on every input
    return df, outcome


def ner(path: Path, validate: dict[str, Any] | None = None, **spec: Any) -> tuple[Any, Outcome, int]:
    spec.setdefault("path", path.name)
    spec.setdefault("dev_fraction", 0.0)
    spec.setdefault("test_fraction", 0.0)
    ds = parse(NerDataset, spec)
    df, changed = ingest_ner_dataset(path.parent, "t", ds, seed=0)
    outcome = validate_ner(df, {"tags": ds.tag_set}, parse(Validate, validate or {}))
    assert len(outcome.passed) + len(outcome.quarantined) == len(df)
    return df, outcome, changed


def corpus(root: Path, sources: list[dict[str, Any]], validate: dict[str, Any] | None = None, **cfg: Any):
    spec = parse(CorpusIngest, {"sources": sources, **cfg})
    stats = CorpusStats()
    batches = []
    for src in spec.sources:
        batches += list(
            sentence_batches(
                read_corpus(root, src),
                stats,
                seed=spec.seed,
                dev_fraction=spec.dev_fraction,
                markup=spec.strip_markup,
                batch_rows=spec.chunk_rows,
            )
        )
    df = pa.Table.from_batches(batches).to_pandas()
    outcome = validate_corpus(df, parse(Validate, validate or {}))
    assert len(outcome.passed) + len(outcome.quarantined) == len(df)
    return df, outcome, stats


def tiny_pretrain(**train: Any) -> dict[str, Any]:
    """A 2-layer scratch BERT for a handful of steps: the pretrain section every stage test uses."""
    return {
        "model": {
            "base": "scratch",
            "vocab_size": 1500,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        "data": {"max_seq_length": 48, "max_eval_examples": 64},
        "train": {
            "max_steps": 6,
            "batch_size": 8,
            "save_steps": 2,
            "logging_steps": 2,
            "learning_rate": 1e-3,
            "bf16": False,
            "seed": 13,  # dvc.yaml tracks it by name (base-model)
            **train,
        },
    }


def reasons(outcome: Outcome) -> list[list[str]]:
    return list(outcome.quarantined["reasons"])


def tiny_finetune(**train: Any) -> dict[str, Any]:
    """The finetune section for stage tests: the embedded tasks, a few steps each."""
    steps = {
        "max_steps": 6,
        "batch_size": 8,
        "eval_steps": 3,
        "logging_steps": 2,
        "learning_rate": 1e-3,
        "head_learning_rate": 3e-3,
        "max_seq_length": 48,
        "bf16": False,
        **train,
    }
    return {
        "variants": ["adapted", "base"],
        "seeds": [13],
        "sentiment": {
            "tasks": {"headlines": {"dataset": "headlines", "target": "ordinal", "score_loss_weight": 1.0}},
            "train": steps,
        },
        "ner": {"tasks": {"news": {"dataset": "news"}}, "stride": 6, "train": {**steps, "max_seq_length": 16}},
    }


def oracle_tag(token: str) -> str:
    """The tag `token_oracle` gives a word, from the word's first sub-token."""
    if token == "[UNK]":
        return "B-LOC"  # a word the vocabulary cannot spell: its text can only come from the offsets
    if token[0].isdigit():
        return "B-PER"
    if token[0].isupper():
        return "I-ORG"  # a run of capitalised words is one entity
    return "O"


def token_oracle(model_dir: Path, out: Path) -> Path:
    """A copy of the fine-tuned NER model at `model_dir` whose weights are set by hand so that it
    tags every token with `oracle_tag(token)`, whatever its context: no attention or feed-forward
    output (each layer passes its input through its LayerNorms), no position or segment
    embeddings, each token's embedding one-hot on its tag's id, and an identity classifier."""
    import shutil

    import torch
    from transformers import AutoTokenizer, BertForTokenClassification

    model = BertForTokenClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label2id = model.config.label2id
    emb = model.bert.embeddings
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm.weight" in name:
                param.fill_(1.0)
            elif "LayerNorm.bias" in name or ".output.dense." in name:
                param.zero_()
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.word_embeddings.weight.zero_()
        for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            emb.word_embeddings.weight[i, label2id[oracle_tag(token)]] = 1.0
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        for i in range(model.config.num_labels):
            model.classifier.weight[i, i] = 1.0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for path in model_dir.iterdir():
        if path.is_file() and not (out / path.name).exists():
            shutil.copy(path, out / path.name)  # tokenizer files
    return out


def hand_cross_entropy(logits: Any, labels: Any, weights: Any = None, smoothing: float = 0.0) -> float:
    """Cross-entropy of class logits, written out (numpy, float64) as torch defines it: the
    target is (1 - smoothing) on the label plus smoothing / K on every class; with class weights
    w, row i's label term weighs w[y_i], its smoothing term weighs class k by w[k], and the sum
    is divided by sum_i w[y_i] (an unweighted loss: w = 1, a plain mean)."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    k = z.shape[1]
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    rows = np.arange(len(y))
    label_term = -(w[y] * log_p[rows, y]).sum()
    smooth_term = -(w[None, :] * log_p).sum()
    return float(((1 - smoothing) * label_term + smoothing / k * smooth_term) / w[y].sum())

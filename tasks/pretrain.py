"""Stage `pretrain`: domain-adaptive pretraining (MLM + NSP) of any BERT on the clean corpus.

Reads data/work/clean/corpus/corpus.parquet (train documents for training, dev documents for
evaluation) and continues pretraining the base on them (finpipe/pretrain/adapt.py: the HF
Trainer, resumable checkpoints, an atomic write of models/adapted, held-out metrics of the
base before and the adapted model after on the same pre-masked examples).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from finpipe.config import Pretrain
from finpipe.errors import UserError
from finpipe.fingerprint import fingerprint
from finpipe.pretrain.adapt import Outputs, adapt
from finpipe.pretrain.base import resolve
from finpipe.pretrain.data import read_documents

log = logging.getLogger(__name__)


def check(cfg: Pretrain, train_docs: list[list[str]], dev_docs: list[list[str]], corpus: Path) -> None:
    """Every user mistake we can see before loading weights or training."""
    if not train_docs:
        raise UserError(f"{corpus}: no train documents in the corpus")
    if not dev_docs:
        raise UserError(f"{corpus}: no dev documents to evaluate on; raise ingest.corpus.dev_fraction")
    if cfg.data.nsp:
        if sum(len(d) > 1 for d in train_docs) == 0:
            raise UserError(
                f"{corpus}: no document has more than one sentence, so NSP has no true continuations; "
                f"set pretrain.data.nsp: false for MLM only"
            )
        if len(train_docs) < 2:
            raise UserError(f"{corpus}: NSP needs at least two train documents for NotNext pairs")
    if cfg.model.base == "scratch":
        limit = cfg.model.max_position_embeddings
    else:
        limit = AutoConfig.from_pretrained(resolve(cfg.model.base)).max_position_embeddings
    if cfg.data.max_seq_length > limit:
        raise UserError(
            f"pretrain.data.max_seq_length: {cfg.data.max_seq_length} is above the model's limit of {limit} positions"
        )


def run(
    cfg: Pretrain, corpus: Path, output_dir: Path, metrics_path: Path, live_dir: Path, checkpoints: Path, cache: Path
) -> dict[str, Any]:
    if not corpus.is_file():
        raise UserError(f"{corpus}: clean corpus not found; run the validate@corpus stage first")
    general = set(cfg.data.replay_sources)  # general-domain text: replay only, never held out
    docs = read_documents(corpus, "train", exclude=general), read_documents(corpus, "dev", exclude=general)
    check(cfg, *docs, corpus)
    replay = read_documents(corpus, "train", only=general) if general and cfg.data.replay_fraction > 0 else []
    if general and cfg.data.replay_fraction > 0 and not replay:
        raise UserError(f"{corpus}: no train documents from pretrain.data.replay_sources {sorted(general)} to replay")
    outputs = Outputs(output_dir, metrics_path, live_dir, checkpoints, cache)
    return adapt(cfg, docs, fingerprint(corpus), outputs, replay)

"""Stage `pretrain`: domain-adaptive pretraining (MLM + NSP) of any BERT on the clean corpus.

Reads data/work/clean/corpus/corpus.parquet (train documents for training, dev documents for
evaluation), streamed pretrain.data.shard_documents documents at a time while the examples are
built, and continues pretraining the base on them (finpipe/pretrain/adapt.py: the HF Trainer,
resumable checkpoints, an atomic write of models/adapted, held-out metrics of the base before
and the adapted model after on the same pre-masked examples).
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
from finpipe.pretrain.data import CorpusDocuments, DocumentCount

log = logging.getLogger(__name__)


def check(cfg: Pretrain, train: DocumentCount, dev: DocumentCount, corpus: Path) -> None:
    """Every user mistake we can see before loading weights or training."""
    if not train.documents:
        raise UserError(f"{corpus}: no train documents in the corpus")
    if not dev.documents:
        raise UserError(f"{corpus}: no dev documents to evaluate on; raise ingest.corpus.dev_fraction")
    if cfg.data.nsp:
        if train.multi_sentence == 0:
            raise UserError(
                f"{corpus}: no document has more than one sentence, so NSP has no true continuations; "
                f"set pretrain.data.nsp: false for MLM only"
            )
        if train.documents < 2:
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
    general = frozenset(cfg.data.replay_sources)  # general-domain text: replay only, never held out

    def documents(split: str, **select: Any) -> CorpusDocuments:
        # streamed shard by shard when examples are built: the corpus is never in memory whole
        return CorpusDocuments(corpus, split, shard_documents=cfg.data.shard_documents, **select)

    docs = documents("train", exclude=general), documents("dev", exclude=general)
    check(cfg, docs[0].count, docs[1].count, corpus)
    replay = documents("train", only=general) if general and cfg.data.replay_fraction > 0 else None
    if replay is not None and not replay.count.documents:
        raise UserError(f"{corpus}: no train documents from pretrain.data.replay_sources {sorted(general)} to replay")
    outputs = Outputs(output_dir, metrics_path, live_dir, checkpoints, cache)
    return adapt(cfg, docs, fingerprint(corpus), outputs, replay)

"""Stage `base-model`: the starting encoder as it is before domain pretraining, in models/base.

The baseline fine-tunings (variant `base`) start from here. Writing it out, instead of loading
pretrain.model.base again in each fine-tuning, makes the baseline a DVC-tracked input like the
adapted model: both variants read a directory, and a hub model that changes upstream cannot
change a rerun of the baseline. For `scratch` it is the randomly initialised model (seeded as
pretraining's) with the same cached WordPiece tokenizer, so the baseline is "no pretraining".
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from transformers import BertModel, set_seed

from finpipe.atomic import atomic_dir
from finpipe.config import Pretrain
from finpipe.errors import UserError
from finpipe.fingerprint import fingerprint
from finpipe.loading import load_with_heads
from finpipe.pretrain.base import load_base, load_tokenizer, resolve
from finpipe.pretrain.data import corpus_sentences

log = logging.getLogger(__name__)


def run(cfg: Pretrain, corpus: Path, output_dir: Path, cache: Path) -> dict[str, Any]:
    texts: Iterable[str] = ()
    tokenizer_cache = None
    if cfg.model.base == "scratch":
        if not corpus.is_file():
            raise UserError(f"{corpus}: clean corpus not found; a scratch base needs it for its tokenizer")
        texts = corpus_sentences(corpus, "train")  # streamed, in file order
        # the same cache key as the pretrain stage: both variants share one vocabulary
        tokenizer_cache = cache / f"tokenizer-{fingerprint(fingerprint(corpus), dataclasses.asdict(cfg.model))}"
    set_seed(cfg.train.seed)
    if cfg.model.base == "scratch":
        model, tokenizer, _ = load_base(cfg.model, iter(texts), tokenizer_cache)
        encoder = model.bert
    else:  # the encoder alone: pretraining heads would be random here, and are not needed
        path = resolve(cfg.model.base)
        try:
            tokenizer = load_tokenizer(path)
            encoder, _ = load_with_heads(BertModel, path, "base encoder", attn_implementation=cfg.model.attn_implementation)
        except OSError as err:
            raise UserError(f"pretrain.model.base: cannot load {cfg.model.base!r}: {str(err).splitlines()[0]}") from None
    encoder.config.architectures = ["BertModel"]
    with atomic_dir(output_dir) as tmp:
        encoder.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "finpipe_base.yaml").write_text(yaml.safe_dump({"base": cfg.model.base}, sort_keys=False))
    params = sum(p.numel() for p in encoder.parameters())
    log.info("base model %s: %.1fM encoder parameters -> %s", cfg.model.base, params / 1e6, output_dir)
    return {"base": cfg.model.base, "parameters": params}

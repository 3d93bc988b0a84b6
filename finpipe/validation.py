"""The pandera contracts applied to one ingested table: what passes and what is quarantined,
with reasons. The validate stage, `finpipe check` and `finpipe evaluate --model` share it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from finpipe.config import Validate
from finpipe.schemas import Outcome, apply, corpus_schema, ner_schema, sentiment_schema
from finpipe.text import text_key


def validate_sentiment(df: pd.DataFrame, meta: dict[str, Any], cfg: Validate) -> Outcome:
    df = df.assign(_text_key=[text_key(t) for t in df["text"]], score=df["score"].astype(float))
    schema = sentiment_schema(
        meta["labels"], tuple(meta["score_range"]), cfg.sentiment.min_chars, cfg.sentiment.max_chars, meta["has_score"]
    )
    return apply(schema, df)


def validate_ner(df: pd.DataFrame, meta: dict[str, Any], cfg: Validate) -> Outcome:
    df = df.assign(
        tokens=[list(t) for t in df["tokens"]],
        tags=[list(t) for t in df["tags"]],
        _text_key=[" ".join(t) for t in df["tokens"]],
    )
    return apply(ner_schema(meta["tags"], cfg.ner.max_tokens), df)


def validate_corpus(df: pd.DataFrame, cfg: Validate) -> Outcome:
    return apply(corpus_schema(cfg.corpus.min_chars, cfg.corpus.max_chars), df)


NOUNS = {"corpus": "sentences", "sentiment": "texts", "ner": "sentences"}

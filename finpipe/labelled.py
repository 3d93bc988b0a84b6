"""A labelled data set (sentiment or NER) read from its file(s), normalised and split: what
the ingest stage writes per data set, and what `finpipe check` and `finpipe evaluate --model`
read a user's file with."""

from __future__ import annotations

import bisect
from pathlib import Path

import pandas as pd

from finpipe.bio import to_bio
from finpipe.config import NerDataset, ScoreBins, SentimentDataset
from finpipe.readers.files import Damages
from finpipe.readers.ner import read_ner
from finpipe.readers.sentiment import read_sentiment_file
from finpipe.splits import group_split, stratified_group_split
from finpipe.text import normalise, text_key


def bin_score(score: float, bins: ScoreBins) -> str:
    """Ordered class of a score: thresholds are upper-inclusive lower bounds of the next class."""
    return bins.labels[bisect.bisect_left(bins.thresholds, score)]


def _group_key(i: int, text: object) -> str:
    """Split group of a row: identical texts stay together; a non-text row is its own group."""
    return text_key(text) or f"\x00row{i}"


def _carve(
    frame: pd.DataFrame, given: set[str], groups: list[str], labels: list[str] | None, seed: int, dev: float, test: float
) -> pd.Series:
    """Splits for rows of the 'train' file, carving out the splits the source does not bring."""
    dev = 0.0 if "dev" in given else dev
    test = 0.0 if "test" in given else test
    if labels is None:
        return pd.Series(group_split(groups, seed, dev, test), index=frame.index)
    return pd.Series(stratified_group_split(groups, labels, seed, dev, test), index=frame.index)


def ingest_sentiment_dataset(
    root: Path, name: str, spec: SentimentDataset, seed: int, damage: Damages | None = None
) -> pd.DataFrame:
    return read_sentiment_dataset(root, name, spec, seed, damage)[0]


def read_sentiment_dataset(
    root: Path, name: str, spec: SentimentDataset, seed: int, damage: Damages | None = None
) -> tuple[pd.DataFrame, SentimentDataset]:
    """The rows, and `spec` with the columns read (detected where the configured one is absent:
    finpipe/readers/columns.py). The ingest stage, `finpipe check` and `finpipe evaluate
    --model` all read a sentiment file here, so they agree on its columns."""
    files = {"all": spec.path} if spec.path else dict(spec.splits or {})
    parts = []
    for split, rel in files.items():
        # the first file settles the columns: the other split files must have the same
        frame, spec = read_sentiment_file(root / rel, spec, name, damage)
        if split != "all":  # ids from different files must not collide
            frame["id"] = frame["id"].str.replace(f"{name}:", f"{name}:{split}:", n=1, regex=False)
        frame["split"] = split
        parts.append(frame)
    df = pd.concat(parts, ignore_index=True)
    df["text"] = [normalise(t) if isinstance(t, str) else t for t in df["text"]]
    if spec.label_column is None:
        df["label"] = [bin_score(s, spec.score_bins) if pd.notna(s) else None for s in df["score"]]
    to_split = df["split"].isin(["all", "train"])
    sub = df[to_split]
    df.loc[to_split, "split"] = _carve(
        sub,
        set(files) - {"all"},
        [_group_key(i, t) for i, t in enumerate(sub["text"])],
        [str(x) for x in sub["label"]],
        seed,
        spec.dev_fraction,
        spec.test_fraction,
    )
    df["dataset"] = name
    return df, spec


def ingest_ner_dataset(
    root: Path, name: str, spec: NerDataset, seed: int, damage: Damages | None = None
) -> tuple[pd.DataFrame, int]:
    files = {"all": spec.path} if spec.path else dict(spec.splits or {})
    parts = []
    for split, rel in files.items():
        frame = read_ner(root / rel, spec, name, damage)
        if split != "all":  # ids and documents from different files must not collide
            frame["id"] = frame["id"].str.replace(f"{name}:", f"{name}:{split}:", n=1, regex=False)
            frame["doc_id"] = frame["doc_id"].str.replace(f"{name}:", f"{name}:{split}:", n=1, regex=False)
        frame["split"] = split
        parts.append(frame)
    df = pd.concat(parts, ignore_index=True)
    changed = 0
    if spec.tag_scheme == "io" or spec.repair_bio:
        new_tags = []
        for tags in df["tags"]:
            fixed, n = to_bio(tags)
            new_tags.append(fixed)
            changed += n
        df["tags"] = new_tags
    to_split = df["split"].isin(["all", "train"])
    sub = df[to_split]
    key = sub["doc_id"] if spec.split_by == "document" else sub["id"]
    df.loc[to_split, "split"] = _carve(sub, set(files) - {"all"}, list(key), None, seed, spec.dev_fraction, spec.test_fraction)
    df["dataset"] = name
    return df, changed

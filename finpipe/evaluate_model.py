"""`finpipe evaluate --model DIR --test FILE`: one fine-tuned model scored on any labelled file,
read and checked by the same code as the ingest and validate stages and `finpipe check`
(finpipe.labelled: the same formats, gzip, column detection and damaged-file rule)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finpipe.errors import UserError
from finpipe.finetune import metrics as fm

if TYPE_CHECKING:
    import pandas as pd

    from finpipe.readers.files import Damages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """One labelled file scored: how many rows it had, which passed the checks, the metrics."""

    rows: int
    usable: pd.DataFrame
    skipped: int
    metrics: dict[str, Any]
    damage: list[str]  # the file's damage (cut short or broken): only the records before it are scored


def evaluate_file(
    model_dir: Path,
    test: Path,
    *,
    fmt: str = "auto",
    text_column: str = "text",
    label_column: str | None = "label",
    score_column: str | None = None,
    tag_scheme: str = "bio",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Metrics of one fine-tuned model on any labelled file in an ingest format. The file goes
    through the same readers and pandera checks as ingest; rows that fail them are counted and
    left out, as in the pipeline."""
    from finpipe.finetune.load import load
    from finpipe.training import use_bf16

    if not test.is_file():
        raise UserError(f"--test {test}: no such file")
    kind, model, tokenizer = load(model_dir)
    bf16 = use_bf16("auto")
    if kind == "sentiment":
        scored = evaluate_sentiment(
            model, tokenizer, test, fmt, text_column, label_column, score_column, batch_size=batch_size, bf16=bf16
        )
    else:
        scored = evaluate_ner(model, tokenizer, test, fmt, tag_scheme=tag_scheme, batch_size=batch_size, bf16=bf16)
    for found in scored.damage:
        log.warning("evaluate: damaged input: %s", found)
    return {
        "model": str(model_dir),
        "test": str(test),
        "kind": kind,
        "rows": scored.rows,
        "scored": len(scored.usable),
        "skipped": scored.skipped,
        "damage": scored.damage,
        **scored.metrics,
    }


def _keep_every_passing_row() -> Any:
    """validate's checks without its stop: a file with bad rows is scored on the others."""
    from finpipe.config import Validate, parse

    return parse(Validate, {"max_bad_fraction": 1.0}, source="arguments")


def _usable(outcome: Any, test: Path) -> pd.DataFrame:
    rows = outcome.passed.reset_index(drop=True)
    if rows.empty:
        raise UserError(f"{test}: no usable rows ({len(outcome.quarantined)} failed the checks)")
    return rows


def evaluate_sentiment(
    model: Any,
    tokenizer: Any,
    test: Path,
    fmt: str,
    text_column: str,
    label_column: str | None,
    score_column: str | None,
    *,
    batch_size: int,
    bf16: bool,
) -> Scored:
    """A sentiment model on a file with a label column, a score column or both (detected by
    their usual names where the given ones are absent, as `finpipe check` does)."""
    from finpipe.config import SentimentDataset, parse
    from finpipe.finetune import sentiment as sm
    from finpipe.labelled import read_sentiment_dataset
    from finpipe.validation import validate_sentiment

    spec = model.spec
    if score_column is None and label_column is None:
        raise UserError("evaluate: give --label-column, --score-column or both")
    ds = parse(
        SentimentDataset,
        {
            "path": test.name,
            "format": fmt,
            "text_column": text_column,
            "label_column": label_column,
            "score_column": score_column,
            "labels": spec["labels"],
            "dev_fraction": 0.0,
            "test_fraction": 0.0,
            "score_range": spec["score_range"],
        },
        source="arguments",
    )
    damage: Damages = []
    df, ds = read_sentiment_dataset(test.parent, "external", ds, seed=0, damage=damage)
    label_column, score_column = ds.label_column, ds.score_column
    # without a label column the labels are the score bins' classes, whatever the model predicts
    labels = spec["labels"] if label_column is not None else list(ds.score_bins.labels)
    meta = {"labels": labels, "score_range": spec["score_range"], "has_score": score_column is not None}
    outcome = validate_sentiment(df, meta, _keep_every_passing_row())
    rows = _usable(outcome, test)
    max_length = int(spec.get("max_seq_length") or 128)
    pred = sm.predict(model, tokenizer, rows["text"].tolist(), batch_size=batch_size, max_length=max_length, bf16=bf16)
    index = {n: i for i, n in enumerate(spec["labels"])}
    result: dict[str, Any] = {}
    if "label" in pred and label_column is not None:
        gold = rows["label"].map(index).to_numpy()
        result.update(fm.class_metrics(gold, pred["label"], spec["labels"], ordered=spec["target"] == "ordinal"))
    if "score" in pred and score_column is not None:
        result.update(fm.score_metrics(rows["score"].to_numpy(dtype=float), pred["score"]))
    columns = {"text": ds.text_column, "label": label_column, "score": score_column}
    return Scored(len(df), rows, len(outcome.quarantined), {"columns": columns, **result}, [str(d) for d in damage])


def evaluate_ner(
    model: Any, tokenizer: Any, test: Path, fmt: str, *, tag_scheme: str = "bio", batch_size: int, bf16: bool
) -> Scored:
    """An NER model on a file of tagged words (BIO, or IO converted as ingest converts it), with
    the windows it was trained with."""
    from finpipe.config import NerDataset, parse
    from finpipe.finetune import ner as ner_mod
    from finpipe.labelled import ingest_ner_dataset
    from finpipe.validation import validate_ner

    tags = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    types = sorted({t[2:] for t in tags if t != "O"}, key=lambda t: tags.index("B-" + t))
    ds = parse(
        NerDataset,
        {
            "path": test.name,
            "format": fmt,
            "tag_scheme": tag_scheme,
            "entity_types": types,
            "dev_fraction": 0.0,
            "test_fraction": 0.0,
        },
        source="arguments",
    )
    damage: Damages = []
    df, converted = ingest_ner_dataset(test.parent, "external", ds, seed=0, damage=damage)
    outcome = validate_ner(df, {"tags": tags}, _keep_every_passing_row())
    rows = _usable(outcome, test)
    window = getattr(model.config, ner_mod.SPEC_KEY)
    pred_tags, _ = ner_mod.predict_words(
        model,
        tokenizer,
        [list(t) for t in rows["tokens"]],
        max_length=window["max_length"],
        stride=window["stride"],
        batch_size=batch_size,
        bf16=bf16,
    )
    metrics = fm.ner_metrics([list(t) for t in rows["tags"]], pred_tags)
    # I- tags turned into B-: the IO conversion asked for, or repairs of a BIO file that has IO in it
    scheme = {"tag_scheme": tag_scheme, "tags_converted": converted}
    return Scored(len(df), rows, len(outcome.quarantined), {**scheme, **metrics}, [str(d) for d in damage])

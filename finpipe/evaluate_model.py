"""`finpipe evaluate --model DIR --test FILE`: one fine-tuned model scored on any labelled file,
read and checked by the same code as the ingest and validate stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finpipe.errors import UserError
from finpipe.finetune import metrics as fm


def evaluate_file(
    model_dir: Path,
    test: Path,
    *,
    fmt: str = "auto",
    text_column: str = "text",
    label_column: str | None = "label",
    score_column: str | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Metrics of one fine-tuned model on any labelled file in an ingest format. The file goes
    through the same readers and pandera checks as ingest; rows that fail them are counted and
    left out, as in the pipeline."""
    from finpipe.config import NerDataset, SentimentDataset, Validate, parse
    from finpipe.finetune import ner as ner_mod
    from finpipe.finetune import sentiment as sm
    from finpipe.finetune.load import load
    from finpipe.labelled import ingest_ner_dataset, ingest_sentiment_dataset
    from finpipe.training import use_bf16
    from finpipe.validation import validate_ner, validate_sentiment

    if not test.is_file():
        raise UserError(f"--test {test}: no such file")
    kind, model, tokenizer = load(model_dir)
    bf16 = use_bf16("auto")
    cfg = parse(Validate, {"max_bad_fraction": 1.0}, source="arguments")
    if kind == "sentiment":
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
        df = ingest_sentiment_dataset(test.parent, "external", ds, seed=0)
        meta = {"labels": spec["labels"], "score_range": spec["score_range"], "has_score": score_column is not None}
        outcome = validate_sentiment(df, meta, cfg)
        rows = outcome.passed.reset_index(drop=True)
        if rows.empty:
            raise UserError(f"{test}: no usable rows ({len(outcome.quarantined)} failed the checks)")
        pred = sm.predict(
            model,
            tokenizer,
            rows["text"].tolist(),
            batch_size=batch_size,
            max_length=int(spec.get("max_seq_length") or 128),
            bf16=bf16,
        )
        index = {n: i for i, n in enumerate(spec["labels"])}
        result: dict[str, Any] = {}
        if "label" in pred and label_column is not None:
            result.update(
                fm.class_metrics(
                    rows["label"].map(index).to_numpy(), pred["label"], spec["labels"], ordered=spec["target"] == "ordinal"
                )
            )
        if "score" in pred and score_column is not None:
            result.update(fm.score_metrics(rows["score"].to_numpy(dtype=float), pred["score"]))
    else:
        tags = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        types = sorted({t[2:] for t in tags if t != "O"}, key=lambda t: tags.index("B-" + t))
        ds = parse(
            NerDataset,
            {"path": test.name, "format": fmt, "entity_types": types, "dev_fraction": 0.0, "test_fraction": 0.0},
            source="arguments",
        )
        df, _ = ingest_ner_dataset(test.parent, "external", ds, seed=0)
        outcome = validate_ner(df, {"tags": tags}, cfg)
        rows = outcome.passed.reset_index(drop=True)
        if rows.empty:
            raise UserError(f"{test}: no usable rows ({len(outcome.quarantined)} failed the checks)")
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
        result = fm.ner_metrics([list(t) for t in rows["tags"]], pred_tags)
    return {
        "model": str(model_dir),
        "test": str(test),
        "kind": kind,
        "rows": len(df),
        "scored": len(rows),
        "skipped": len(outcome.quarantined),
        **result,
    }

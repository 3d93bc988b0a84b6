"""`finpipe predict sentiment|ner`: label texts with a fine-tuned model.

Input: CSV/TSV with a text column, JSONL (objects with a text field), or plain text lines;
`-` reads stdin. Output: JSONL, one line per usable input row, in input order. Rows that are
empty or not text are reported (row number and reason) and skipped, never fatal.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from finpipe.errors import UserError
from finpipe.finetune import ner
from finpipe.finetune import sentiment as sm
from finpipe.finetune.load import load
from finpipe.training import use_bf16

log = logging.getLogger(__name__)


@dataclass
class Row:
    row: int  # 1-based line (text, JSONL) or data row (CSV) number
    text: str
    id: Any = None


@dataclass
class Bad:
    row: int
    reason: str


def _format(name: str, fmt: str, head: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(name).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if name == "-" and head.lstrip().startswith("{"):
        return "jsonl"
    return "text"


def read_rows(stream: TextIO, name: str, fmt: str, text_column: str) -> Iterator[Row | Bad]:
    content = stream.read()
    fmt = _format(name, fmt, content[:200])
    if fmt in ("csv", "tsv"):
        reader = csv.DictReader(io.StringIO(content), delimiter="," if fmt == "csv" else "\t")
        if reader.fieldnames is None or text_column not in reader.fieldnames:
            raise UserError(f"{name}: no column {text_column!r} (columns: {reader.fieldnames or 'none'}); use --text-column")
        for i, rec in enumerate(reader, start=1):
            yield _row(i, rec.get(text_column), rec.get("id"))
        return
    for i, line in enumerate(content.splitlines(), start=1):
        if fmt == "jsonl":
            if not line.strip():
                continue  # blank separator lines are not rows
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                yield Bad(i, f"not valid JSON ({err.msg})")
                continue
            if not isinstance(rec, dict):
                yield Bad(i, "not a JSON object")
                continue
            yield _row(i, rec.get(text_column), rec.get("id"))
        else:
            yield _row(i, line, None)


def _row(i: int, text: Any, ident: Any) -> Row | Bad:
    if text is None:
        return Bad(i, "no text")
    if not isinstance(text, str):
        return Bad(i, f"text is a {type(text).__name__}, not a string")
    if not text.strip():
        return Bad(i, "empty text")
    if "\x00" in text:
        return Bad(i, "text contains NUL")
    return Row(i, text, ident)


def _open_input(name: str) -> TextIO:
    if name == "-":
        return sys.stdin
    path = Path(name)
    if not path.is_file():
        raise UserError(f"--input {name}: no such file")
    from finpipe.readers.files import read_text

    return io.StringIO(read_text(path))  # encoding detected as ingest does (UTF-8, else Latin-1/cp1252)


def run(
    kind: str,
    model_dir: Path,
    input_name: str,
    output_name: str,
    *,
    text_column: str = "text",
    batch_size: int = 64,
    fmt: str = "auto",
) -> dict[str, Any]:
    stream = _open_input(input_name)  # before loading the model: a missing file fails fast
    _, model, tokenizer = load(model_dir, expected=kind)
    items = list(read_rows(stream, input_name, fmt, text_column))
    rows = [r for r in items if isinstance(r, Row)]
    bad = [r for r in items if isinstance(r, Bad)]
    for b in bad[:20]:
        log.warning("%s row %d skipped: %s", input_name, b.row, b.reason)
    progress = sys.stderr.isatty()  # a bar on a terminal, none in logs
    bf16 = use_bf16("auto")
    records: list[dict[str, Any]] = []
    if kind == "sentiment" and rows:
        records = sentiment_records(model, tokenizer, rows, batch_size=batch_size, bf16=bf16, progress=progress)
    elif kind == "ner" and rows:
        records = ner_records(model, tokenizer, rows, batch_size=batch_size, bf16=bf16, progress=progress)
    _write(output_name, records)
    counts = {"rows": len(items), "predicted": len(records), "skipped": len(bad)}
    if bad:
        log.warning("%s: %d of %d rows skipped (empty or not text)", input_name, len(bad), len(items))
    return counts


def _record(r: Row, **fields: Any) -> dict[str, Any]:
    """An output line: where the text came from, the text, then the prediction."""
    return {"row": r.row, **({"id": r.id} if r.id is not None else {}), "text": r.text, **fields}


def sentiment_records(
    model: Any, tokenizer: Any, rows: list[Row], *, batch_size: int, bf16: bool, progress: bool
) -> list[dict[str, Any]]:
    """Label and class probabilities (a head with classes) and score (a head with one) per row."""
    labels = model.spec["labels"]
    texts = [r.text for r in rows]
    out = sm.predict(model, tokenizer, texts, batch_size=batch_size, max_length=_max_length(model), bf16=bf16, progress=progress)
    records = []
    for i, r in enumerate(rows):
        fields: dict[str, Any] = {}
        if "label" in out:
            fields["label"] = labels[int(out["label"][i])]
            fields["probs"] = {name: round(float(p), 6) for name, p in zip(labels, out["probs"][i], strict=True)}
        if "score" in out:
            fields["score"] = round(float(out["score"][i]), 6)
        records.append(_record(r, **fields))
    return records


def ner_records(
    model: Any, tokenizer: Any, rows: list[Row], *, batch_size: int, bf16: bool, progress: bool
) -> list[dict[str, Any]]:
    """The entities of each row with character offsets into its text, split as BERT splits words."""
    window = getattr(model.config, ner.SPEC_KEY)
    words = [ner.words_with_offsets(tokenizer, r.text) for r in rows]
    tags, _ = ner.predict_words(
        model,
        tokenizer,
        [[w for w, _, _ in ws] for ws in words],
        max_length=window["max_length"],
        stride=window["stride"],
        batch_size=batch_size,
        bf16=bf16,
        progress=progress,
    )
    return [_record(r, entities=ner.char_spans(r.text, ws, tg)) for r, ws, tg in zip(rows, words, tags, strict=True)]


def _max_length(model: Any) -> int:
    return int(model.spec.get("max_seq_length") or min(512, model.config.max_position_embeddings))


def _write(name: str, records: list[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if name == "-":
        sys.stdout.write(lines)
        sys.stdout.flush()
        return
    from finpipe.atomic import write_text

    write_text(name, lines)

"""NER sets: CoNLL (2 or 4 columns, -DOCSTART-, blank-line sentences) and FiNER-ORD's
token-per-row CSV with integer tag codes.

Returns one DataFrame per file with columns id, doc_id, sent_idx, tokens, tags, origin,
parse_error; tags are as written in the file (scheme conversion happens in ingest).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from finpipe.config import NerDataset
from finpipe.errors import UserError
from finpipe.readers.files import Damages, data_suffix, iter_lines, read_table, require_file

COLUMNS = ["id", "doc_id", "sent_idx", "tokens", "tags", "origin", "parse_error"]
FINER_ORD_CODES = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"}


def read_ner(path: Path, spec: NerDataset, name: str, damage: Damages | None = None) -> pd.DataFrame:
    require_file(path)
    fmt = spec.format
    if fmt == "auto":
        fmt = "finer_csv" if data_suffix(path) == ".csv" else "conll"
    return _finer_csv(path, spec, name, damage) if fmt == "finer_csv" else _conll(path, spec, name, damage)


def _conll(path: Path, spec: NerDataset, name: str, damage: Damages | None) -> pd.DataFrame:
    rows: list[tuple] = []
    doc = 0
    sent_in_doc = 0
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    error: str | None = None
    width: int | None = None
    saw_docstart = False

    def close() -> None:
        nonlocal tokens, tags, error, sent_in_doc
        if tokens or error:
            rows.append((f"{name}:{len(rows) + 1}", f"{name}:doc{doc}", sent_in_doc, tokens, tags, f"{path}:line {start}", error))
            sent_in_doc += 1
        tokens, tags, error = [], [], None

    for lineno, line in iter_lines(path, spec.encoding, damage):
        cols = line.split()
        if not cols:
            close()
            continue
        if cols[0] == "-DOCSTART-":
            close()
            if saw_docstart or rows:
                doc += 1
            saw_docstart = True
            sent_in_doc = 0
            continue
        if not tokens and error is None:
            start = lineno
        if width is None:
            width = len(cols)
            if width not in (2, 4):
                raise UserError(
                    f"{path}: line {lineno}: {width} columns; CoNLL input needs 2 (token tag) or 4 (token pos chunk tag)"
                )
        if len(cols) != width:
            error = error or f"line {lineno}: {len(cols)} columns, expected {width}"
            continue
        tokens.append(cols[0])
        tags.append(cols[-1])
    close()
    if not rows:
        raise UserError(f"{path}: no sentences found")
    return pd.DataFrame(rows, columns=COLUMNS)


def _finer_csv(path: Path, spec: NerDataset, name: str, damage: Damages | None) -> pd.DataFrame:
    df = read_table(path, "csv", spec.encoding, damage)
    need = ["gold_label", "gold_token", "doc_idx", "sent_idx"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; FiNER-ORD CSV needs {need}, found {list(df.columns)}")
    rows: list[tuple] = []
    # groupby(sort=False) keeps file order; row numbers +2 = header + 1-based lines
    for (doc_idx, sent_idx), group in df.groupby(["doc_idx", "sent_idx"], sort=False):
        error = None
        tags = []
        for line, code in zip(group.index, group["gold_label"], strict=True):
            try:
                tags.append(FINER_ORD_CODES[int(code)])
            except (ValueError, KeyError):
                error = error or f"line {line + 2}: tag code {code!r} is not one of 0-6"
                tags.append(str(code))
        try:
            sent_no = int(sent_idx)
        except ValueError:
            sent_no, error = len(rows), error or f"line {group.index[0] + 2}: sent_idx {sent_idx!r} is not an integer"
        rows.append(
            (
                f"{name}:{doc_idx}:{sent_idx}",
                f"{name}:doc{doc_idx}",
                sent_no,
                list(group["gold_token"]),
                tags,
                f"{path}:line {group.index[0] + 2}",
                error,
            )
        )
    if not rows:
        raise UserError(f"{path}: no sentences found")
    return pd.DataFrame(rows, columns=COLUMNS)

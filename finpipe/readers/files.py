"""File checks, encoding detection and tabular loading shared by every reader."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from finpipe.errors import UserError

TABULAR = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}


def require_file(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    return path


def require_dir(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"{path}: folder not found")
    if not path.is_dir():
        raise UserError(f"{path}: is a file, expected a folder")
    return path


def undecodable(path: Path, data: bytes, err: UnicodeDecodeError, encoding: str) -> UserError:
    line = data.count(b"\n", 0, err.start) + 1
    return UserError(
        f"{path}: line {line}: bytes {data[err.start : err.start + 4]!r} are not valid {encoding}; "
        f"set 'encoding' (e.g. latin-1) for this input"
    )


def resolve_encoding(path: Path, encoding: str = "auto") -> str:
    """'auto' is UTF-8 (BOM allowed) when the whole file decodes as UTF-8, else Latin-1, which
    is right for the Financial PhraseBank files and other 8-bit Western text. The check
    streams the file, so it costs no memory on a large corpus."""
    if encoding != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise UserError(f"{path}: unknown encoding {encoding!r}") from None
        return encoding
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:
        try:
            while chunk := fh.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "latin-1"
    return "utf-8-sig"


def decode(path: Path, data: bytes, encoding: str = "auto") -> str:
    if encoding == "auto":
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise undecodable(path, data, err, encoding) from None
    except LookupError:
        raise UserError(f"{path}: unknown encoding {encoding!r}") from None


def read_text(path: Path, encoding: str = "auto") -> str:
    return decode(path, require_file(path).read_bytes(), encoding)


def iter_lines(path: Path, encoding: str = "auto") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline)."""
    yield from enumerate(read_text(path, encoding).splitlines(), start=1)


def detect_format(path: Path, allowed: dict[str, str]) -> str:
    fmt = allowed.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; set 'format' "
            f"(one of {sorted(set(allowed.values()))})"
        )
    return fmt


def read_table(path: Path, fmt: str, encoding: str = "auto") -> pd.DataFrame:
    """Load a small table with every cell as a string, so 'NA' or '001' stay as written."""
    require_file(path)
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        text = read_text(path, encoding)
        if fmt in ("csv", "tsv"):
            from io import StringIO

            return pd.read_csv(
                StringIO(text),
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
            )
        if fmt == "jsonl":
            return pd.DataFrame(_json_lines(path, text))
        if fmt == "json":
            data = json.loads(text)
            if isinstance(data, dict):  # {"data": [...]} and similar wrappers
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise UserError(f"{path}: expected a JSON list of records")
                data = lists[0]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise UserError(f"{path}: expected a JSON list of records")
            return pd.DataFrame(data)
    except UserError:
        raise
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot read as {fmt}: {first}") from None
    raise UserError(f"{path}: unsupported format {fmt!r}")


def _json_lines(path: Path, text: str) -> list[dict]:
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {i}: invalid JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {i}: expected a JSON object per line")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


def require_columns(path: Path, df: pd.DataFrame, columns: dict[str, str | None]) -> None:
    """columns: param name -> column name (None = not used)."""
    for param, col in columns.items():
        if col is not None and col not in df.columns:
            raise UserError(f"{path}: no column {col!r} (param {param}); columns are {list(map(str, df.columns))}")

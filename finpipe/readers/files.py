"""File checks, encoding detection, gzip and tabular loading shared by every reader.

A file cut short or broken inside its container (a gzip stream that ends early, a JSON array
cut inside a record, a Reuters record without </REUTERS>) is `Damage`: the complete records
before it are read, and the damage goes to the caller's list (the ingest stage warns and counts
it, `finpipe check` fails on it). A caller that passes no list gets the damage as a UserError.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

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


GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Damage:
    """Where a file is cut short or broken, and what was read of it."""

    file: str
    position: str  # "line 14, byte 512", or "byte 40 (compressed)"
    record: str | None  # the record's id or number, where known
    problem: str  # what is wrong there, and what was kept

    def __str__(self) -> str:
        record = f" ({self.record})" if self.record else ""
        return f"{self.file}: {self.position}{record}: {self.problem}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Damages = list[Damage]


def report(damage: Damages | None, found: Damage) -> None:
    """Hand `found` to the caller's list; without one, the damaged file stops the caller."""
    if damage is None:
        raise UserError(str(found))
    damage.append(found)


def position(text: str, index: int, encoding: str | None = None) -> str:
    """'line L, byte B' of a character index (bytes counted in `encoding`)."""
    line = text.count("\n", 0, index) + 1
    if encoding is None:
        return f"line {line}"
    try:
        offset = len(text[:index].encode(encoding))
    except (UnicodeEncodeError, LookupError):
        return f"line {line}"
    return f"line {line}, byte {offset}"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def data_suffix(path: Path) -> str:
    """The extension that names the format: `news.jsonl.gz` is JSONL."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        return suffixes[-2] if len(suffixes) > 1 else ""
    return suffixes[-1] if suffixes else ""


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


class _CutGzip(io.RawIOBase):
    """A gzip file's content that ends cleanly at its last complete line when the compressed
    data end early or are corrupt, so that no reader sees half a record; `cut` says why."""

    def __init__(self, path: Path) -> None:
        self._gz = gzip.open(path, "rb")
        self._size = path.stat().st_size
        self._ready = memoryview(b"")
        self._held = b""  # after the last newline: given out only once the data are known complete
        self._done = False
        self.cut: str | None = None
        self.lines = 0  # complete lines given out

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._ready and not self._done:
            self._fill()
        n = min(len(buffer), len(self._ready))
        buffer[:n] = self._ready[:n]
        self._ready = self._ready[n:]
        return n

    def _fill(self) -> None:
        try:
            chunk = self._gz.read1(1 << 16)  # read() would drop what it decompressed before the error
        except EOFError:
            self.cut, self._done = f"the gzip data end early, at byte {self._size} of the file", True
            return
        except (zlib.error, gzip.BadGzipFile) as err:
            self.cut, self._done = f"the gzip data are corrupt ({err})", True
            return
        if not chunk:
            self._ready, self._held, self._done = memoryview(self._held), b"", True
            return
        data = self._held + chunk
        end = data.rfind(b"\n") + 1
        self._ready, self._held = memoryview(data[:end]), data[end:]
        self.lines += data.count(b"\n", 0, end)

    def close(self) -> None:
        self._gz.close()
        super().close()


@contextmanager
def open_input(path: Path, damage: Damages | None) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped when it is gzip (told by its first bytes, whatever its name)."""
    if not is_gzip(path):
        with open(path, "rb") as fh:
            yield fh
        return
    raw = _CutGzip(path)
    with io.BufferedReader(raw) as fh:
        yield fh
    if raw.cut:
        where = f"line {raw.lines + 1} of the gunzipped content"
        report(damage, Damage(str(path), where, None, f"{raw.cut}; kept the {count(raw.lines, 'complete line')} before it"))


def read_input(path: Path, damage: Damages | None) -> bytes:
    with open_input(path, damage) as fh:
        return fh.read()


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
    with open_input(path, damage=[]) as fh:  # the reading that follows reports any damage
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


def read_text(path: Path, encoding: str = "auto", damage: Damages | None = None) -> str:
    return decode(path, read_input(require_file(path), damage), encoding)


def iter_lines(path: Path, encoding: str = "auto", damage: Damages | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline)."""
    yield from enumerate(read_text(path, encoding, damage).splitlines(), start=1)


def detect_format(path: Path, allowed: dict[str, str]) -> str:
    suffix = data_suffix(path)
    fmt = allowed.get(suffix)
    if fmt is None:
        raise UserError(
            f"{path}: cannot tell the format from the extension {suffix!r}; set 'format' (one of {sorted(set(allowed.values()))})"
        )
    return fmt


def refuse_gzip_parquet(path: Path) -> None:
    if is_gzip(path):
        raise UserError(f"{path}: a gzip-compressed Parquet file; decompress it (gunzip): Parquet compresses its own data")


def read_table(path: Path, fmt: str, encoding: str = "auto", damage: Damages | None = None) -> pd.DataFrame:
    """Load a small table with every cell as a string, so 'NA' or '001' stay as written."""
    require_file(path)
    try:
        if fmt == "parquet":
            refuse_gzip_parquet(path)
            return pd.read_parquet(path)
        text = read_text(path, encoding, damage)
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
            return pd.DataFrame(_json_lines(path, text, damage))
        if fmt == "json":
            return pd.DataFrame(json_records(path, text, damage))
    except UserError:
        raise
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot read as {fmt}: {first}") from None
    raise UserError(f"{path}: unsupported format {fmt!r}")


def json_line(path: Path, lineno: int, line: str, last: bool, damage: Damages | None, kept: int) -> dict | None:
    """One JSONL record. A last line with no newline after it that is not valid JSON is the
    file cut short (Damage, None back); any other invalid line is a UserError."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        if not last:
            raise UserError(f"{path}: line {lineno}: invalid JSON: {err.msg}") from None
        problem = f"the file ends inside this line (not valid JSON, no newline); kept the {count(kept, 'record')} before it"
        report(damage, Damage(str(path), f"line {lineno}", None, problem))
        return None
    if not isinstance(row, dict):
        raise UserError(f"{path}: line {lineno}: expected a JSON object per line")
    return row


def _json_lines(path: Path, text: str, damage: Damages | None) -> list[dict]:
    rows = []
    lines = text.splitlines()
    cut_short = not text.endswith(("\n", "\r"))
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = json_line(path, i, line, cut_short and i == len(lines), damage, len(rows))
        if row is not None:
            rows.append(row)
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


# `{"data": [` and similar one-key wrappers around the records
_WRAPPER = re.compile(r'\{\s*"(?:[^"\\]|\\.)*"\s*:\s*\[')


def json_records(path: Path, text: str, damage: Damages | None) -> list[dict]:
    """The records of a JSON array (or of the one list in a `{"data": [...]}` wrapper). A file
    that is not valid JSON keeps the complete records before the break (Damage); with none
    complete, it is a UserError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return _salvage(path, text, err, damage)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a JSON list of records")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a JSON list of records")
    return data


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _salvage(path: Path, text: str, err: json.JSONDecodeError, damage: Damages | None) -> list[dict]:
    """Records parsed one by one up to where the JSON breaks."""
    start = _skip_space(text, 0)
    wrapper = _WRAPPER.match(text, start)
    i = wrapper.end() if wrapper else start + 1 if text.startswith("[", start) else -1
    records: list[dict] = []
    decoder = json.JSONDecoder()
    where, record, problem = err.pos, None, f"invalid JSON after the records: {err.msg}"
    while i >= 0:
        i = _skip_space(text, i)
        try:
            found, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as inner:
            ends = _skip_space(text, inner.pos) >= len(text)
            where, record = i, f"record {len(records) + 1}"
            problem = "the file ends inside this record" if ends else f"invalid JSON: {inner.msg} at line {inner.lineno}"
            break
        if not isinstance(found, dict):
            raise UserError(f"{path}: expected a JSON list of records")
        records.append(found)
        i = _skip_space(text, end)
        if text.startswith(",", i):
            i += 1
            continue
        if not text.startswith("]", i):
            where, record = i, f"after record {len(records)}"
            problem = "expected ',' or ']'" if i < len(text) else "the file ends inside the array"
        break
    if not records:
        raise UserError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}")
    problem = f"{problem}; kept the {count(len(records), 'complete record')} before it"
    report(damage, Damage(str(path), position(text, where), record, problem))
    return records


def require_columns(path: Path, df: pd.DataFrame, columns: dict[str, str | None]) -> None:
    """columns: param name -> column name (None = not used)."""
    for param, col in columns.items():
        if col is not None and col not in df.columns:
            raise UserError(f"{path}: no column {col!r} (param {param}); columns are {list(map(str, df.columns))}")

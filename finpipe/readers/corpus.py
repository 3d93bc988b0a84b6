"""Unlabelled domain documents from CSV/TSV/Parquet/JSON(L), plain text and Reuters SGML,
each optionally gzip-compressed.

Every reader is a generator of RawDoc, so ingest streams a corpus of any size. A file cut
short or broken (finpipe/readers/files.py: Damage) yields its complete records and reports
the rest to the `damage` list.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pandas as pd
import pyarrow.parquet as pq

from finpipe.config import CorpusSource
from finpipe.errors import UserError
from finpipe.readers import columns as cols
from finpipe.readers.files import (
    TABULAR,
    Damage,
    Damages,
    count,
    decode,
    detect_format,
    json_line,
    json_records,
    open_input,
    position,
    read_input,
    refuse_gzip_parquet,
    report,
    require_dir,
    require_file,
    resolve_encoding,
    undecodable,
)


@dataclass(frozen=True, slots=True)
class RawDoc:
    doc_id: str
    title: str | None
    text: str
    date: str | None
    source: str
    origin: str  # file and line/row, for messages and the quarantine file


_CORPUS_FORMATS = {**TABULAR, ".txt": "text", ".sgm": "reuters_sgml"}
_TAB_CHUNK = 20_000


def _format(path: Path, spec: CorpusSource) -> str:
    if spec.format != "auto":
        return spec.format
    if path.is_dir():
        if any(path.glob("*.sgm")):
            return "reuters_sgml"
        return "text_dir"
    return detect_format(path, _CORPUS_FORMATS)


def read_corpus(root: Path, spec: CorpusSource, damage: Damages | None = None) -> Iterator[RawDoc]:
    """The documents of one source; damaged files add to `damage` (None: a UserError)."""
    path = root / spec.path
    fmt = _format(path, spec)
    if fmt == "reuters_sgml":
        files = [path] if path.is_file() else sorted(require_dir(path).glob(spec.pattern if spec.pattern != "*" else "*.sgm"))
        if not files:
            raise UserError(f"{path}: no .sgm files in this folder")
        for f in files:
            yield from _reuters(require_file(f), spec, damage)
    elif fmt == "text_dir":
        files = sorted(p for p in require_dir(path).glob(spec.pattern) if p.is_file())
        if not files:
            raise UserError(f"{path}: no files match {spec.pattern!r}")
        for f in files:
            yield from _text_file(f, spec, damage, whole_file=True)
    elif fmt == "text":
        yield from _text_file(require_file(path), spec, damage, whole_file=False)
    elif fmt in ("csv", "tsv", "parquet", "jsonl", "json"):
        yield from _tabular(require_file(path), fmt, spec, damage)
    else:  # pragma: no cover - the Literal in config forbids it
        raise UserError(f"{path}: unsupported corpus format {fmt!r}")


@contextmanager
def _open_text(path: Path, spec: CorpusSource, damage: Damages | None) -> Iterator[TextIO]:
    encoding = resolve_encoding(path, spec.encoding)
    with open_input(path, damage) as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as fh:
        yield fh


def _guard_decode(path: Path, spec: CorpusSource, gen: Iterator[RawDoc]) -> Iterator[RawDoc]:
    try:
        yield from gen
    except UnicodeDecodeError:
        data = read_input(path, damage=[])
        # err.start is relative to the failing chunk; find the first bad byte in the file
        try:
            data.decode(spec.encoding)
        except UnicodeDecodeError as whole:
            err = whole
        raise undecodable(path, data, err, spec.encoding) from None


def _text_file(path: Path, spec: CorpusSource, damage: Damages | None, whole_file: bool) -> Iterator[RawDoc]:
    def gen() -> Iterator[RawDoc]:
        with _open_text(path, spec, damage) as fh:
            if whole_file:
                yield RawDoc(f"{spec.name}:{path.name}", None, fh.read(), None, spec.name, f"{path}")
                return
            block: list[str] = []
            start = 1
            n = 0
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    if not block:
                        start = lineno
                    block.append(line)
                elif block:
                    yield RawDoc(f"{spec.name}:{n}", None, "".join(block), None, spec.name, f"{path}:{start}")
                    n += 1
                    block = []
            if block:
                yield RawDoc(f"{spec.name}:{n}", None, "".join(block), None, spec.name, f"{path}:{start}")

    yield from _guard_decode(path, spec, gen())


def _cell(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value)


def _tabular(path: Path, fmt: str, spec: CorpusSource, damage: Damages | None) -> Iterator[RawDoc]:
    wanted = {
        "text_column": spec.text_column,
        "id_column": spec.id_column,
        "date_column": spec.date_column,
        "source_column": spec.source_column,
        "title_column": spec.title_column,
    }

    def check(columns: list[str]) -> None:
        """The configured columns are there; a missing text column is detected by its usual names."""
        for param, col in wanted.items():
            if param != "text_column" and col is not None and col not in columns:
                raise UserError(f"{path}: no column {col!r} (param {param}); columns are {columns}")
        others = {c for p, c in wanted.items() if p != "text_column" and c is not None}
        wanted["text_column"] = cols.required(path, cols.TEXT, spec.text_column, columns, taken=others)

    def rows(records: Iterator[tuple[str, dict]]) -> Iterator[RawDoc]:
        for loc, rec in records:
            doc_id = _cell(rec.get(spec.id_column)) if spec.id_column else None
            source = (_cell(rec.get(spec.source_column)) if spec.source_column else None) or spec.name
            yield RawDoc(
                doc_id=f"{spec.name}:{doc_id if doc_id is not None else loc}",
                title=_cell(rec.get(spec.title_column)) if spec.title_column else None,
                text=_cell(rec.get(wanted["text_column"])) or "",
                date=_cell(rec.get(spec.date_column)) if spec.date_column else None,
                source=source,
                origin=f"{path}:{loc}",
            )

    def csv_records() -> Iterator[tuple[str, dict]]:
        with _open_text(path, spec, damage) as fh:
            try:
                reader = pd.read_csv(
                    fh, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False, na_filter=False, chunksize=_TAB_CHUNK
                )
                first = True
                for chunk in reader:
                    if first:
                        check(list(map(str, chunk.columns)))
                        first = False
                    for i, rec in zip(chunk.index, chunk.to_dict("records")):
                        yield f"row {i + 1}", rec
            except pd.errors.ParserError as err:
                raise UserError(f"{path}: cannot read as {fmt}: {str(err).strip().splitlines()[0]}") from None
            except pd.errors.EmptyDataError:
                raise UserError(f"{path}: file is empty") from None

    def parquet_records() -> Iterator[tuple[str, dict]]:
        refuse_gzip_parquet(path)
        try:
            pf = pq.ParquetFile(path, pre_buffer=False)  # see finpipe.corpus_validation._batches
        except Exception as err:  # pyarrow raises several types for a non-Parquet file
            raise UserError(f"{path}: not a Parquet file ({type(err).__name__})") from None
        check(pf.schema_arrow.names)
        read = [c for c in wanted.values() if c is not None]
        offset = 0
        for batch in pf.iter_batches(batch_size=_TAB_CHUNK, columns=read):
            for j, rec in enumerate(batch.to_pylist()):
                yield f"row {offset + j + 1}", rec
            offset += batch.num_rows

    def jsonl_records() -> Iterator[tuple[str, dict]]:
        checked = False
        kept = 0
        with _open_text(path, spec, damage) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                # only the file's last line can lack its newline: a cut there is the file cut short
                rec = json_line(path, lineno, line, not line.endswith(("\n", "\r")), damage, kept)
                if rec is None:
                    continue
                if not checked:
                    check(list(rec))
                    checked = True
                kept += 1
                yield f"line {lineno}", rec

    def json_file_records() -> Iterator[tuple[str, dict]]:
        with _open_text(path, spec, damage) as fh:
            data = json_records(path, fh.read(), damage)
        if data:
            check(list(data[0]))
        for i, rec in enumerate(data):
            yield f"record {i + 1}", rec

    source = {
        "csv": csv_records,
        "tsv": csv_records,
        "parquet": parquet_records,
        "jsonl": jsonl_records,
        "json": json_file_records,
    }[fmt]
    yield from _guard_decode(path, spec, rows(source()))


_OPEN = re.compile(r"<REUTERS\b([^>]*)>")
_CLOSE = "</REUTERS>"
_NEWID = re.compile(r'NEWID="(\d+)"')
_FIELD = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.S) for name in ("TITLE", "BODY", "DATE")}
_UNPROC = re.compile(r'<TEXT TYPE="UNPROC">(.*?)</TEXT>', re.S)
_SIGNOFF = re.compile(r"\s*\bReuter\b\s*(?:&#3;)?\s*$", re.I)
_SGML_CONTROL = re.compile(r"&#(?:[1-9]|[12][0-9]|3[01]);")  # &#2; &#3; ... are record markers, not text
_COMPANY = re.compile(r"&lt;([^<>&]{1,100})>")


def _reuters_records(path: Path, raw: str, encoding: str, damage: Damages | None) -> Iterator[tuple[str, str, int]]:
    """(attributes, content, line) of each complete <REUTERS> record. A record with no
    </REUTERS> before the next record, or before the end of the file, is Damage, skipped."""
    opens = list(_OPEN.finditer(raw))
    line, counted = 1, 0
    for i, match in enumerate(opens):
        line += raw.count("\n", counted, match.start())
        counted = match.start()
        end = opens[i + 1].start() if i + 1 < len(opens) else len(raw)
        close = raw.find(_CLOSE, match.end(), end)
        if close >= 0:
            yield match.group(1), raw[match.end() : close], line
            continue
        newid = _NEWID.search(match.group(1))
        if i + 1 < len(opens):
            problem = "no </REUTERS> before the next record: skipped it, kept the records around it"
        else:
            problem = f"the file ends inside this record (no </REUTERS>): skipped it, kept the {count(i, 'record')} before it"
        where = position(raw, match.start(), encoding)
        report(damage, Damage(str(path), where, f"NEWID={newid.group(1)}" if newid else f"record {i + 1}", problem))


def _reuters(path: Path, spec: CorpusSource, damage: Damages | None) -> Iterator[RawDoc]:
    """Reuters-21578 SGML (Latin-1): TITLE and BODY of each <REUTERS> record.

    The 737 TYPE="UNPROC" records have neither: they are tables ("Net free reserves....644
    vs...1,337"), read only with include_unprocessed; otherwise they count as empty documents.
    """
    encoding = "latin-1" if spec.encoding == "auto" else spec.encoding
    raw = decode(path, read_input(path, damage), encoding)
    for attrs, body, line in _reuters_records(path, raw, encoding, damage):
        newid = _NEWID.search(attrs)
        fields = {k: (m.group(1) if (m := rx.search(body)) else None) for k, rx in _FIELD.items()}
        text = fields["BODY"] or ""
        if not text and not fields["TITLE"] and spec.include_unprocessed and (unproc := _UNPROC.search(body)):
            text = unproc.group(1)
        text = _SIGNOFF.sub("", text)
        text = _SGML_CONTROL.sub(" ", text)
        # "&lt;Comissaria Smith>" marks a company name: keep the name, drop the brackets
        text = _COMPANY.sub(r"\1", text)
        title = _COMPANY.sub(r"\1", fields["TITLE"]) if fields["TITLE"] else None
        yield RawDoc(
            doc_id=f"{spec.name}:{newid.group(1) if newid else line}",
            title=title,
            text=text,
            date=fields["DATE"].strip() if fields["DATE"] else None,
            source=spec.name,
            origin=f"{path}:{line}",
        )

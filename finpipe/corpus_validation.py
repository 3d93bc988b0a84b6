"""Validate the ingested corpus batch by batch: memory stays flat in the corpus size.

Each batch (a row group of the ingested Parquet, or `batch_rows` rows) goes through the
pandera contract on its own; the rows that pass are appended to the clean Parquet, the failing
ones to the quarantine JSONL, and the report's counts are added up (Tally). The one check that
spans rows, unique (doc_id, sent_idx), is settled by a first pass over the key columns
(`repeated_keys`): every key's 64-bit hash goes to a scratch file on disk, partitioned by its
top bits, and each partition is counted alone, so that pass holds one partition (~16 MB) and
the second only the hashes of keys that occur more than once. The outputs equal one
validation of the whole table.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from finpipe.config import Validate
from finpipe.schemas import SEEN_BEFORE, apply, corpus_schema, rule_order
from finpipe.seen_keys import SeenKeys, key_hashes
from finpipe.validation_report import Tally

log = logging.getLogger(__name__)

KEY = ["doc_id", "sent_idx"]  # unique per corpus (the schema's table-wide check)


def _batches(path: Path, batch_rows: int | None, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The table in row groups (as ingest wrote them), or in batches of batch_rows rows."""
    # without pre-buffering: with it, iter_batches keeps every row group's read buffers until
    # the file is closed (apache/arrow#39808), which grew with the corpus (~15 MB per 1M
    # sentences) and would not be flat at 100M
    pf = pq.ParquetFile(path, pre_buffer=False)
    if batch_rows is None:
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i, columns=columns).to_pandas()
    else:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch.to_pandas()


PARTITION_BYTES = 16 << 20  # key hashes per scratch partition, counted in memory one at a time
MAX_PARTITIONS = 256  # open files; past 2^29 rows the partitions grow beyond PARTITION_BYTES


def repeated_keys(path: Path, batch_rows: int | None, scratch: Path) -> np.ndarray:
    """The sorted 64-bit hashes of the keys that occur more than once in the table.

    Hand-written because no library here does an out-of-core duplicate count in a few lines:
    hashes are appended to 2^b scratch files by their top b bits, sized from the row count in
    the Parquet footer so a file holds about PARTITION_BYTES, then each file is read and
    counted on its own."""
    rows = pq.ParquetFile(path).metadata.num_rows
    bits = min(max(0, math.ceil(math.log2(max(1, rows * 8 / PARTITION_BYTES)))), int(math.log2(MAX_PARTITIONS)))
    names = [scratch / f"keys-{b:03d}.u64" for b in range(1 << bits)]
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(n, "wb")) for n in names]
        for df in _batches(path, batch_rows, columns=KEY):
            hashes = key_hashes(df, KEY)
            if not bits:
                hashes.tofile(files[0])
                continue
            part = hashes >> np.uint64(64 - bits)
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(1 << bits, dtype=np.uint64))
            for b, chunk in enumerate(np.split(hashes[order], bounds[1:])):
                if len(chunk):
                    chunk.tofile(files[b])
    repeated = []
    for name in names:
        keys, counts = np.unique(np.fromfile(name, dtype=np.uint64), return_counts=True)
        repeated.append(keys[counts > 1])
        name.unlink()
    return np.concatenate(repeated) if repeated else np.empty(0, dtype=np.uint64)  # partitions are in order


def _json_lines(rows: pd.DataFrame) -> str:
    """Quarantined rows as the JSONL of write_quarantine, helper columns left out."""
    return rows.drop(columns=[c for c in rows.columns if c.startswith("_")]).to_json(
        orient="records", lines=True, force_ascii=False
    )


def _no_helpers(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in df.columns if c.startswith("_")])


def _clean_schema(first: pd.DataFrame, ingested: pa.Schema) -> pa.Schema:
    """The clean file's schema: what pandas' to_parquet of the whole table wrote (its types,
    pandas metadata), from the first batch; a column all null in that batch takes the
    ingested type, so later batches with values still fit."""
    inferred = pa.Table.from_pandas(first, preserve_index=False).schema
    for i, f in enumerate(inferred):
        if pa.types.is_null(f.type):
            inferred = inferred.set(i, f.with_type(ingested.field(f.name).type))
    return inferred


def validate_corpus_file(
    in_path: Path, cfg: Validate, clean_path: Path, quarantine_path: Path, batch_rows: int | None = None
) -> Tally:
    """Validate in_path into clean_path (Parquet) and quarantine_path (JSONL), batch by batch."""
    schema = corpus_schema(cfg.corpus.min_chars, cfg.corpus.max_chars)
    tally = Tally(rule_order=rule_order(schema))
    with tempfile.TemporaryDirectory(prefix=".keys-", dir=clean_path.parent) as scratch:
        repeated = repeated_keys(in_path, batch_rows, Path(scratch))
    seen = SeenKeys()  # of the repeated keys only: 8 bytes a key that occurs twice or more
    writer: pq.ParquetWriter | None = None
    arrow_schema: pa.Schema | None = None
    columns = pq.read_schema(in_path).remove_metadata()  # the types, whatever a batch's values
    with open(quarantine_path, "w", encoding="utf-8") as quarantine:
        try:
            for df in _batches(in_path, batch_rows):
                hashes = key_hashes(df, KEY)
                outcome = apply(schema, df.assign(**{SEEN_BEFORE: seen.contains(hashes)}))
                seen.add(hashes[np.isin(hashes, repeated)])
                tally.add(df, outcome)
                passed = _no_helpers(outcome.passed)
                if arrow_schema is None:
                    arrow_schema = _clean_schema(passed, columns)
                    writer = pq.ParquetWriter(clean_path, arrow_schema)
                table = pa.Table.from_pandas(passed, schema=arrow_schema, preserve_index=False)
                writer.write_table(table)  # type: ignore[union-attr]
                if len(outcome.quarantined):
                    quarantine.write(_json_lines(outcome.quarantined))
        finally:
            if writer is not None:
                writer.close()
        if not tally.rows_quarantined:
            quarantine.write(_json_lines(pd.DataFrame(columns=["reasons"])))  # as pandas writes no rows: "\n"
    if writer is None:  # no row groups at all: an empty table of the ingested columns
        pq.write_table(columns.empty_table(), clean_path)
    log.info("corpus: %d keys occur more than once; their hashes held in %.1f MB", len(repeated), seen.nbytes / 1e6)
    return tally

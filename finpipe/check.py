"""`finpipe check`: ingest and validate one user file in memory with the pipeline's own code.

The same readers, the same seeded train/dev/test split (tasks/ingest.py, finpipe/splits.py)
and the same pandera contracts as the ingest and validate stages, so a file that passes
`check` passes the stages too, leaks between train and dev/test included. The spec comes
from flags (defaults: the stage's dataclass defaults) or from a dataset of params.yaml.
A damaged file (cut short or broken: finpipe/readers/files.py Damage) fails the check even
when the records before the damage pass: the stages would read only those.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from finpipe.config import CorpusIngest, NerIngest, Params, SentimentIngest, Validate, load_params, parse, project_root
from finpipe.errors import UserError
from finpipe.labelled import ingest_ner_dataset, read_sentiment_dataset
from finpipe.readers.corpus import read_corpus
from finpipe.readers.files import Damages
from finpipe.schemas import Outcome
from finpipe.sentence_rows import CorpusStats, sentence_batches
from finpipe.validation import validate_corpus, validate_ner, validate_sentiment
from finpipe.validation_report import summarise

DEFAULT_LABELS = ["negative", "neutral", "positive"]
FLAG_NAME = "check"  # the dataset name (and id prefix) of a file checked from flags
# the spec flags each kind takes (CLI flag names with - as _)
KIND_FLAGS = {
    "corpus": {"format", "text_column", "id_column", "dev_fraction", "seed"},
    "sentiment": {
        "format",
        "text_column",
        "label_column",
        "score_column",
        "id_column",
        "labels",
        "dev_fraction",
        "test_fraction",
        "seed",
    },
    "ner": {"format", "labels", "tag_scheme", "dev_fraction", "test_fraction", "seed"},
}
SPEC_FLAGS = tuple(sorted(set().union(*KIND_FLAGS.values())))
NOT_CHECKED = {
    "corpus": "check reads this one source: documents repeated in another corpus source "
    "(dropped by `finpipe ingest corpus`) are not looked for",
}

Section = CorpusIngest | SentimentIngest | NerIngest  # a kind's ingest section, holding the dataset checked


@dataclass(frozen=True)
class Target:
    """What to check: one dataset of a kind's ingest section, read from root."""

    kind: str
    name: str
    label: str  # the dataset column of the report
    section: Section
    root: Path
    source: str  # the file(s), for the report
    validate: Validate
    notes: list[str]  # checks that `check` cannot do for this target
    default_labels: list[str] | None = None  # the label set of a file checked from flags, if it has a label column


@dataclass(frozen=True)
class Checked:
    summary: dict[str, Any]
    notes: list[str]


def check(
    kind: str,
    path: Path | None,
    *,
    dataset: str | None = None,
    params_file: Path | None = None,
    flags: dict[str, Any] | None = None,
    max_bad_fraction: float | None = None,
) -> Checked:
    """Check `path` as the ingest + validate stages would. `dataset`: take its whole spec from
    params (path replaced by `path` when given); else the spec comes from `flags`."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    if dataset is not None:
        target = _from_params(kind, dataset, params_file or Path("params.yaml"), path, flags)
    elif path is None:
        raise UserError("check: give a FILE, or --dataset NAME to check a dataset of params.yaml")
    else:
        target = _from_flags(kind, path, flags, params_file)
    if max_bad_fraction is not None:
        fields = {**dataclasses.asdict(target.validate), "max_bad_fraction": max_bad_fraction}
        target = dataclasses.replace(target, validate=parse(Validate, fields, source="--max-bad-fraction"))
    return Checked(_run(target), target.notes)


def _validate_section(params_file: Path | None) -> Validate:
    if params_file is None:
        return Validate()
    return load_params(params_file, check_paths=False).validate


def _from_flags(kind: str, path: Path, flags: dict[str, Any], params_file: Path | None) -> Target:
    wrong = sorted(set(flags) - KIND_FLAGS[kind])
    if wrong:
        shown = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise UserError(f"check {kind}: {shown} does not apply to {kind} files")
    default_labels = None
    if kind == "corpus":
        source = {"name": FLAG_NAME, "path": path.name, **_pick(flags, "format", "text_column", "id_column")}
        section: Section = parse(CorpusIngest, {"sources": [source], **_pick(flags, "seed", "dev_fraction")}, source="arguments")
    elif kind == "sentiment":
        spec = _sentiment_flags(path, flags)
        section = parse(SentimentIngest, {"datasets": {FLAG_NAME: spec}, **_pick(flags, "seed")}, source="arguments")
        default_labels = None if flags.get("labels") else DEFAULT_LABELS
    else:
        spec = {"path": path.name, **_pick(flags, "format", "tag_scheme", "dev_fraction", "test_fraction")}
        spec |= {"entity_types": flags["labels"]} if "labels" in flags else {}
        section = parse(NerIngest, {"datasets": {FLAG_NAME: spec}, **_pick(flags, "seed")}, source="arguments")
    notes = [NOT_CHECKED[kind]] if kind in NOT_CHECKED else []
    validate = _validate_section(params_file)
    return Target(kind, FLAG_NAME, path.name, section, path.parent, str(path), validate, notes, default_labels)


def _pick(flags: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: flags[k] for k in keys if k in flags}


def _sentiment_flags(path: Path, flags: dict[str, Any]) -> dict[str, Any]:
    """A SentimentDataset spec from flags: a label column named `label` unless a score column
    is given (either detected by its usual names when the file lacks it). The label set,
    unless --labels gives it, is settled once the columns are known (Target.default_labels)."""
    label_column = flags.get("label_column", None if "score_column" in flags else "label")
    spec = _pick(flags, "format", "text_column", "score_column", "id_column", "dev_fraction", "test_fraction")
    return {"path": path.name, **spec, "label_column": label_column, "labels": flags.get("labels")}


def _from_params(kind: str, name: str, params_file: Path, path: Path | None, flags: dict[str, Any]) -> Target:
    if flags:
        shown = ", ".join("--" + f.replace("_", "-") for f in sorted(flags))
        raise UserError(f"check: {shown} cannot be combined with --dataset: the spec comes from ingest.{kind} in {params_file}")
    params = load_params(params_file, check_paths=False)  # FILE may not be in place yet
    section, spec = _dataset_spec(params, kind, name, params_file)
    notes = [NOT_CHECKED[kind]] if kind in NOT_CHECKED else []
    if path is None:  # the dataset's own file(s), where the ingest stage reads them
        root = project_root(params_file) / params.paths.inputs[kind]
        files = [spec.path] if spec.path else list((spec.splits or {}).values())
        return Target(kind, name, name, section, root, ", ".join(str(root / f) for f in files), params.validate, notes)
    if getattr(spec, "splits", None):
        notes.append(
            f"{path.name} replaces the split files of {name} ({', '.join(spec.splits)}) and is split by its "
            f"dev_fraction/test_fraction; leave FILE out to check the dataset's own files against each other"
        )
    changes = {"path": path.name} if kind == "corpus" else {"path": path.name, "splits": None}
    spec = dataclasses.replace(spec, **changes)
    section = _with_spec(section, name, spec)
    return Target(kind, name, name, section, path.parent, str(path), params.validate, notes)


def _dataset_spec(params: Params, kind: str, name: str, params_file: Path) -> tuple[Section, Any]:
    """The kind's ingest section and the spec of its dataset (corpus: source) `name`."""
    section = getattr(params.ingest, kind)
    specs = {s.name: s for s in section.sources} if kind == "corpus" else dict(section.datasets)
    if name not in specs:
        where = "ingest.corpus.sources" if kind == "corpus" else f"ingest.{kind}.datasets"
        raise UserError(f"check: --dataset {name!r} is not in {where} of {params_file} (have: {sorted(specs) or 'none'})")
    return _with_spec(section, name, specs[name]), specs[name]


def _with_spec(section: Section, name: str, spec: Any) -> Section:
    """The section with `name` its only dataset (source): the stage's seed and fractions stay."""
    if isinstance(section, CorpusIngest):
        return dataclasses.replace(section, sources=[spec])
    return dataclasses.replace(section, datasets={name: spec})


Read = tuple[pd.DataFrame, Outcome, dict[str, Any]]  # rows, their validation, the notes ingest writes


def _corpus(t: Target, s: CorpusIngest, damage: Damages) -> Read:
    stats = CorpusStats()
    docs = read_corpus(t.root, s.sources[0], damage)
    kw = {"seed": s.seed, "dev_fraction": s.dev_fraction, "markup": s.strip_markup, "batch_rows": s.chunk_rows}
    batches = list(sentence_batches(docs, stats, **kw))
    if not batches:
        found = f" ({'; '.join(map(str, damage))})" if damage else ""
        raise UserError(f"{t.source}: no text found{found}")
    df = pa.Table.from_batches(batches).to_pandas()
    notes = {"colliding_ids": stats.colliding_ids, "first_colliding_ids": stats.first_colliding_ids}
    return df, validate_corpus(df, t.validate), notes


def _sentiment(t: Target, s: SentimentIngest, damage: Damages) -> Read:
    df, spec = read_sentiment_dataset(t.root, t.name, s.datasets[t.name], s.seed, damage)
    if spec.labels is None and spec.label_column is not None and t.default_labels:
        spec = dataclasses.replace(spec, labels=t.default_labels)
    # what the ingest stage writes to <name>.meta.json for the validate stage
    meta = {"labels": spec.label_set, "score_range": list(spec.score_range), "has_score": spec.score_column is not None}
    return df, validate_sentiment(df, meta, t.validate), {}


def _ner(t: Target, s: NerIngest, damage: Damages) -> Read:
    spec = s.datasets[t.name]
    df, _ = ingest_ner_dataset(t.root, t.name, spec, s.seed, damage)
    return df, validate_ner(df, {"tags": spec.tag_set}, t.validate), {}


def _run(t: Target) -> dict[str, Any]:
    """The ingest stage's reading and splitting, then the validate stage's contracts."""
    run = {"corpus": _corpus, "sentiment": _sentiment, "ner": _ner}[t.kind]
    damage: Damages = []
    df, outcome, notes = run(t, t.section, damage)
    notes["damage"] = [str(d) for d in damage]
    summary = summarise(t.label, t.source, len(df), outcome, t.validate.max_bad_fraction, notes)
    if damage:  # the stages would go on with the records before the damage; check says so
        summary["passed"] = False
    return summary

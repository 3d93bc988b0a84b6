"""What one new batch shape costs: the first training step at a sequence width against the next.

Why: on a GPU the first step at a new (batch, width) shape plans and builds kernels (cuDNN's
attention planning, cuBLAS heuristics), measured at about 0.15 s a shape on an H200 in an earlier
session (issue #13). Padding to a multiple of 8 gives a run up to max_seq_length / 8 widths, to a
multiple of 64 (the stages' `pad_to_multiple_of: auto` on a GPU) up to max_seq_length / 64. This
runs BertModel (SDPA, random weights: speed does not depend on them) with a mean-pooled linear
head, one forward + backward + AdamW step per width, twice over the widths in a fresh process:
the first pass pays each shape's set-up, the second does not. One step at a width outside the
list comes first, so CUDA's and the libraries' own start-up is not counted against any width.

    python benchmarks/shape_cost.py [--device cuda] [--shape minilm|bert-base] [--batch-size 32]
        [--widths 8,16,...,128] [--bf16 on|off]

Prints a line per width (first and second step, their difference) and one JSON line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import BertConfig, BertModel

SHAPES = {
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--widths", default=",".join(str(w) for w in range(8, 129, 8)))
    ap.add_argument("--bf16", choices=["on", "off"], default="on")
    args = ap.parse_args()
    device = torch.device(args.device)
    widths = [int(w) for w in args.widths.split(",")]
    torch.manual_seed(0)
    model = BertModel(BertConfig(**SHAPES[args.shape], attn_implementation="sdpa"), add_pooling_layer=False).to(device)
    head = torch.nn.Linear(model.config.hidden_size, 3).to(device)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")

    def step(width: int) -> float:
        # rows of every length up to `width`, as a length-grouped batch holds: the padding mask
        # is not all ones, so attention takes its masked path as in training
        lengths = torch.linspace(max(1, width // 2), width, args.batch_size).long()
        mask = (torch.arange(width).expand(args.batch_size, width) < lengths[:, None]).long()
        ids = torch.randint(1000, 30000, (args.batch_size, width)) * mask
        labels = torch.randint(0, 3, (args.batch_size,))
        t0 = time.perf_counter()
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16 == "on"):
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            logits = head((hidden * m).sum(1) / m.sum(1))
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    step(max(widths) + 8)  # start-up, at a width outside the list
    step(max(widths) + 8)
    first = [step(w) for w in widths]
    second = [step(w) for w in widths]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{where}, torch {torch.__version__}, shape {args.shape}, batch {args.batch_size}, bf16 {args.bf16}")
    print(f"{'width':>5s} {'first s':>8s} {'second s':>9s} {'extra s':>8s}")
    for w, a, b in zip(widths, first, second, strict=True):
        print(f"{w:5d} {a:8.4f} {b:9.4f} {a - b:8.4f}")
    extra = [a - b for a, b in zip(first, second, strict=True)]
    print(
        f"a new width costs {statistics.median(extra):.4f} s (median; min {min(extra):.4f}, max {max(extra):.4f}) on top of "
        f"a {statistics.median(second):.4f} s step"
    )
    out = {
        "device": where,
        "torch": torch.__version__,
        "shape": args.shape,
        "batch_size": args.batch_size,
        "bf16": args.bf16 == "on",
        "new_width_s_median": round(statistics.median(extra), 4),
        "new_width_s_min": round(min(extra), 4),
        "new_width_s_max": round(max(extra), 4),
        "step_s_median": round(statistics.median(second), 4),
        "widths": widths,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Scale benchmark for ingest + validate of the corpus (not a test: it prints, never asserts).

Generates synthetic financial-news documents (finpipe.synth) as JSONL with about 10k, 100k
and 1M sentences, then runs `finpipe ingest corpus` and `finpipe validate corpus` each in a
fresh process and reports wall time, sentences/s and the peak RSS of each process.
Target (issue #2): linear time; 1M sentences in under 60 s; peak RSS under 2 GB.

    python benchmarks/ingest_scale.py [--sizes 10000 100000 1000000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from finpipe.synth import corpus_documents

SENTENCES_PER_DOC = 7.5  # measured average of the synthetic documents, title included


def make_corpus(path: Path, n_sentences: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for doc in corpus_documents(int(n_sentences / SENTENCES_PER_DOC) + 1, seed=11):
            fh.write(json.dumps(doc) + "\n")


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run cmd in a child process: (seconds, peak RSS of that child in MB)."""
    # wait4 gives the rusage of this child alone, unlike RUSAGE_CHILDREN which keeps the max so far
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="finpipe-bench-"))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["ingest"]["corpus"]["sources"] = [
        {"name": "synthetic", "path": "docs.jsonl", "text_column": "text", "title_column": "title", "id_column": "id"}
    ]
    finpipe = [sys.executable, "-m", "finpipe.cli"]
    # the fixed cost of a stage process (interpreter + imports), measured here, so the
    # per-sentence cost below is the stages' own
    startup, _ = timed([sys.executable, "-c", "import finpipe.cli, tasks.ingest, tasks.validate"])
    rows = []
    for n in args.sizes:
        case = work / f"n{n}"
        (case / "raw").mkdir(parents=True, exist_ok=True)
        make_corpus(case / "raw" / "docs.jsonl", n)
        (case / "params.yaml").write_text(yaml.safe_dump(params))
        t_ing, rss_ing = timed(
            [
                *finpipe,
                "ingest",
                "corpus",
                "--params",
                str(case / "params.yaml"),
                "--input",
                str(case / "raw"),
                "--output",
                str(case / "ingested"),
                "--metrics",
                str(case / "ingest.json"),
            ]
        )
        t_val, rss_val = timed(
            [
                *finpipe,
                "validate",
                "corpus",
                "--params",
                str(case / "params.yaml"),
                "--input",
                str(case / "ingested"),
                "--output",
                str(case / "clean"),
                "--quarantine",
                str(case / "q"),
                "--reports",
                str(case / "reports"),
            ]
        )
        sentences = json.loads((case / "ingest.json").read_text())["sentences"]
        total = t_ing + t_val
        per = (total - 2 * startup) / sentences * 1e6
        rows.append(
            {
                "sentences": sentences,
                "ingest_s": round(t_ing, 2),
                "validate_s": round(t_val, 2),
                "us_per_sentence_after_startup": round(per, 2),
                "total_s": round(total, 2),
                "sentences_per_s": round(sentences / total),
                "peak_rss_mb": round(max(rss_ing, rss_val)),
            }
        )
        print(
            f"{sentences:>9,} sentences: ingest {t_ing:6.1f} s, validate {t_val:6.1f} s, total {total:6.1f} s, "
            f"{sentences / total:>9,.0f} sentences/s, peak RSS ingest {rss_ing:,.0f} MB / validate {rss_val:,.0f} MB",
            flush=True,
        )
    print()
    print("| sentences | ingest s | validate s | total s | sentences/s | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [
            f"{r['sentences']:,}",
            r["ingest_s"],
            r["validate_s"],
            r["total_s"],
            f"{r['sentences_per_s']:,}",
            f"{r['peak_rss_mb']:,}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |")
    print(
        f"\nprocess start-up (interpreter + imports): {startup:.2f} s per stage process; µs per sentence after it: "
        f"{', '.join(str(r['us_per_sentence_after_startup']) for r in rows)} (linear time: about constant)"
    )
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()

"""Scale benchmark: ingest, validate and pretraining example building of the corpus (not a
test: it prints, never asserts).

Generates synthetic financial-news documents (finpipe.synth) as JSONL with about 10k, 100k
and 1M sentences (or --sizes, up to 10M and beyond), then runs each stage in a fresh process:
`finpipe ingest corpus`, `finpipe validate corpus`, and the pretrain stage's example building
(the train documents of the clean corpus, tokenized by the configured base's tokenizer, NSP
pairs shard by shard into the Arrow cache; no training). Reports wall time, sentences/s and
the peak RSS of each process, with the peak reached by 25/50/75 % of its run (sampled from
/proc every 0.5 s: a plateau reached early is flat memory, a ramp grows with the corpus and
would not be flat at 10x the size); the interpreter's start-up (time and RSS, imports included) is
measured apart. Targets (issues #2, #13): linear time; 1M sentences ingested and validated in
under 60 s; peak RSS flat in the corpus size (under 2 GB).

    python benchmarks/ingest_scale.py [--sizes 10000 100000 1000000] [--stages ingest validate examples] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from finpipe.synth import corpus_documents

SENTENCES_PER_DOC = 7.5  # measured average of the synthetic documents, title included
STAGES = ("ingest", "validate", "examples")
IMPORTS = {  # what each stage's process imports before it starts working
    "ingest": "import finpipe.cli, tasks.ingest",
    "validate": "import finpipe.cli, tasks.validate",
    "examples": "import finpipe.pretrain.data, finpipe.pretrain.base, transformers",
}


def make_corpus(path: Path, n_sentences: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for doc in corpus_documents(int(n_sentences / SENTENCES_PER_DOC) + 1, seed=11):
            fh.write(json.dumps(doc) + "\n")


def _rss_mb(pid: int) -> float | None:
    """The process's resident set now (Linux /proc), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def timed(cmd: list[str], every: float = 0.5) -> tuple[float, float, list[float]]:
    """Run cmd in a child process: (seconds, peak RSS of that child in MB, the peak RSS so far
    at 25, 50, 75 and 100 % of the run, from /proc samples every `every` s: flat memory shows
    as a plateau reached early, a leak as a ramp)."""
    # wait4 gives the rusage of this child alone, unlike RUSAGE_CHILDREN which keeps the max so far
    # stderr goes to a file: a pipe nobody reads until the end would stall a chatty child
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)

        def sample() -> None:  # beside the wait, so the time measured is not rounded to `every`
            while not done.wait(every):
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    samples.append((time.perf_counter() - t0, rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"failed: {' '.join(cmd)}\n{err.read().decode(errors='replace')[-2000:]}")
    peak = usage.ru_maxrss / 1024
    so_far = [max((r for t, r in samples if t <= q * seconds), default=0.0) for q in (0.25, 0.5, 0.75)]
    return seconds, peak, [*so_far, peak]


def build_examples(case: Path) -> None:
    """The pretrain stage's example building alone, in this process (--examples-of)."""
    from finpipe.config import load_params
    from finpipe.pretrain.base import load_tokenizer, resolve
    from finpipe.pretrain.data import CorpusDocuments, cached_examples

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_params(case / "params.yaml", check_paths=False).pretrain
    docs = CorpusDocuments(
        case / "clean" / "corpus.parquet",
        "train",
        exclude=frozenset(cfg.data.replay_sources),
        shard_documents=cfg.data.shard_documents,
    )
    tokenizer = load_tokenizer(resolve(cfg.model.base))
    shutil.rmtree(case / "cache", ignore_errors=True)
    ds = cached_examples(docs, tokenizer, cfg.data, seed=cfg.data.seed, cache_dir=case / "cache", key="train")
    (case / "examples.json").write_text(json.dumps({"examples": len(ds), "documents": docs.count.documents}))


def stage_cmd(stage: str, case: Path) -> list[str]:
    finpipe = [sys.executable, "-m", "finpipe.cli"]
    params = ["--params", str(case / "params.yaml")]
    if stage == "ingest":
        return [*finpipe, "ingest", "corpus", *params, "--input", str(case / "raw"), "--output", str(case / "ingested"),
                "--metrics", str(case / "ingest.json")]  # fmt: skip
    if stage == "validate":
        return [*finpipe, "validate", "corpus", *params, "--input", str(case / "ingested"), "--output", str(case / "clean"),
                "--quarantine", str(case / "q"), "--reports", str(case / "reports")]  # fmt: skip
    return [sys.executable, str(Path(__file__).resolve()), "--examples-of", str(case)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep each size's files (else removed once measured)")
    ap.add_argument("--examples-of", type=Path, default=None, help=argparse.SUPPRESS)  # the example-building child
    args = ap.parse_args()
    if args.examples_of:
        build_examples(args.examples_of)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="finpipe-bench-"))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["ingest"]["corpus"]["sources"] = [
        {"name": "synthetic", "path": "docs.jsonl", "text_column": "text", "title_column": "title", "id_column": "id"}
    ]
    params["pretrain"]["data"]["replay_sources"] = []  # one source: every document is domain text
    # the fixed cost of a stage process (interpreter + imports), measured here, so the
    # per-sentence cost below is the stages' own
    startup = {s: timed([sys.executable, "-c", IMPORTS[s]])[:2] for s in args.stages}
    print("process start-up: " + ", ".join(f"{s} {t:.2f} s / {r:,.0f} MB" for s, (t, r) in startup.items()), flush=True)
    rows = []
    for n in args.sizes:
        case = work / f"n{n}"
        (case / "raw").mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        make_corpus(case / "raw" / "docs.jsonl", n)
        print(f"{n:,}: corpus written in {time.perf_counter() - t0:.0f} s", flush=True)
        # the params file sits in the case folder: every input path absolute, the corpus this one
        inputs = {k: str(Path(v).resolve()) for k, v in params["paths"]["inputs"].items()}
        case_params = {**params, "paths": {**params["paths"], "inputs": {**inputs, "corpus": str(case / "raw")}}}
        (case / "params.yaml").write_text(yaml.safe_dump(case_params))
        row: dict[str, float | int] = {}
        for stage in STAGES:
            if stage not in args.stages:
                continue
            seconds, rss, ramp = timed(stage_cmd(stage, case))
            row[f"{stage}_s"], row[f"{stage}_rss_mb"] = round(seconds, 2), round(rss)
            row[f"{stage}_rss_ramp_mb"] = [round(r) for r in ramp]
            if stage == "ingest":
                row["sentences"] = json.loads((case / "ingest.json").read_text())["sentences"]
            if stage == "examples":
                row["examples"] = json.loads((case / "examples.json").read_text())["examples"]
            ramp_text = " / ".join(f"{r:,.0f}" for r in ramp)
            print(
                f"{n:,}: {stage} {seconds:.1f} s, peak RSS {rss:,.0f} MB (peak so far at 25/50/75/100 %: {ramp_text})", flush=True
            )
        sentences = int(row.get("sentences", n))
        row["sentences"] = sentences
        for stage in args.stages:
            row[f"{stage}_sentences_per_s"] = round(sentences / row[f"{stage}_s"])
            row[f"{stage}_us_per_sentence_after_startup"] = round((row[f"{stage}_s"] - startup[stage][0]) / sentences * 1e6, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(case, ignore_errors=True)
    print()
    head = ["sentences"] + [f"{s} s / sentences/s / peak RSS MB" for s in args.stages]
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for r in rows:
        cells = [f"{r['sentences']:,}"] + [
            f"{r[f'{s}_s']} / {r[f'{s}_sentences_per_s']:,} / {r[f'{s}_rss_mb']:,}" for s in args.stages
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        "\nµs per sentence after start-up (linear time: about constant): "
        + "; ".join(f"{s} " + ", ".join(str(r[f"{s}_us_per_sentence_after_startup"]) for r in rows) for s in args.stages)
    )
    print(json.dumps({"startup": {s: {"s": round(t, 2), "rss_mb": round(r)} for s, (t, r) in startup.items()}, "rows": rows}))


if __name__ == "__main__":
    main()

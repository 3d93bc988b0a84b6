"""Dev-set screening of fine-tuning variants on a lent GPU machine that has no DVC (issue #12).

The device machine starts bare, takes at most 64 MiB of files and cannot install DVC, so this
runs a prepared workspace's stage commands (exactly the `cmd` lines DVC resolved from dvc.yaml,
`finpipe ...`) in dependency order, several at a time, without DVC:

  pack  (here, with DVC): from a workspace made by profiles/real-run.sh whose labelled data and
        models/base are built, write FOLDER with the stage list (name, cmd, deps, outs), the
        clean labelled data, models/base with its weights as float16 + xz (the only way
        MiniLM's 87 MB fit the 64 MiB; rounding error below 5e-4 relative, far under what bf16
        training on the GPU rounds anyway), and empty stand-ins for the raw inputs that
        params.yaml names (the stages check they exist but read only the clean data).
  run   (on the device): one copy of the workspace per grid entry (its params overrides), the
        stages run N at a time, a JSON line per finished stage appended to $OUT/results.jsonl
        (dev figures only: the test figures the stages also compute are left behind, so
        nothing here can be chosen on test), failures' log tails to $OUT/failures.log.

  table (anywhere): the dev figures of results.jsonl files as the Markdown table of RESULTS.md.
  exp-show (here): the same rows from `dvc exp show --json`, for the grid that
        profiles/tapt-screen.sh runs through DVC's experiment queue on a machine that has DVC.

Training curves are not recorded there (dvclive needs DVC and git; a no-op stand-in takes its
place), so these are screening figures, not pipeline outputs: the chosen configuration is then
run by `dvc repro` (make real) as usual.
"""

from __future__ import annotations

import argparse
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_screen")

SHIM = '''"""No-op dvclive for the screening machine (no DVC there): curves are not recorded."""
class Live:
    def __init__(self, *args, **kwargs):
        self.step = 0
    def __getattr__(self, name):
        return lambda *args, **kwargs: None
'''
SHIM_PLOTS = "class Metric:\n    @staticmethod\n    def could_log(v):\n        return isinstance(v, (int, float))\n"
SHIM_UTILS = "def standardize_metric_name(name, framework):\n    return name\n"
SCM_SHIM = "class SCMError(Exception):\n    pass\n"


def pack(workspace: Path, folder: Path, stage_prefixes: list[str], rebuild_weights: bool = True) -> None:
    import yaml
    from dvc.repo import Repo

    folder.mkdir(parents=True, exist_ok=True)
    stages = []
    with Repo(str(workspace.resolve())) as repo:
        for stage in repo.index.stages:
            if not any(stage.name.startswith(p) for p in stage_prefixes):
                continue
            stages.append(
                {
                    "name": stage.name,
                    "cmd": stage.cmd,
                    "deps": [d.def_path for d in stage.deps],
                    "outs": [o.def_path for o in stage.outs],
                }
            )
    if not stages:
        raise SystemExit(f"{workspace}: no stages named {stage_prefixes}")
    (folder / "stages.json").write_text(json.dumps(stages, indent=1))
    ws = folder / "ws"
    if ws.exists():
        shutil.rmtree(ws)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    # raw inputs: empty stand-ins under ws/inputs (the stages read only data/work/clean)
    params["paths"]["inputs"] = {kind: "inputs" for kind in params["paths"]["inputs"]}
    for kind in ("sentiment", "ner"):
        for ds in params["ingest"][kind]["datasets"].values():
            for rel in [ds["path"]] if "path" in ds else list(ds["splits"].values()):
                (ws / "inputs" / rel).parent.mkdir(parents=True, exist_ok=True)
                (ws / "inputs" / rel).write_text("stand-in: the stages read data/work/clean\n")
    for source in params["ingest"]["corpus"]["sources"]:
        (ws / "inputs" / source["path"]).mkdir(parents=True, exist_ok=True)
        (ws / "inputs" / source["path"] / "stand-in.sgm").write_text("stand-in\n")
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for rel in ("data/work/clean/sentiment", "data/work/clean/ner", "models/base"):
        shutil.copytree(workspace / rel, ws / rel, ignore=shutil.ignore_patterns("model.safetensors"))
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(workspace / "models/base/model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    tmp = folder / "model16.safetensors"
    if (folder / "model16.safetensors.xz").is_file() and not rebuild_weights:
        log.info("packed %d stages into %s (weights as before)", len(stages), folder)
        return
    save_file(half, str(tmp))
    with open(tmp, "rb") as src, lzma.open(folder / "model16.safetensors.xz", "wb", preset=9) as dst:
        shutil.copyfileobj(src, dst)
    tmp.unlink()
    log.info("packed %d stages into %s", len(stages), folder)


def _restore_weights(folder: Path, model_dir: Path, work: Path) -> None:
    from safetensors.torch import load_file, save_file

    raw = work / "model16.safetensors"
    with lzma.open(folder / "model16.safetensors.xz", "rb") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst)
    weights = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(raw)).items()}
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def _set(params: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node = params
    for key in path:  # the section must exist; a new key in it is checked by the stage's own parser
        if key not in node:
            raise SystemExit(f"grid override {dotted}: no section {key!r} in params.yaml")
        node = node[key]
    node[last] = value


def _dev_only(metrics: dict[str, Any]) -> dict[str, Any]:
    """Everything but test figures (the keys or sections that name test)."""
    if not isinstance(metrics, dict):
        return metrics
    return {k: _dev_only(v) for k, v in metrics.items() if "test" not in k.lower()}


def _metrics_path(cmd: str) -> str | None:
    parts = cmd.split()
    return parts[parts.index("--metrics") + 1] if "--metrics" in parts else None


def run(
    folder: Path,
    grid: dict[str, dict[str, Any]],
    concurrency: int,
    launch_until: float,
    kill_at: float,
    out: Path,
    work: Path,
    only: str | None = None,
    tapt_only: bool = False,
) -> None:
    import yaml

    start = time.monotonic()
    stages = json.loads((folder / "stages.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    shim = work / "shim"
    for rel, text in {
        "dvclive/__init__.py": SHIM,
        "dvclive/plots.py": SHIM_PLOTS,
        "dvclive/utils.py": SHIM_UTILS,
        "scmrepo/__init__.py": "",
        "scmrepo/exceptions.py": SCM_SHIM,
    }.items():
        (shim / rel).parent.mkdir(parents=True, exist_ok=True)
        (shim / rel).write_text(text)
    bindir = work / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "finpipe").write_text(f'#!/bin/sh\nexec {sys.executable} -m finpipe.cli "$@"\n')
    (bindir / "finpipe").chmod(0o755)
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", ""), str(shim)) if p)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )

    jobs: list[dict[str, Any]] = []
    first = True
    for variant, overrides in grid.items():
        ws = work / f"ws-{variant}"
        if ws.exists():
            shutil.rmtree(ws)
        shutil.copytree(folder / "ws", ws)
        if first:
            _restore_weights(folder, ws / "models/base", work)
            base_weights = ws / "models/base/model.safetensors"
        else:
            shutil.copy2(base_weights, ws / "models/base/model.safetensors")
        params = yaml.safe_load((ws / "params.yaml").read_text())
        # one CPU thread per job, as OMP_NUM_THREADS above: many jobs share the GPU box's cores
        # (the stages take their torch threads from this param, not from the environment)
        params.setdefault("runtime", {})["threads"] = 1
        for key, value in overrides.items():
            _set(params, key, value)
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for st in stages:
            # later grid entries change only TAPT: their base fine-tuning is the first entry's
            if (tapt_only or not first) and "tapt" not in st["name"]:
                continue
            if only and not re.search(only, st["name"]):
                continue
            jobs.append({"variant": variant, "ws": ws, **st})
        first = False

    def priority(job: dict[str, Any]) -> tuple[int, int, str]:
        # TAPT gates its fine-tuning: first; then seed by seed, so a cut-off run has whole seeds
        seed = next((int(p) for p in job["name"].split("-")[::-1] if p.isdigit()), 0)
        return (0 if job["name"].startswith("tapt") else 1, seed, job["name"])

    jobs.sort(key=priority)
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen[bytes], dict[str, Any], float, Path]] = {}
    done: set[tuple[str, str]] = set()
    failed: set[tuple[str, str]] = set()
    outs_of = {(j["variant"], o): j["name"] for j in jobs for o in j["outs"]}
    # each job's upstream stages (an output that is, or holds, one of its deps), found once
    blockers = {
        (job["variant"], job["name"]): [
            (variant, name)
            for dep in job["deps"]
            for (variant, out_path), name in outs_of.items()
            if variant == job["variant"] and (dep == out_path or dep.startswith(out_path + "/"))
        ]
        for job in jobs
    }

    results = out / "results.jsonl"
    while pending or running:
        now = time.monotonic() - start
        for key, (proc, job, t0, logf) in list(running.items()):
            if proc.poll() is None and now < kill_at:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            rc = proc.returncode
            row: dict[str, Any] = {
                "variant": job["variant"],
                "stage": job["name"],
                "rc": rc,
                "seconds": round(time.monotonic() - start - t0, 1),
            }
            metrics = _metrics_path(job["cmd"])
            if rc == 0 and metrics and (job["ws"] / metrics).is_file():
                row["metrics"] = _dev_only(json.loads((job["ws"] / metrics).read_text()))
                done.add((job["variant"], job["name"]))
            else:
                failed.add((job["variant"], job["name"]))
                tail = logf.read_text(errors="replace")[-3000:]
                with open(out / "failures.log", "a") as f:
                    f.write(f"==== {job['variant']} {job['name']} rc={rc}\n{tail}\n")
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            log.info(
                "%s %s rc=%s %.0fs (%d pending, %d running)",
                job["variant"],
                job["name"],
                rc,
                row["seconds"],
                len(pending),
                len(running) - 1,
            )
            del running[key]
        if now >= kill_at:
            break
        for job in list(pending):
            if len(running) >= concurrency or now >= launch_until:
                break
            need = blockers[(job["variant"], job["name"])]
            if any(b in failed for b in need):
                pending.remove(job)
                failed.add((job["variant"], job["name"]))
                with open(results, "a") as f:
                    f.write(json.dumps({"variant": job["variant"], "stage": job["name"], "rc": "blocked"}) + "\n")
                continue
            if not all(b in done for b in need):
                continue
            pending.remove(job)
            logf = work / "logs" / f"{job['variant']}-{job['name']}.log"
            logf.parent.mkdir(exist_ok=True)
            proc = subprocess.Popen(
                job["cmd"], shell=True, cwd=job["ws"], env=env, stdout=open(logf, "wb"), stderr=subprocess.STDOUT
            )
            running[f"{job['variant']}/{job['name']}"] = (proc, job, now, logf)
        if now >= launch_until and not running:
            break
        time.sleep(1)
    left = [f"{j['variant']}/{j['name']}" for j in pending]
    (out / "not_run.txt").write_text("\n".join(left) + "\n")
    log.info(
        "done in %.0f s; %d finished, %d failed, %d not started", time.monotonic() - start, len(done), len(failed), len(left)
    )


def from_exp_show(shown: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """results.jsonl rows (the shape `run` writes) from `dvc exp show --json`: the committed
    baseline's fine-tuning and TAPT metrics under the name `baseline`, each experiment's under
    its own name, dev figures only. Experiments not finished (queued, running, failed) and the
    uncommitted workspace are left out (logged)."""
    rows: list[dict[str, Any]] = []
    for commit in shown:
        if commit.get("rev") == "workspace" or commit.get("error"):
            continue
        entries = [(baseline, commit)]
        for exp in commit.get("experiments") or []:
            # a queued or running experiment is listed with its baseline's figures; a failed one
            # with whatever it left: only finished ones count (no executor once they are done)
            state = (exp.get("executor") or {}).get("state")
            for rev in exp.get("revs") or []:
                name = rev.get("name") or str(rev.get("rev", ""))[:7]
                if state not in (None, "success") or rev.get("error") or not rev.get("data"):
                    log.warning("experiment %s left out: %s", name, rev.get("error") or state)
                    continue
                entries.append((name, rev))
        for name, entry in entries:
            metrics = (entry.get("data") or {}).get("metrics") or {}
            # reports/finetune/<kind>/<task>/<variant>-s<seed>/metrics.json, reports/tapt/<task>/<start>/...
            kinds = {p.split("/")[3]: p.split("/")[2] for p in metrics if p.startswith("reports/finetune/")}
            for path in sorted(metrics):
                data = (metrics[path] or {}).get("data")
                parts = path.split("/")
                if not data or parts[-1] != "metrics.json":
                    continue
                if len(parts) == 5 and parts[1] == "tapt" and parts[2] in kinds:
                    stage = f"tapt-{kinds[parts[2]]}@{parts[2]}-{parts[3]}"
                elif len(parts) == 6 and parts[1] == "finetune":
                    stage = f"finetune-{parts[2]}@{parts[3]}-{parts[4]}"
                else:
                    continue
                rows.append({"variant": name, "stage": stage, "rc": 0, "metrics": _dev_only(data)})
    return rows


MAIN_METRIC = {"fpb50": "accuracy", "semeval": "cosine"}  # NER tasks: micro_f1


def table(results: list[Path]) -> str:
    """Markdown: per task and variant, the mean dev figure over seeds, its spread and the
    difference from base (mean of the seeds' figures, not a paired test), and TAPT's held-out
    perplexity before -> after."""
    import statistics

    runs: dict[tuple[str, str], dict[int, float]] = {}
    tapt: dict[tuple[str, str], dict[str, Any]] = {}
    for path in results:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            m = row.get("metrics")
            if not m:
                continue
            if row["stage"].startswith("tapt-"):
                task = row["stage"].split("@", 1)[1].rsplit("-", 1)[0]
                tapt[(task, row["variant"])] = m
                continue
            variant = "base" if m["variant"] == "base" else row["variant"]
            runs.setdefault((m["task"], variant), {})[m["seed"]] = m["dev"][MAIN_METRIC.get(m["task"], "micro_f1")]
    lines = [
        "| task (dev metric) | variant | seeds | mean | sd | − base | TAPT steps | held-out ppl before → after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(t for t, _ in runs):
        base = statistics.mean(runs[(task, "base")].values()) if (task, "base") in runs else None

        def order(variant: str) -> tuple[bool, int, str]:  # base, then by TAPT epochs
            digits = "".join(ch for ch in variant.split("-")[0] if ch.isdigit())
            return (variant != "base", int(digits or 0), variant)

        for variant in sorted((v for t, v in runs if t == task), key=order):
            seeds = runs[(task, variant)]
            vals = [seeds[k] for k in sorted(seeds)]
            mean = statistics.mean(vals)
            sd = f"{statistics.stdev(vals):.4f}" if len(vals) > 1 else "–"  # no spread from one seed
            diff = "" if variant == "base" or base is None else f"{mean - base:+.4f}"
            tp = tapt.get((task, variant))
            steps = str(tp["train"]["steps"]) if tp else ""
            ppl = f"{tp['base']['perplexity']:.0f} → {tp['adapted']['perplexity']:.0f}" if tp else ""
            metric = MAIN_METRIC.get(task, "micro_f1")
            lines.append(f"| {task} ({metric}) | {variant} | {len(vals)} | {mean:.4f} | {sd} | {diff} | {steps} | {ppl} |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--keep-weights", action="store_true", help="reuse FOLDER's packed weights")
    p.add_argument("--stages", nargs="+", default=["tapt-", "finetune-"], help="stage name prefixes")
    r = sub.add_parser("run")
    r.add_argument("--folder", type=Path, required=True)
    r.add_argument("--grid", type=Path, required=True, help="JSON: {variant: {dotted.key: value}}")
    r.add_argument("--concurrency", type=int, default=8)
    r.add_argument("--launch-until", type=float, default=420.0, help="seconds: start no stage after this")
    r.add_argument("--kill-at", type=float, default=520.0, help="seconds: stop what still runs")
    r.add_argument("--tapt-only", action="store_true", help="no base fine-tuning (an earlier call ran it)")
    r.add_argument("--only", help="regex: run only the stages it matches (a quick check)")
    r.add_argument("--work", type=Path, default=Path("/tmp/gpu-screen"), help="workspace copies, logs")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "screen-out")))
    t = sub.add_parser("table", help="the dev figures of results.jsonl files as a Markdown table")
    t.add_argument("results", type=Path, nargs="+")
    e = sub.add_parser("exp-show", help="results.jsonl rows from `dvc exp show --json` (stdout)")
    e.add_argument("shown", type=Path, help="the output of `dvc exp show --json`")
    e.add_argument("--baseline", default="profile", help="name of the committed baseline's rows")
    a = ap.parse_args()
    if a.cmd == "table":
        print(table(a.results))
    elif a.cmd == "exp-show":
        for row in from_exp_show(json.loads(a.shown.read_text()), a.baseline):
            print(json.dumps(row))
    elif a.cmd == "pack":
        pack(a.workspace, a.folder, a.stages, not a.keep_weights)
    else:
        a.out.mkdir(parents=True, exist_ok=True)
        run(
            a.folder, json.loads(a.grid.read_text()), a.concurrency, a.launch_until, a.kill_at, a.out, a.work, a.only, a.tapt_only
        )


if __name__ == "__main__":
    main()

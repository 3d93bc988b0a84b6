"""Concurrent stages as a user runs them: `finpipe flow` with 1 stage at a time and with N, on
fresh copies of a project, and what the measured stage times predict for a bigger cluster.

    python benchmarks/fanout.py run [--project DIR] [--concurrency 1 2] [--stages ...] [--set K=V ...]
        [--seed STAGE ...] [--out fanout.json]
    python benchmarks/fanout.py estimate fanout.json [--workers 1 2 16] [--extra STAGE=SECONDS ...]
        [--target STAGE ...]

`run` copies the project (default: this repository, i.e. the embedded default; any prepared
workspace such as profiles/real-run.sh's with REAL_SETUP_ONLY=1) once per concurrency, each copy
with an empty DVC cache and no dvc.lock so that every stage computes (no run-cache shared
between the copies), and times `finpipe flow --concurrency N` in a fresh process: wall time,
the CPU seconds of the whole process tree (flow, Dask workers, dvc, stages: getrusage of waited
children) and CPU use = CPU seconds / (wall x cores). Concurrency 1 is the sequential flow
(stages in place, one after another); N > 1 the Dask fan-out (a stage workspace each, then the
replay), so the ratio includes the fan-out's own costs. The copies run one after another, in the
order given, on the same machine: compare them as ratios, and note the machine's other load.
Each stage's time comes from the flow's own log ("<stage>: ran in S s"); they go into --out.
--seed STAGE... (globs) gives every copy the project's own results of those stages instead:
their dvc.lock entries, and their outputs pulled from the project's DVC cache into the copy's
cache, so that only the stages after them are timed (e.g. the fine-tuning runs after TAPT). The
run stops if a seeded stage ran again in a copy.

`estimate` takes those stage times and the stage graph (dvc.yaml of --project) and prints, per
worker count, the critical path (no cluster can beat it) and the makespan of a greedy list
schedule (longest remaining path first), assuming every stage keeps its measured time on a
worker of its own. --extra adds or replaces stage times measured elsewhere (e.g. the real
profile's pretraining); --target keeps only what `dvc repro TARGET` runs. Not a test: it asserts
nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from finpipe.threads import usable_cores as _cores

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_RAN = re.compile(r"Finished in state Completed\('([^']+): (?:ran|restored from the run-cache) in ([\d.]+) s'\)")


def _copy_project(src: Path, dst: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=src, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        if rel == "dvc.lock" or not (src / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qm", "bench"],
    ):
        subprocess.run(cmd, cwd=dst, check=True)
    return dst


def _dvc(ws: Path, *args: str) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=ws, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed in {ws}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def seed(project: Path, ws: Path, patterns: list[str]) -> list[str]:
    """Give the copy `ws` the project's results of the stages matching `patterns`: their dvc.lock
    entries, and their outputs pulled from the project's cache (a local remote of the copy) into
    the copy's own cache. Returns the seeded stage names; they must be up to date in the copy."""
    lock = yaml.safe_load((project / "dvc.lock").read_text()) if (project / "dvc.lock").is_file() else {}
    entries = {n: e for n, e in (lock.get("stages") or {}).items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    if not entries:
        raise SystemExit(f"--seed {' '.join(patterns)}: no such stage in {project / 'dvc.lock'}")
    (ws / "dvc.lock").write_text(yaml.safe_dump({**lock, "stages": entries}, sort_keys=False))
    cache = _dvc(project, "cache", "dir").strip()
    _dvc(ws, "remote", "add", "--local", "seed", str(project / cache) if not os.path.isabs(cache) else cache)
    _dvc(ws, "pull", "-q", "-r", "seed", *entries)
    status = _dvc(ws, "status", *entries)
    if "up to date" not in status:
        raise SystemExit(f"seeded stages are not up to date in the copy {ws}:\n{status}")
    subprocess.run(["git", "add", "dvc.lock"], cwd=ws, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qm", "seed"], cwd=ws, check=True)
    return list(entries)


def run_one(project: Path, concurrency: int, stages: list[str], sets: list[str], scratch: Path, seeds: list[str]) -> dict:
    ws = _copy_project(project, scratch / f"c{concurrency}")
    seeded = seed(project, ws, seeds) if seeds else []
    cmd = [str(BIN / "finpipe"), "flow", "--project-dir", str(ws), "--concurrency", str(concurrency), "--retries", "0"]
    cmd += [a for s in sets for a in ("--set", s)]
    if stages:
        cmd += ["--stages", *stages]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_HOME": str(scratch / "prefect-home")}
    load = os.getloadavg()  # the machine's other load matters on a shared box: recorded per run
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = proc.stdout + proc.stderr
    (scratch / f"flow-c{concurrency}.log").write_text(log)
    if proc.returncode != 0:
        raise SystemExit(f"finpipe flow --concurrency {concurrency} failed; log: {scratch / f'flow-c{concurrency}.log'}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stage_s = {m.group(1): float(m.group(2)) for m in _RAN.finditer(log)}
    again = sorted(set(seeded) & set(stage_s))
    if again:  # the timing would include them: the copy did not take the project's results
        raise SystemExit(f"seeded stage(s) ran again with concurrency {concurrency}: {', '.join(again)}")
    return {
        "train_steps": train_steps(ws),
        "concurrency": concurrency,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cpu_use": round(cpu / (wall * _cores()), 3),
        "stages_run": len(stage_s),
        "seeded": seeded,
        "load_before": [round(x, 2) for x in load],
        "stage_s": stage_s,
    }


def train_steps(ws: Path) -> dict[str, int]:
    """stage -> optimizer steps it trained, from the metrics files dvc.lock lists as its outputs.
    Early stopping decides the steps, and a different thread count changes float rounding, so
    two copies can do different amounts of work: compare these before comparing times."""
    lock = ws / "dvc.lock"
    steps: dict[str, int] = {}
    if not lock.is_file():
        return steps
    for stage, entry in (yaml.safe_load(lock.read_text()).get("stages") or {}).items():
        for out in entry.get("outs", []):
            path = ws / out["path"]
            if path.suffix != ".json" or not path.is_file():
                continue
            try:
                train = json.loads(path.read_text()).get("train")
            except (ValueError, AttributeError):
                continue
            if isinstance(train, dict) and isinstance(train.get("steps"), int):
                steps[stage] = train["steps"]
    return steps


def graph(project: Path) -> dict[str, set[str]]:
    """stage -> the stages it directly depends on, from DVC's own graph."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        g = repo.index.graph
        return {s.name: {d.name for d in g.successors(s)} for s in g.nodes}


def restrict(project: Path, deps: dict[str, set[str]], targets: list[str]) -> dict[str, set[str]]:
    """The part of the graph `dvc repro TARGET...` runs: the targets (stage names or foreach
    groups) and every stage above them, as the flow's own `stage_plan` selects them (a profile's
    unused stages, e.g. DAPT when no variant starts from it, drop out)."""
    from flows.pipeline import stage_plan

    try:
        keep = {planned.name for planned in stage_plan(project, targets)}
    except ValueError as err:  # an unknown target, named with the stages there are
        raise SystemExit(f"estimate: {err}") from None
    return {s: deps[s] & keep for s in deps if s in keep}


def schedule(durations: dict[str, float], deps: dict[str, set[str]], workers: int) -> tuple[float, float]:
    """(critical path, greedy list-schedule makespan) over the stages that have a duration."""
    stages = [s for s in deps if s in durations]
    below: dict[str, list[str]] = {s: [] for s in stages}
    for s in stages:
        for d in deps[s]:
            if d in below:
                below[d].append(s)
    rank: dict[str, float] = {}

    def _rank(s: str) -> float:  # longest path from s to the end, s included
        if s not in rank:
            rank[s] = durations[s] + max((_rank(c) for c in below[s]), default=0.0)
        return rank[s]

    critical = max((_rank(s) for s in stages), default=0.0)
    done: dict[str, float] = {}
    free = [0.0] * workers
    left = set(stages)
    while left:
        ready = [s for s in left if all(d in done for d in deps[s] if d in durations)]
        s = max(ready, key=lambda x: (_rank(x), x))
        start_ready = max((done[d] for d in deps[s] if d in done), default=0.0)
        w = min(range(workers), key=lambda i: max(free[i], start_ready))
        start = max(free[w], start_ready)
        done[s] = free[w] = start + durations[s]
        left.remove(s)
    return critical, max(done.values(), default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--project", type=Path, default=ROOT)
    r.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    r.add_argument("--stages", nargs="*", default=[])
    r.add_argument("--set", action="append", default=[], dest="sets")
    r.add_argument("--out", type=Path, default=Path("fanout.json"))
    r.add_argument("--keep", action="store_true", help="keep the copies (in the printed scratch folder)")
    r.add_argument("--seed", nargs="*", default=[], help="stages (globs) whose results come from the project, not timed")
    e = sub.add_parser("estimate")
    e.add_argument("results", type=Path)
    e.add_argument("--project", type=Path, default=ROOT)
    e.add_argument("--workers", type=int, nargs="+", default=[1, 2, 16])
    e.add_argument("--extra", action="append", default=[], metavar="STAGE=SECONDS", help="STAGE may be a glob")
    e.add_argument("--target", nargs="*", default=[], help="only these stages and those above them (as dvc repro TARGET)")
    args = ap.parse_args()

    if args.cmd == "run":
        scratch = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
        print(f"machine: {_cores()} cores; load average before: {os.getloadavg()}; scratch {scratch}")
        results = []
        for c in args.concurrency:
            res = run_one(args.project.resolve(), c, args.stages, args.sets, scratch, args.seed)
            results.append(res)
            cpu = f"CPU {res['cpu_s']} s, CPU use {res['cpu_use']:.0%}"
            print(f"concurrency {c}: wall {res['wall_s']} s, {cpu}, {res['stages_run']} stages")
        base = results[0]["wall_s"]
        for res in results[1:]:
            print(f"concurrency {res['concurrency']} vs {results[0]['concurrency']}: {base / res['wall_s']:.2f}x wall")
            differ = {
                s: (n, res["train_steps"].get(s)) for s, n in results[0]["train_steps"].items() if res["train_steps"].get(s) != n
            }
            same = "the same training steps" if not differ else f"different training steps (stage: c1, cN) {differ}"
            print(f"  {len(results[0]['train_steps'])} training stages, {same}")
        args.out.write_text(json.dumps({"cores": _cores(), "load_after": os.getloadavg(), "runs": results}, indent=1))
        print(json.dumps([{k: v for k, v in r.items() if k not in ("stage_s", "train_steps", "seeded")} for r in results]))
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        return

    data = json.loads(args.results.read_text()) if args.results.is_file() else {"runs": [{"stage_s": {}}]}
    # the sequential run's stage times: each stage alone with all cores, as on a worker of its own
    durations = dict(data["runs"][0]["stage_s"])
    deps = graph(args.project.resolve())
    if args.target:
        deps = restrict(args.project.resolve(), deps, args.target)
    for item in args.extra:  # STAGE=SECONDS, STAGE may be a glob: 'finetune-ner@fin5-*=150'
        pattern, _, seconds = item.partition("=")
        for name in fnmatch.filter(deps, pattern) or [pattern]:
            durations[name] = float(seconds)
    missing = sorted(set(deps) - set(durations))
    if missing:
        print(f"no time for {len(missing)} stage(s), counted as 0: {', '.join(missing)}")
    total = sum(durations.get(s, 0.0) for s in deps)
    if total <= 0:  # nothing to schedule: every ratio below would divide by zero
        raise SystemExit(f"estimate: no stage times for {args.results} (a `run` --out file) nor from --extra STAGE=SECONDS")
    print(f"{len(deps)} stages, {total:.0f} s one after another")
    for w in args.workers:
        critical, makespan = schedule(durations, deps, w)
        print(f"{w:>3} workers: makespan {makespan:.0f} s ({total / makespan:.2f}x), critical path {critical:.0f} s")


if __name__ == "__main__":
    main()

"""Concurrent stages with DVC's guarantees kept: each stage runs in a throw-away workspace that
shares the project's DVC cache, and the project's own workspace then takes every result from
DVC's run-cache, in `dvc repro`'s own order, so that dvc.lock is written in one place and reads
exactly as after a sequential `dvc repro`.

Why this shape: `dvc repro` locks its workspace, so two stages of one workspace cannot run at
the same time. A stage workspace is a copy of the project's files (what `git ls-files -co
--exclude-standard` lists: tracked files and new ones, params overrides included) whose
`.dvc/config.local` points at the project's cache. There `dvc repro STAGE` first takes every
upstream stage from the cache (from dvc.lock when it was fresh before the flow started, from the
run-cache when it ran in another stage workspace), then runs STAGE, which puts its outputs in
the shared cache along with a run-cache entry (deps + params + command -> outputs). The replay,
`dvc repro --single-item S1 S2 ...` in the project over the stages that ran, restores each one
from that entry ("Stage 'S' is cached - skipping run, checking out outputs") and writes its lock
entry. A stage that failed leaves the others' entries in the run-cache: they are replayed, and
the next run recomputes only what is missing.

Requirements: the Dask workers see the project directory and its cache (one machine, or a
shared file system); paths outside the project that stages depend on must be absolute (as for
`dvc exp run --temp`), since a stage workspace lives elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger
from prefect.states import Completed

from flows.dvc_stage import TransientStageError, _env, _retry_transient, classify, dvc_bin, publish, stream

_RAN = "Running stage '{}'"
_RESTORED = "Stage '{}' is cached - skipping run"
_LINK_ABOVE = 1 << 20  # bytes
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class FanOutError(Exception):
    """The project cannot run its stages in separate workspaces (a clear, user-fixable reason)."""


def project_files(root: Path) -> list[str]:
    """What a stage workspace copies: tracked files and untracked ones git does not ignore."""
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True)
    if proc.returncode != 0:
        raise FanOutError(
            f"{root}: concurrent stages need a git repository (git ls-files failed: {proc.stderr.decode().strip()})"
        )
    return [p for p in proc.stdout.decode().split("\0") if p and (root / p).is_file()]


def cache_dir(root: Path) -> Path:
    """The project's DVC cache (`dvc cache dir`: .dvc/cache unless configured elsewhere)."""
    proc = subprocess.run([dvc_bin(), "cache", "dir"], cwd=root, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise FanOutError(f"{root}: `dvc cache dir` failed: {(proc.stderr or proc.stdout).strip()}")
    path = Path(proc.stdout.strip())
    return path if path.is_absolute() else (root / path).resolve()


def relative_outside_deps(root: Path) -> list[str]:
    """Dependencies given as relative paths that leave the project: a stage workspace elsewhere
    would not find them."""
    from dvc.repo import Repo

    bad: list[str] = []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            for dep in stage.deps:
                if dep.protocol == "local" and not os.path.isabs(dep.def_path):
                    target = os.path.normpath(os.path.join(stage.wdir, dep.def_path))
                    if not target.startswith(str(root) + os.sep) and target != str(root):
                        bad.append(f"{stage.name}: {dep.def_path}")
    return bad


def make_workspace(root: Path, parent: Path, stage: str, files: list[str], cache: Path) -> Path:
    """A copy of the project's files for one stage, sharing the project's DVC cache."""
    from configobj import ConfigObj

    parent.mkdir(parents=True, exist_ok=True)
    ws = Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w.-]+", "_", stage) + "-", dir=parent))
    for rel in files:
        src, dst = root / rel, ws / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        # large files (data the user keeps in the project): a hard link, stages only read them
        if not src.is_symlink() and src.stat().st_size >= _LINK_ABOVE:
            try:
                os.link(src, dst)
                continue
            except OSError:  # another file system, or links not allowed: copy
                pass
        shutil.copy2(src, dst, follow_symlinks=False)
    # the project's local config (remotes, credentials) with the cache pointed at the project's;
    # hard links make checking out upstream models cheap (stages never write into their inputs)
    local = root / ".dvc" / "config.local"
    conf = ConfigObj(str(local)) if local.is_file() else ConfigObj()
    conf.filename = str(ws / ".dvc" / "config.local")
    conf.setdefault("core", {})["no_scm"] = "true"
    conf.setdefault("cache", {}).update({"dir": str(cache), "type": "reflink,hardlink,copy"})
    (ws / ".dvc").mkdir(exist_ok=True)
    conf.write()
    return ws


def worker_slot() -> int | None:
    """This Dask worker's index (LocalCluster names its workers 0..n-1); None outside Dask."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return int(name) if isinstance(name, int) or str(name).isdigit() else None


def stage_env(workspace: Path, threads: int | None, gpus: list[str], slot: int | None) -> dict[str, str]:
    """The stage's environment: the workspace's own code first on the import path; OpenMP/BLAS
    threads = runtime.threads for every library in the stage (Dask's nanny sets them to 1 in
    every worker: overridden; torch takes the param itself); one GPU per worker slot."""
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(workspace), *filter(None, [env.get("PYTHONPATH")])])
    if threads:
        for var in _THREAD_VARS:
            env[var] = str(threads)
    if gpus and slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def visible_gpus() -> list[str]:
    """The GPUs the stages may share out: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, line in enumerate(proc.stdout.splitlines()) if line.startswith("GPU ")] if proc.returncode == 0 else []


@task(name="dvc-stage", task_run_name="{stage}", retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=_retry_transient)
def run_stage_isolated(
    stage: str,
    root: str,
    workdir: str,
    files: list[str],
    cache: str,
    force: bool = False,
    upstream: list[str] | None = None,
    metric_files: list[str] | None = None,
    report_files: list[str] | None = None,
    threads: int | None = None,
    gpus: list[str] | None = None,
) -> Any:
    """`dvc repro STAGE` in a stage workspace of its own (upstream stages come from the cache).

    Returns {"stage", "ran", "restored", "seconds"}: ran when the command ran, restored when
    the run-cache already had this exact run (an earlier, interrupted flow), neither when DVC
    found it unchanged. The project's workspace is not touched: the flow replays the results.
    """
    logger = get_run_logger()
    slot = worker_slot()
    ws = make_workspace(Path(root), Path(workdir), stage, files, Path(cache))
    env = stage_env(ws, threads, gpus or [], slot)
    guard = [sys.executable, "-m", "flows.stage_guard", "--"]
    # upstream first, from the cache, then the stage itself: --force must reach this stage only
    cmds = [[*guard, dvc_bin(), "repro", "--single-item", *upstream]] if force and upstream else []
    cmds.append([*guard, dvc_bin(), "repro", *(["--single-item", "--force"] if force else []), stage])
    logger.info(
        "workspace %s (worker slot %s, %s threads%s)",
        ws,
        slot,
        threads or "default",
        f", CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env and gpus else "",
    )
    t0 = time.perf_counter()
    lines: list[str] = []
    try:
        for cmd in cmds:
            logger.info("$ %s", " ".join(cmd[len(guard) :]))
            error = classify(stage, stream(cmd, ws, env, logger, lines, stage), lines)
            if error is not None:
                raise error
        ran = any(line.startswith(_RAN.format(stage)) for line in lines)
        restored = any(line.startswith(_RESTORED.format(stage)) for line in lines)
        recomputed = sorted(
            {m.group(1) for line in lines if (m := re.match(r"Running stage '([^']+)'", line)) and m.group(1) != stage}
        )
        if recomputed:  # not in the cache: dvc recomputed it here (the cache was cleaned?)
            logger.warning("%s: upstream stage(s) %s were not in the cache and ran again", stage, ", ".join(recomputed))
        publish(stage, str(ws), metric_files or [], report_files or [])
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    seconds = round(time.perf_counter() - t0, 2)
    data = {"stage": stage, "ran": ran, "restored": restored, "seconds": seconds}
    if ran or restored:
        return Completed(message=f"{stage}: {'ran' if ran else 'restored from the run-cache'} in {seconds:.1f} s", data=data)
    return Completed(name="Skipped", message=f"{stage}: up to date, skipped", data=data)


def replay(root: Path, stages: list[str], logger: Any) -> tuple[list[str], list[str]]:
    """Take the stages' results from the run-cache into the project's workspace and dvc.lock,
    in the given order (dvc repro's). Returns (replayed, recomputed): a stage is recomputed
    here only if its run-cache entry vanished in the meantime."""
    if not stages:
        return [], []
    lines: list[str] = []
    cmd = [dvc_bin(), "repro", "--single-item", "--keep-going", *stages]
    logger.info("replay into %s: $ %s", root, " ".join(cmd))
    rc = stream(cmd, root, _env(), logger, lines, "replay")
    replayed = [s for s in stages if any(line.startswith(_RESTORED.format(s)) for line in lines)]
    recomputed = [s for s in stages if any(line.startswith(_RAN.format(s)) for line in lines)]
    if rc != 0:
        raise TransientStageError(f"replay into the project failed (dvc exited with {rc}): {lines[-1] if lines else ''}")
    return replayed, recomputed


def dvc_order(root: Path, names: list[str]) -> list[str]:
    """The names in the order a sequential `dvc repro` visits them (its own planner), so that
    a replay writes dvc.lock entries in the same order."""
    from dvc.dvcfile import PROJECT_FILE
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(str(root)) as repo:  # what `dvc repro` with no target plans
        stages = collect_stages(repo, [os.path.join(repo.root_dir, PROJECT_FILE)])
        order = [s.name for s in plan_repro(get_active_graph(repo.index.graph), stages)]
    wanted = set(names)
    return [n for n in order if n in wanted]


def stage_threads(root: Path) -> int:
    """Threads per stage: the project's runtime.threads (every training stage applies it
    itself, so the fan-out trains exactly what a sequential run trains)."""
    from finpipe.config import load_params

    return load_params(root / "params.yaml", root=root, check_paths=False).runtime.threads


def oversubscription(concurrency: int, threads: int, cores: int) -> str | None:
    """Why `concurrency` stages of `threads` threads each do not fit `cores`, or None.

    Refused rather than warned about: OpenMP threads that share cores wait on each other, and
    two 2-thread stages on 2 cores ran about 10x slower each (RESULTS.md, "Concurrent stages")."""
    if concurrency * threads <= cores:
        return None
    fit = max(1, cores // concurrency)
    return (
        f"{concurrency} concurrent stages x {threads} threads (runtime.threads) need {concurrency * threads} cores, "
        f"and this machine has {cores}: stages that share cores run many times slower. Lower --concurrency to "
        f"{max(1, cores // threads)}, or set runtime.threads to {fit} (--set runtime.threads={fit}: every training "
        f"stage reruns, and {fit} threads train other models than {threads})"
    )

"""The Prefect flow: the DVC stages in dependency order, one Prefect task each.

DVC decides what is stale (the graph comes from dvc.yaml, never a copy of it); Prefect adds
the UI, logs per stage, retries of transient failures, schedules and artifacts. Params
overrides are applied the DVC way (hydra-style `key=value` on params.yaml, as `dvc exp run
-S` does) and, as with a workspace `dvc exp run`, they stay in params.yaml once a stage has
run under them: `params.yaml`, `dvc.lock` and the outputs always agree, so `dvc status` is
clean and the next `dvc repro` reruns nothing. The run is saved as a DVC experiment named
after the flow run (linked from the run's `dvc-experiment` artifact). Only when no stage ran
(everything was fresh, or the first stage refused the params) is params.yaml put back.

By default stages run one after another (`dvc repro` locks its workspace). With
`concurrency` > 1, or the address of a running Dask cluster, every stage whose upstream stages
are done runs at once on Prefect's Dask task runner, each in a stage workspace of its own that
shares the DVC cache; the results are then replayed into this workspace from DVC's run-cache
(flows/fanout.py says how, and why dvc.lock ends up as a sequential run writes it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import networkx as nx
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from finpipe.atomic import atomic_path
from finpipe.threads import usable_cores
from flows.dvc_stage import _env, dvc_bin, run_stage


class PlannedStage(NamedTuple):
    name: str
    metrics: list[str]  # metric files the stage declares in dvc.yaml
    reports: list[str]  # its Markdown outputs
    upstream: set[str]  # every stage it depends on, directly or not


def stage_plan(root: Path, selected: list[str] | None = None) -> list[PlannedStage]:
    """The stages in dependency order, from one read of DVC's graph; a selection brings its
    upstream stages. A selection names stages (`validate@ner`) or foreach groups (`validate`).
    """
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges: stage -> the stage it depends on
        names = {s: s.name for s in graph.nodes}
        keep = set(graph.nodes)
        if selected:
            unknown = [x for x in selected if not any(n == x or n.split("@")[0] == x for n in names.values())]
            if unknown:
                raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {sorted(names.values())}")
            wanted = {s for s, n in names.items() if n in selected or n.split("@")[0] in selected}
            keep = wanted.union(*(nx.descendants(graph, s) for s in wanted))
        order = nx.lexicographical_topological_sort(graph.subgraph(keep).reverse(copy=True), key=lambda s: names[s])
        return [
            PlannedStage(
                names[s],
                [os.path.relpath(m.fs_path, root) for m in s.metrics],
                [os.path.relpath(o.fs_path, root) for o in s.outs if o.fs_path.endswith(".md")],
                {names[d] for d in nx.descendants(graph, s)},
            )
            for s in order
        ]


def apply_params_overrides(root: Path, overrides: dict[str, Any] | None) -> bytes | None:
    """Apply `{"pretrain.train.max_steps": 200}`-style overrides to params.yaml with DVC's own
    hydra override code (what `dvc exp run -S` uses). Returns the file's previous bytes (None
    when there was nothing to apply), for `restore_params`."""
    if not overrides:
        return None
    from dvc.utils.hydra import apply_overrides

    params = root / "params.yaml"
    original = params.read_bytes()
    items = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
    try:
        apply_overrides(str(params), items)
    except Exception:
        restore_params(root, original)
        raise
    return original


def restore_params(root: Path, original: bytes) -> None:
    with atomic_path(root / "params.yaml") as tmp:
        tmp.write_bytes(original)


def restore_outputs(root: Path) -> None:
    """`dvc checkout`: the outputs dvc.lock names, from the cache."""
    proc = subprocess.run([dvc_bin(), "checkout", "--quiet"], cwd=root, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        get_run_logger().warning("dvc checkout failed: %s", (proc.stderr or proc.stdout).strip().splitlines()[-1:])


def stale_stages(root: Path) -> set[str] | None:
    """Stages `dvc status` reports as changed (one dvc call for the whole graph, instead of
    one `dvc repro` per up-to-date stage). None when dvc status itself fails."""
    proc = subprocess.run([dvc_bin(), "status", "--json"], cwd=root, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    try:
        return set(json.loads(proc.stdout or "{}"))
    except json.JSONDecodeError:
        return None


def record_experiment(root: Path, name: str) -> str | None:
    """`dvc exp save`: params, metrics and outputs of this run as a named DVC experiment, and
    a `dvc-experiment` artifact on the flow run that names it."""
    proc = subprocess.run(
        [dvc_bin(), "exp", "save", "--name", name, "--force"], cwd=root, env=_env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        get_run_logger().warning("dvc exp save failed: %s", (proc.stderr or proc.stdout).strip().splitlines()[-1:])
        return None
    get_run_logger().info("saved as DVC experiment %s (dvc exp show; dvc params diff HEAD %s)", name, name)
    create_markdown_artifact(
        key="dvc-experiment",
        markdown=(
            f"DVC experiment **`{name}`** in `{root}`\n\n"
            f"- `dvc exp show` lists it beside the other experiments and commits\n"
            f"- `dvc params diff HEAD {name}` / `dvc metrics diff HEAD {name}`: what it changed\n"
            f"- `dvc exp apply {name}` brings it back into a workspace; `dvc exp branch {name} <branch>` keeps it\n"
        ),
        description=f"the DVC experiment this flow run saved: {name}",
    )
    return name


def publish_validation_counts(root: Path, plan: list[PlannedStage]) -> int:
    rows = []
    for stage in plan:
        if not stage.name.startswith("validate"):
            continue
        for rel in stage.metrics:
            path = root / rel
            if path.is_file():
                for dataset, m in json.loads(path.read_text()).items():
                    rows.append({"stage": stage.name, "dataset": dataset, **m})
    if rows:
        create_table_artifact(
            key="validation-counts", table=rows, description="Rows in / passed / quarantined per input, from the validate stages"
        )
    return len(rows)


@flow(name="finbert-pipeline", log_prints=True)
def pipeline(
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    retries: int = 2,
    retry_delay_seconds: float = 10.0,
    project_dir: str | None = None,
    record: bool = True,
    concurrency: int = 1,
    dask_address: str | None = None,
) -> dict[str, str]:
    """Run the DVC pipeline stage by stage.

    overrides: params overrides, e.g. {"pretrain.train.max_steps": 200}
    stages: only these stages (names or foreach groups) and what they depend on
    force: rerun even when DVC says the stage is up to date
    retries: retries of a stage after a transient failure (deterministic ones fail at once)
    retry_delay_seconds: first retry delay; each further retry waits twice as long
    project_dir: the repository (default: the working directory)
    record: save the run as a DVC experiment named after the flow run
    concurrency: stages at a time (a local Dask cluster of that many worker processes); 1 runs
        them one after another in this workspace
    dask_address: a running Dask scheduler (tcp://host:8786) instead of a local cluster
    (each stage's torch threads are the param runtime.threads, concurrent or not)
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    root = Path(project_dir or os.getcwd()).resolve()
    plan = stage_plan(root, stages)
    logger.info("stages: %s", ", ".join(s.name for s in plan))
    outcome: dict[str, str] = {}
    original_params = apply_params_overrides(root, overrides)
    failed = True
    try:
        stale = None if force else stale_stages(root)
        delays = [retry_delay_seconds * 2**i for i in range(max(retries, 1))]
        stage_task = run_stage.with_options(retries=retries, retry_delay_seconds=delays)
        if concurrency > 1 or dask_address:
            _fan_out(root, plan, stale, force, retries, delays, concurrency, dask_address, outcome)
        for stage in [] if concurrency > 1 or dask_address else plan:
            # DVC's own verdict, taken once up front, holds until an upstream stage reruns
            known_fresh = (
                stale is not None and stage.name not in stale and not any(outcome.get(u) == "ran" for u in stage.upstream)
            )
            state = stage_task(stage.name, str(root), force, stage.metrics, stage.reports, known_fresh, return_state=True)
            if state.is_failed():
                state.result()  # raises the stage's error: the flow fails with its message
            outcome[stage.name] = "ran" if state.result()["ran"] else "skipped"
        failed = False
    finally:
        # restored: replayed from the run-cache into this workspace, under the overrides too
        ran = any(v in ("ran", "restored") for v in outcome.values())
        if original_params is not None and not ran:
            restore_params(root, original_params)  # nothing ran under the overrides: nothing to keep in step
            if failed:  # DVC removed the failed stage's outputs before running it: bring them back
                restore_outputs(root)
        elif original_params is not None:
            logger.info(
                "params.yaml keeps the overrides %s (dvc.lock and the outputs were made with them); "
                "back to the committed state: git checkout -- params.yaml dvc.lock && dvc checkout",
                overrides,
            )
    publish_validation_counts(root, plan)
    if record and ran:
        record_experiment(root, flow_run.name or "prefect-run")
    return outcome


def _fan_out(
    root: Path,
    plan: list[PlannedStage],
    stale: set[str] | None,
    force: bool,
    retries: int,
    delays: list[float],
    concurrency: int,
    dask_address: str | None,
    outcome: dict[str, str],
) -> None:
    """Every stage as soon as its upstream stages are done, on a Dask cluster, each in its own
    stage workspace; then the replay of the results into `root`. Raises the first failure once
    the other branches are replayed, so their results stay usable. Fills `outcome` (stage ->
    ran / restored / skipped / failed / not run) as it goes, so the caller sees it even then."""
    from prefect_dask import DaskTaskRunner

    from flows import fanout

    logger = get_run_logger()
    bad = fanout.relative_outside_deps(root)
    if bad:
        raise fanout.FanOutError(
            "concurrent stages run in workspaces outside the project, so dependencies outside it "
            f"must be absolute paths; relative: {'; '.join(bad)}"
        )
    files = fanout.project_files(root)
    cache = str(fanout.cache_dir(root))
    workdir = str(root / ".dvc" / "tmp" / "fanout")
    threads = fanout.stage_threads(root)
    crowded = None if dask_address else fanout.oversubscription(concurrency, threads, usable_cores())
    if crowded:  # before any stage starts: nothing to undo
        raise fanout.FanOutError(crowded)
    gpus = fanout.visible_gpus()
    if dask_address:
        runner = DaskTaskRunner(address=dask_address)
    else:
        runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": concurrency,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": ":0",
            }
        )
    isolated = fanout.run_stage_isolated.with_options(retries=retries, retry_delay_seconds=delays)
    fresh_task = run_stage.with_options(retries=0)
    logger.info(
        "concurrent stages: %s (%s threads each%s)",
        dask_address or f"local Dask cluster of {concurrency} workers",
        threads,
        f", GPUs {','.join(gpus)} shared out by worker slot" if gpus else "",
    )
    futures: dict[str, Any] = {}
    to_run: set[str] = set()
    with runner:
        for stage in plan:
            upstream_runs = stage.upstream & to_run
            if not force and stale is not None and stage.name not in stale and not upstream_runs:
                params = {
                    "stage": stage.name,
                    "root": str(root),
                    "metric_files": stage.metrics,
                    "report_files": stage.reports,
                    "known_fresh": True,
                }
                futures[stage.name] = runner.submit(fresh_task, parameters=params)
                continue
            to_run.add(stage.name)
            params = {
                "stage": stage.name,
                "root": str(root),
                "workdir": workdir,
                "files": files,
                "cache": cache,
                "force": force,
                "upstream": fanout.dvc_order(root, sorted(stage.upstream)) if force else [],
                "metric_files": stage.metrics,
                "report_files": stage.reports,
                "threads": threads,
                "gpus": gpus,
            }
            futures[stage.name] = runner.submit(isolated, parameters=params, wait_for=[futures[u] for u in sorted(upstream_runs)])
        errors: list[BaseException] = []
        for name, future in futures.items():
            future.wait()
            state = future.state
            if state.is_completed():
                data = state.result()
                outcome[name] = "ran" if data["ran"] else "restored" if data.get("restored") else "skipped"
            elif state.is_failed() or state.is_crashed():
                outcome[name] = "failed"
                try:
                    state.result()
                except BaseException as err:  # noqa: BLE001 - kept to re-raise after the replay
                    errors.append(err)
            else:  # an upstream stage failed: never started
                outcome[name] = "not run"
    done = [n for n, v in outcome.items() if v in ("ran", "restored")]
    replayed, recomputed = fanout.replay(root, fanout.dvc_order(root, done), logger)
    if recomputed:
        logger.warning("recomputed during the replay (their run-cache entries were missing): %s", ", ".join(recomputed))
    logger.info("replayed %d stage(s) into %s from the run-cache", len(replayed), root)
    if errors:
        not_run = [n for n, v in outcome.items() if v == "not run"]
        logger.error(
            "failed: %s; not run (upstream failed): %s; the other results are in dvc.lock, and the next run "
            "recomputes only what is missing",
            ", ".join(n for n, v in outcome.items() if v == "failed"),
            ", ".join(not_run) or "none",
        )
        raise errors[0]


def serve(name: str, cron: str | None, parameters: dict[str, Any]) -> None:
    """Register a deployment (with its cron schedule) and serve it until interrupted."""
    pipeline.serve(name=name, cron=cron, parameters=parameters)

"""Integration: the production set-up of README's "Deployments on a work pool", against a real
`prefect server` on a free loopback port. In a git copy of the project (the tiny workspace):
`prefect work-pool create --type process`, `prefect deploy` from the repository's prefect.yaml
(version = the commit, from its `git rev-parse HEAD` build step; the cron schedule), a real
`prefect worker start --pool` process, and a run triggered with `prefect deployment run` that
the worker runs to completion, one task run per stage, carrying the commit as its
`deployment_version`. A second run triggered meanwhile waits for the first (the deployment's
concurrency limit), then skips every stage; the scheduler's upcoming nightly runs carry the
commit too. test_deploy_from_prefect_yaml alone needs no worker and no pipeline run (about 35 s)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prefect_live import BIN, FINAL, get, post, prefect_server, stop, wait, wait_final
from test_flow import STAGES, tiny_workspace

# the whole tiny pipeline in a worker's flow-run process: well above pyproject's 900 s on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def _prefect(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _trigger(name: str, env: dict[str, str], cwd: Path) -> str:
    """`prefect deployment run`, as README says; the new flow run's id."""
    out = _prefect(["deployment", "run", f"finbert-pipeline/{name}"], env, cwd, timeout=120)
    return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)


def _kill_flow_run_process(run: dict | None) -> None:
    """A flow run still going when the test gives up: the process worker starts it in a session
    of its own (stopping the worker does not reach it), so end that session by its id."""
    pid = (run or {}).get("infrastructure_pid")
    if not pid or not str(pid).isdigit():
        return
    with contextlib.suppress(OSError):
        if b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.killpg(int(pid), signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_env:
        yield api_env


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, server) -> dict:
    """The tiny workspace (a git repo), the work pool, and `prefect deploy` of its prefect.yaml
    (the repository's) run in it."""
    api, env = server
    spec = yaml.safe_load(PREFECT_YAML.read_text())["deployments"][0]
    tmp_path = tmp_path_factory.mktemp("prefect-worker")
    ws = tiny_workspace(tmp_path / "repo")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True, check=True).stdout.strip()
    _prefect(["work-pool", "create", spec["work_pool"]["name"], "--type", "process"], env, tmp_path)
    out = _prefect(["--no-prompt", "deploy", "--prefect-file", "prefect.yaml", "--name", spec["name"]], env, ws)
    dep = get(f"{api}/deployments/name/finbert-pipeline/{spec['name']}")
    assert dep, f"no deployment after prefect deploy:\n{out}"
    return {"api": api, "env": env, "tmp_path": tmp_path, "ws": ws, "sha": sha, "spec": spec, "deployment": dep}


@pytest.fixture(scope="module")
def worker_run(deployed) -> dict:
    """A worker, `prefect deployment run` twice; waits for the runs' final states, then stops
    the worker. What the checks need, as seen then."""
    api, env, tmp_path, dep = deployed["api"], deployed["env"], deployed["tmp_path"], deployed["deployment"]
    pool, name = deployed["spec"]["work_pool"]["name"], deployed["spec"]["name"]
    # started outside the project: the deployment's pull step must take the run there
    worker_log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", "test-worker"],
        cwd=tmp_path,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    run_id = second_id = None
    t0 = time.time()
    try:
        run_id = _trigger(name, env, tmp_path)
        # the worker has taken it (Pending holds the deployment's one slot)
        wait("the worker", lambda: (r := get(f"{api}/flow_runs/{run_id}")) and r["state"]["type"] != "SCHEDULED", 600)
        # a second run while the first one runs: the deployment's concurrency limit makes it wait
        second_id = _trigger(name, env, tmp_path)
        final = wait_final(api, run_id, 1800)
        seconds = time.time() - t0
        completed = final["state"]["type"] == "COMPLETED"
        second = wait_final(api, second_id, 600) if completed else get(f"{api}/flow_runs/{second_id}")
        task_runs = post(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        second_task_runs = post(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [second_id]}}})
        # the runs the scheduler has put ahead on the cron schedule
        scheduled = post(
            f"{api}/flow_runs/filter",
            {"flow_runs": {"id": {"not_any_": [run_id, second_id]}}, "deployments": {"id": {"any_": [dep["id"]]}}},
        )
        time.sleep(10)  # the worker reaps the flow-run process after the run reports its final state
    finally:
        for rid in (run_id, second_id):
            if rid and (now := get(f"{api}/flow_runs/{rid}")) and now["state"]["type"] not in FINAL:
                _kill_flow_run_process(now)
        stop(worker)
        worker_log.close()
    return {
        **deployed,
        "run_id": run_id,
        "final": final,
        "seconds": seconds,
        "task_runs": task_runs,
        "second": second,
        "second_task_runs": second_task_runs,
        "scheduled": scheduled,
        "after_stop": get(f"{api}/flow_runs/{run_id}"),
        "worker_log": (tmp_path / "worker.log").read_text(errors="replace"),
    }


def test_deploy_from_prefect_yaml(deployed):
    dep, spec, ws = deployed["deployment"], deployed["spec"], deployed["ws"]
    assert dep["version"] == deployed["sha"]  # the build step's `git rev-parse HEAD`
    assert dep["work_pool_name"] == spec["work_pool"]["name"]
    assert dep["entrypoint"] == "flows/pipeline.py:pipeline"
    assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ws)}}]
    assert dep["parameters"]["project_dir"] == str(ws)
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in dep["schedules"]] == [
        (s["cron"], s["timezone"], True) for s in spec["schedules"]
    ]
    assert dep["global_concurrency_limit"]["limit"] == 1


def test_worker_runs_the_deployment(worker_run):
    final = worker_run["final"]
    print(f"triggered run finished as {final['state']['type']} in {worker_run['seconds']:.0f} s")
    assert final["state"]["type"] == "COMPLETED", (final["state"], worker_run["worker_log"][-3000:])
    assert final["deployment_version"] == worker_run["sha"]  # the code version, on the run itself
    assert final["work_pool_name"] == worker_run["spec"]["work_pool"]["name"]
    assert worker_run["run_id"] in worker_run["worker_log"]  # the worker process ran it, nobody else
    runs = worker_run["task_runs"]
    assert sorted(r["name"] for r in runs) == STAGES
    assert all(r["state"]["type"] == "COMPLETED" for r in runs)
    assert worker_run["after_stop"]["state"]["type"] == "COMPLETED"  # stopping the worker cancels nothing
    assert (worker_run["ws"] / "dvc.lock").is_file()  # the pipeline ran in the deployed checkout


def test_scheduled_runs_carry_the_version(worker_run):
    """The scheduler fills the next nights in as soon as the deployment exists: those runs are
    on the cron's times and carry the same code version."""
    minute, hour = worker_run["spec"]["schedules"][0]["cron"].split()[:2]
    upcoming = [r for r in worker_run["scheduled"] if r["auto_scheduled"]]
    assert upcoming, "the scheduler put no run on the cron schedule"
    for r in upcoming:
        assert r["state"]["type"] == "SCHEDULED" and r["deployment_version"] == worker_run["sha"]
        if minute.isdigit() and hour.isdigit() and worker_run["spec"]["schedules"][0].get("timezone") == "UTC":
            assert f"T{int(hour):02d}:{int(minute):02d}:00" in r["expected_start_time"], r["expected_start_time"]


def test_one_run_at_a_time(worker_run):
    """The run triggered while the first one ran waited for it (one DVC workspace, one lock),
    then found every stage up to date."""
    first, second = worker_run["final"], worker_run["second"]
    assert second["state"]["type"] == "COMPLETED", second["state"]
    assert second["deployment_version"] == worker_run["sha"]
    assert second["start_time"] >= first["end_time"], (first["end_time"], second["start_time"])
    runs = worker_run["second_task_runs"]
    assert sorted(r["name"] for r in runs) == STAGES
    assert {r["state"]["name"] for r in runs} == {"Skipped"}

"""Integration: a real `prefect server` on a free loopback port, the scheduled deployment
registered by `finpipe serve --cron`, a run triggered with `prefect deployment run` (as the
README says) and one task run per stage (test_deployment_schedule_and_run); then the UI's
flow-run page of that run rendered by headless Chromium, which must name the stages
(test_flow_run_page_in_the_ui, screenshot kept in test-artifacts/; skipped without Chromium).
Both tests share one server and one run (module fixtures)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prefect_live import BIN, get, post, prefect_server, stop, wait, wait_final
from test_flow import STAGES, tiny_workspace

# a deployment runs the whole tiny pipeline: above pyproject's 900 s per test on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
ARTIFACTS = Path(os.environ.get("FINPIPE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_env:
        yield api_env


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory, server) -> dict:
    """`finpipe serve --cron` registers the deployment, `prefect deployment run` starts a run;
    waits for the run's final state, then stops the runner. What the checks need, as seen then."""
    api, env = server
    tmp_path = tmp_path_factory.mktemp("prefect-run")
    ws = tiny_workspace(tmp_path / "repo")
    serve_log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen(
        [str(BIN / "finpipe"), "serve", "--name", "it", "--cron", "0 2 * * *", "--project-dir", str(ws)],
        cwd=ws,
        env=env,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        dep = wait("the deployment", lambda: get(f"{api}/deployments/name/finbert-pipeline/it"), 180)
        out = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "finbert-pipeline/it"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
        final = wait_final(api, run_id, 1800)
        task_runs = post(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        if final["state"]["type"] == "COMPLETED":
            # the runner reaps the flow-run process after the run reports Completed; stopping it
            # before that would mark the run Cancelled
            time.sleep(10)
    finally:
        stop(serve)
        serve_log.close()
    return {
        "api": api,
        "deployment": dep,
        "run_id": run_id,
        "final": final,
        "task_runs": task_runs,
        "after_stop": get(f"{api}/flow_runs/{run_id}"),
    }


def test_deployment_schedule_and_run(scheduled_run):
    assert [s["schedule"]["cron"] for s in scheduled_run["deployment"]["schedules"]] == ["0 2 * * *"]
    assert scheduled_run["final"]["state"]["type"] == "COMPLETED", scheduled_run["final"]["state"]
    runs = scheduled_run["task_runs"]
    assert sorted(r["name"] for r in runs) == STAGES
    assert all(r["state"]["type"] == "COMPLETED" for r in runs)
    assert scheduled_run["after_stop"]["state"]["type"] == "COMPLETED"  # stopping the runner cancels nothing


def test_flow_run_page_in_the_ui(request, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:  # checked before the fixtures: without Chromium, no server is started for this
        pytest.skip("chromium not installed (make test installs Debian's chromium when run as root)")
    run = request.getfixturevalue("scheduled_run")
    assert run["final"]["state"]["type"] == "COMPLETED", "no completed run to show (see test_deployment_schedule_and_run)"
    ui = run["api"].removesuffix("/api") + f"/runs/flow-run/{run['run_id']}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "prefect-flow-run.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1000",
        "--virtual-time-budget=20000",
    ]
    subprocess.run([chromium, *flags, f"--screenshot={shot}", ui], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([chromium, *flags, "--dump-dom", ui], capture_output=True, text=True, timeout=180, check=True).stdout
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert "Something went wrong" not in dom and "Completed" in dom
    for stage in STAGES:
        assert stage in dom, f"{stage} not on the flow-run page"

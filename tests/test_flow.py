"""The Prefect flow on the embedded default (with a 2-layer pretraining model), under
prefect_test_harness: task per stage, skip on a second run, a deterministic failure fails the
flow with the stage's message and is not retried, a transient failure is retried."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import tiny_finetune, tiny_pretrain
from test_dvc_pipeline import copy_repo

# the whole tiny pipeline, 21 stages, twice: above pyproject's 900 s per test on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TINY_PRETRAIN = tiny_pretrain(save_steps=3, logging_steps=3, learning_rate=5e-5)
KINDS = (("sentiment", "headlines"), ("ner", "news"))
STAGES = sorted(
    [
        "ingest@corpus",
        "ingest@ner",
        "ingest@sentiment",
        "pretrain",
        "validate@corpus",
        "validate@ner",
        "validate@sentiment",
        "base-model",
        "evaluate",
        "finetune-sentiment@headlines-adapted-13",
        "finetune-sentiment@headlines-base-13",
        "finetune-ner@news-adapted-13",
        "finetune-ner@news-base-13",
        *(f"tapt-{kind}@{task}-{start}" for kind, task in KINDS for start in ("base", "adapted")),
        *(f"finetune-{kind}-tapt@{task}-{start}-13" for kind, task in KINDS for start in ("base", "adapted")),
    ]
)


def tiny_workspace(dst: Path, threads: int | None = None) -> Path:
    ws = copy_repo(dst)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["pretrain"] = TINY_PRETRAIN
    params["finetune"] = tiny_finetune()
    if threads is not None:
        params["runtime"] = {"threads": threads}
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    import subprocess

    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "tiny"], cwd=ws, check=True)
    return ws


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def ws(tmp_path_factory, harness) -> Path:
    return tiny_workspace(tmp_path_factory.mktemp("flow") / "repo")


async def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


async def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_runs_every_stage_then_skips_them(ws):
    from flows.pipeline import pipeline

    state = pipeline(project_dir=str(ws), return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == dict.fromkeys(STAGES, "ran")
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    assert sorted(r.name for r in runs) == STAGES and all(r.state.is_completed() for r in runs)
    counts = asyncio.run(_artifact("validation-counts"))
    assert counts and "headlines" in str(counts[0].data)
    assert asyncio.run(_artifact("metrics-pretrain"))
    report = asyncio.run(_artifact("report-validate-sentiment"))
    assert report and "# Validation report: sentiment" in report[0].data

    again = pipeline(project_dir=str(ws), return_state=True)
    assert again.result() == dict.fromkeys(STAGES, "skipped")
    runs = asyncio.run(_task_runs(again.state_details.flow_run_id))
    assert {r.state.name for r in runs} == {"Skipped"}


def test_deterministic_failure_fails_fast_with_the_stage_message(ws):
    from flows.pipeline import pipeline

    params_before = (ws / "params.yaml").read_text()
    state = pipeline(
        project_dir=str(ws),
        overrides={"ingest.corpus.dev_fraction": "lots"},
        retries=3,
        retry_delay_seconds=0.1,
        return_state=True,
    )
    assert state.is_failed()
    assert "ingest.corpus.dev_fraction: Input should be a valid number" in state.message
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    failed = [r for r in runs if r.state.is_failed()]
    assert [r.name for r in failed] == ["ingest@corpus"] and failed[0].run_count == 1  # no retry
    assert (ws / "params.yaml").read_text() == params_before  # overrides are undone
    # and so are the outputs DVC removed before running the failed stage: the workspace is as before
    dvc = str(Path(os.sys.executable).parent / "dvc")
    status = subprocess.run([dvc, "status", "--json"], cwd=ws, capture_output=True, text=True).stdout
    assert json.loads(status or "{}") == {}


def test_transient_failure_is_retried(ws, monkeypatch):
    import subprocess

    import flows.dvc_stage as dvc_stage
    from flows.pipeline import pipeline

    real_popen = subprocess.Popen
    calls = {"n": 0}

    def flaky(cmd, *args, **kwargs):
        if "repro" in cmd and calls["n"] == 0:
            calls["n"] += 1
            raise OSError("simulated: worker lost")
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(dvc_stage.subprocess, "Popen", flaky)
    state = pipeline(
        project_dir=str(ws),
        stages=["validate@ner"],
        force=True,
        retries=2,
        retry_delay_seconds=0.1,
        return_state=True,
        record=False,
    )
    assert state.is_completed(), state.message
    runs = {r.name: r for r in asyncio.run(_task_runs(state.state_details.flow_run_id))}
    assert set(runs) == {"ingest@ner", "validate@ner"}  # a selection brings its upstream
    assert runs["ingest@ner"].run_count == 2 and calls["n"] == 1


def test_overrides_leave_a_consistent_workspace_recorded_as_a_dvc_experiment(ws):
    import json
    import subprocess

    from prefect.client.orchestration import get_client

    from flows.pipeline import pipeline

    dvc = str(Path(os.sys.executable).parent / "dvc")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dvc, *args], cwd=ws, capture_output=True, text=True)

    assert json.loads(run("status", "--json").stdout or "{}") == {}  # the earlier tests left it clean
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "-A"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], cwd=ws, check=True)  # dvc.lock of the first run
    state = pipeline(project_dir=str(ws), overrides={"ingest.ner.seed": 7}, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["ingest@ner"] == "ran" and state.result()["validate@ner"] == "ran"

    async def name():
        async with get_client() as client:
            return (await client.read_flow_run(state.state_details.flow_run_id)).name

    run_name = asyncio.run(name())
    # params.yaml, dvc.lock and the outputs agree: nothing stale, and a plain repro reruns nothing
    assert yaml.safe_load((ws / "params.yaml").read_text())["ingest"]["ner"]["seed"] == 7
    assert json.loads(run("status", "--json").stdout or "{}") == {}
    lock_before = (ws / "dvc.lock").read_text()
    repro = run("repro")
    assert repro.returncode == 0, repro.stderr
    assert "Running stage" not in repro.stdout and (ws / "dvc.lock").read_text() == lock_before

    # the experiment: listed, its params differ from HEAD, and the flow run links to it
    assert run_name in run("exp", "list", "--name-only").stdout.split()
    shown = run("params", "diff", "HEAD", run_name, "--json").stdout
    assert '"ingest.ner.seed"' in shown and '"new": 7' in shown
    linked = [a for a in asyncio.run(_artifact("dvc-experiment")) if a.flow_run_id == state.state_details.flow_run_id]
    assert linked and f"`{run_name}`" in linked[0].data

    # the documented way back to the committed state is consistent too
    subprocess.run(["git", "checkout", "--", "params.yaml", "dvc.lock"], cwd=ws, check=True)
    assert run("checkout").returncode == 0
    assert json.loads(run("status", "--json").stdout or "{}") == {}
    # and the experiment can be brought back with dvc exp apply
    assert run("exp", "apply", run_name).returncode == 0
    assert json.loads(run("status", "--json").stdout or "{}") == {}
    subprocess.run(["git", "checkout", "--", "params.yaml", "dvc.lock"], cwd=ws, check=True)
    run("checkout")


def test_overrides_that_run_nothing_leave_params_untouched(ws):
    from flows.pipeline import pipeline

    before = (ws / "params.yaml").read_bytes()
    # a value equal to the committed one: every stage is fresh, nothing ran under the override
    state = pipeline(project_dir=str(ws), overrides={"ingest.ner.seed": 13}, stages=["validate@ner"], return_state=True)
    assert state.is_completed(), state.message
    assert set(state.result().values()) == {"skipped"}
    assert (ws / "params.yaml").read_bytes() == before

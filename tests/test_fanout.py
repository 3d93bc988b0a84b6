"""Concurrent stages (issue #13) on the tiny embedded pipeline, with real Dask clusters on
loopback (worker processes, TCP on 127.0.0.1) under prefect_test_harness:

- 2 concurrent stages: every stage runs once, some of them at the same time, and dvc.lock
  reads as a sequential `dvc repro` of the same workspace writes it (same stage order, same
  hashes; only the files that record wall-clock times may differ); a second flow run skips all;
- a failed branch: the other branch's results are replayed into dvc.lock, the failed stage and
  its dependents are not, and the next run recomputes only those;
- a Dask worker killed in the middle of a stage: the stage's process tree dies with it, Dask
  reschedules the stage, and the pipeline completes with the expected dvc.lock;
- a fresh clone with an empty cache pulls everything (run-cache included) from a local DVC
  remote and reproduces nothing.
"""

from __future__ import annotations

import contextvars
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from test_flow import STAGES, harness, tiny_workspace  # noqa: F401 - harness is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
BIN = Path(sys.executable).parent

# outputs that record wall-clock time (runtimes, tokens/s, dvclive's timestamps), and folders
# holding them: they differ between any two runs, sequential or not; every other hash must match
TIMED = re.compile(
    r"(metrics\.json|/live/.*|reports/report\.(md|html)|reports/evaluate/details\.json|^reports/(finetune|tapt|pretrain))$"
)


def _env(**extra: str) -> dict[str, str]:
    # offline, as the flow runs its stages (a saved tokenizer records the setting)
    base = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    return {**os.environ, **base, **extra}


def _dvc(ws: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=ws, env=_env(**env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _lock_view(ws: Path) -> tuple[dict, list[str]]:
    """dvc.lock parsed, with the hashes (md5, size, nfiles) of timing-bearing paths blanked, and
    its text without the hash lines: together, the file byte for byte but for those values."""
    text = (ws / "dvc.lock").read_text()
    doc = yaml.safe_load(text)
    for stage in doc["stages"].values():
        for item in stage.get("deps", []) + stage.get("outs", []):
            if TIMED.search(item["path"]):
                item.update({k: "<timed>" for k in ("md5", "size", "nfiles") if k in item})
    skeleton = [line for line in text.splitlines() if not re.match(r"\s*(md5|size|nfiles):", line)]
    return doc, skeleton


def _flow(ws: Path, **kwargs):
    from flows.pipeline import pipeline

    return pipeline(project_dir=str(ws), record=False, return_state=True, **kwargs)


def _runs(state) -> list:
    import asyncio

    from test_flow import _task_runs

    return asyncio.run(_task_runs(state.state_details.flow_run_id))


# threads per stage (runtime.threads) in these workspaces: 2 stages x 1 thread fit CI's 2 cores
THREADS = 1


@pytest.fixture(scope="module")
def sequential_lock(tmp_path_factory) -> tuple[dict, list[str]]:
    """The reference: plain `dvc repro` in an environment that asks for another thread count
    than runtime.threads (thread counts change float summation order, hence model bytes): the
    stages must take the param, so that the fan-out, with its own thread settings, matches."""
    ws = tiny_workspace(tmp_path_factory.mktemp("seq") / "repo", threads=THREADS)
    _dvc(ws, "repro", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    return _lock_view(ws)


@pytest.fixture(scope="module")
def fanned(tmp_path_factory, harness):  # noqa: F811
    ws = tiny_workspace(tmp_path_factory.mktemp("fan") / "repo", threads=THREADS)
    state = _flow(ws, concurrency=2)
    return ws, state


def test_two_concurrent_stages_write_the_sequential_dvc_lock(fanned, sequential_lock):
    ws, state = fanned
    assert state.is_completed(), state.message
    assert state.result() == dict.fromkeys(STAGES, "ran")
    runs = [r for r in _runs(state) if r.state.is_completed()]
    assert sorted(r.name for r in runs) == STAGES  # one task run per stage, each ran once
    spans = sorted((r.start_time, r.end_time) for r in runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two stages overlapped in time"
    doc, skeleton = _lock_view(ws)
    assert list(doc["stages"]) == list(sequential_lock[0]["stages"])  # dvc repro's order
    assert skeleton == sequential_lock[1]  # every line but the hash values, byte for byte
    assert doc == sequential_lock[0]  # every hash but those of timing-bearing files
    assert "up to date" in _dvc(ws, "status").stdout
    assert not list((ws / ".dvc" / "tmp" / "fanout").iterdir())  # stage workspaces removed


def test_a_second_run_skips_every_stage(fanned):
    ws, _ = fanned
    again = _flow(ws, concurrency=2)
    assert again.result() == dict.fromkeys(STAGES, "skipped")


def test_an_oversubscribed_local_cluster_is_refused_before_any_stage(tmp_path, harness):  # noqa: F811
    from finpipe.threads import usable_cores

    ws = tiny_workspace(tmp_path / "repo", threads=usable_cores())  # 2 stages x all cores
    lock = (ws / "dvc.lock").read_text() if (ws / "dvc.lock").exists() else None
    state = _flow(ws, concurrency=2)
    assert state.is_failed()
    assert f"need {2 * usable_cores()} cores" in state.message and "--set runtime.threads=" in state.message
    assert ((ws / "dvc.lock").read_text() if (ws / "dvc.lock").exists() else None) == lock  # nothing ran
    assert not any((ws / "models").glob("*")) if (ws / "models").exists() else True


def _set_cmd(ws: Path, stage: str, edit) -> None:
    """Edit one foreach-free stage's command in dvc.yaml (a changed command makes DVC rerun it)."""
    dvc_yaml = ws / "dvc.yaml"
    doc = yaml.safe_load(dvc_yaml.read_text())
    doc["stages"][stage]["cmd"] = edit(doc["stages"][stage]["cmd"])
    dvc_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_a_failed_branch_keeps_the_others_and_the_next_run_resumes(fanned, tmp_path):
    ws, _ = fanned
    before = (ws / "dvc.lock").read_text()
    original = (ws / "dvc.yaml").read_text()
    # two independent branches go stale: base-model fails until a marker file exists (a
    # transient cause, fixed before the next run), pretrain reruns and succeeds
    marker = tmp_path / "fixed"
    _set_cmd(ws, "base-model", lambda cmd: f"test -f {marker} && {cmd}")
    _set_cmd(ws, "pretrain", lambda cmd: f"{cmd} && true")
    state = _flow(ws, concurrency=2, retries=0)
    assert state.is_failed()
    assert "base-model" in state.message
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert lock["pretrain"]["cmd"].endswith("&& true")  # replayed although another branch failed
    assert "test -f" not in lock["base-model"]["cmd"]  # the failed stage kept its old entry
    # the next run recomputes only what is missing: base-model; pretrain comes from dvc.lock
    marker.touch()
    resumed = _flow(ws, concurrency=2)
    assert resumed.is_completed(), resumed.message
    result = resumed.result()
    assert result["base-model"] == "ran" and result["pretrain"] == "skipped"
    assert all(v != "ran" for k, v in result.items() if k != "base-model"), result
    assert "up to date" in _dvc(ws, "status").stdout
    # back to the first run's state for the tests after this one
    (ws / "dvc.yaml").write_text(original)
    (ws / "dvc.lock").write_text(before)
    _dvc(ws, "checkout", "--force")
    assert "up to date" in _dvc(ws, "status").stdout


def _stage_processes(ws: Path, stage: str) -> list[psutil.Process]:
    """Processes working inside one of the stage's workspaces."""
    root = str(ws / ".dvc" / "tmp" / "fanout" / stage)
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(root + "-"):
            found.append(proc)
    return found


def test_a_killed_worker_is_rescheduled_and_the_pipeline_completes(fanned):
    from distributed import Client, LocalCluster

    ws, _ = fanned
    before, _ = _lock_view(ws)
    lock_text = (ws / "dvc.lock").read_text()
    original = (ws / "dvc.yaml").read_text()
    # base-model made slow enough to be caught in the middle (it reruns; nothing below changes)
    _set_cmd(ws, "base-model", lambda cmd: f"sleep 25 && {cmd}")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0") as cluster:
        with Client(cluster):
            result: dict = {}
            # the flow in a thread of its own, in this thread's context (the test harness's API settings)
            ctx = contextvars.copy_context()
            runner = threading.Thread(
                target=ctx.run,
                args=(lambda: result.update(state=_flow(ws, dask_address=cluster.scheduler_address)),),
            )
            runner.start()
            deadline = time.time() + 600
            sleepers: list[psutil.Process] = []
            while time.time() < deadline and not sleepers:
                sleepers = [p for p in _stage_processes(ws, "base-model") if p.name() == "sleep"]
                time.sleep(0.5)
            assert sleepers, "base-model never started"
            guard = next(p for p in sleepers[0].parents() if "flows.stage_guard" in " ".join(p.cmdline()))
            worker = guard.parent()
            assert worker.pid in {w.process.process.pid for w in cluster.workers.values()}
            os.kill(worker.pid, signal.SIGKILL)
            gone, alive = psutil.wait_procs(sleepers, timeout=15)
            assert not alive, "the stage's processes outlived their worker"
            runner.join(timeout=900)
    state = result["state"]
    assert state.is_completed(), state.message
    assert state.result()["base-model"] == "ran"
    # the same dvc.lock as before, but for base-model's new command
    after = _lock_view(ws)[0]["stages"]
    assert after["base-model"].pop("cmd").startswith("sleep 25 && ")
    expected = before["stages"]
    expected["base-model"].pop("cmd")
    assert list(after) == list(expected) and after == expected
    # back to the first run's state for the tests after this one
    (ws / "dvc.yaml").write_text(original)
    (ws / "dvc.lock").write_text(lock_text)
    _dvc(ws, "checkout", "--force")
    assert "up to date" in _dvc(ws, "status").stdout


def test_a_fresh_clone_pulls_from_the_local_remote_and_reproduces_nothing(fanned, tmp_path):
    ws, _ = fanned
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run(["git", "commit", "-qm", "results"], cwd=ws, check=True)
    remote = tmp_path / "remote"
    # the project's default remote is a local directory; point it at a scratch one
    _dvc(ws, "remote", "modify", "--local", "local", "url", str(remote))
    _dvc(ws, "push", "--run-cache")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    assert not (clone / ".dvc" / "cache").exists()
    _dvc(clone, "remote", "modify", "--local", "local", "url", str(remote))
    _dvc(clone, "pull", "--run-cache")
    assert any((clone / ".dvc" / "cache" / "runs").rglob("*")), "run-cache not pulled"
    assert "up to date" in _dvc(clone, "status").stdout
    repro = _dvc(clone, "repro")
    assert "Running stage" not in repro.stdout, repro.stdout
    shutil.rmtree(clone)

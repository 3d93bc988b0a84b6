"""The pieces of concurrent stages that need no cluster: stage workspaces, the stage
environment (threads, one GPU per worker slot), the refusal of relative paths outside the
project, dvc repro's order, and the guard that takes a stage down with its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from configobj import ConfigObj

from flows import fanout

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _dvc_project(path: Path, dvc_yaml: str) -> Path:
    path.mkdir(parents=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=path, check=True, env=env)
    (path / "dvc.yaml").write_text(textwrap.dedent(dvc_yaml))
    (path / "seed.txt").write_text("seed\n")
    return path


DIAMOND = """\
    stages:
      a:
        cmd: echo A > a.txt
        deps: [seed.txt]
        outs: [a.txt]
      c:
        cmd: cat a.txt > c.txt
        deps: [a.txt]
        outs: [c.txt]
      b:
        cmd: cat a.txt > b.txt
        deps: [a.txt]
        outs: [b.txt]
      d:
        cmd: cat b.txt c.txt > d.txt
        deps: [b.txt, c.txt]
        outs: [d.txt]
    """


def test_workspace_copies_the_project_and_shares_its_cache(tmp_path):
    root = _dvc_project(tmp_path / "p", DIAMOND)
    (root / ".dvc" / "config.local").write_text("[core]\n    remote = mine\n['remote \"mine\"']\n    url = /srv/x\n")
    (root / "new-untracked.txt").write_text("kept\n")
    (root / "big.bin").write_bytes(b"x" * (2 << 20))
    (root / "ignored.log").write_text("not kept\n")
    (root / ".gitignore").write_text("*.log\n")
    files = fanout.project_files(root)
    assert "new-untracked.txt" in files and "dvc.yaml" in files and "ignored.log" not in files
    ws = fanout.make_workspace(root, tmp_path / "work", "finetune-sentiment@headlines-base-13", files, tmp_path / "cache")
    assert ws.parent == tmp_path / "work" and ws.name.startswith("finetune-sentiment_headlines-base-13-")
    assert (ws / "new-untracked.txt").read_text() == "kept\n" and not (ws / "ignored.log").exists()
    assert (ws / "big.bin").stat().st_ino == (root / "big.bin").stat().st_ino  # linked, not copied
    assert (ws / "dvc.yaml").stat().st_ino != (root / "dvc.yaml").stat().st_ino
    conf = ConfigObj(str(ws / ".dvc" / "config.local"))
    assert conf["cache"]["dir"] == str(tmp_path / "cache") and conf["core"]["no_scm"] == "true"
    assert conf["core"]["remote"] == "mine" and conf['remote "mine"']["url"] == "/srv/x"  # the user's local config kept
    assert not (root / ".dvc" / "config.local").read_text().count("no_scm")  # the project's own is untouched


def test_project_files_needs_git(tmp_path):
    with pytest.raises(fanout.FanOutError, match="git repository"):
        fanout.project_files(tmp_path)


def test_stage_env_caps_threads_and_gives_each_slot_one_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env = fanout.stage_env(tmp_path, 3, ["0", "1"], slot=3)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)  # the workspace's code runs
    assert "CUDA_VISIBLE_DEVICES" not in fanout.stage_env(tmp_path, 3, [], slot=0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as Dask's nanny sets it in every worker
    assert fanout.stage_env(tmp_path, 3, [], slot=None)["OMP_NUM_THREADS"] == "3"


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert fanout.visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert fanout.visible_gpus() == []


def test_stage_threads_are_the_projects_runtime_threads(tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runtime"] = {"threads": 5}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the environment does not decide: the param does
    assert fanout.stage_threads(tmp_path) == 5
    del params["runtime"]  # a profile without the section: the default
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert fanout.stage_threads(tmp_path) == 2


def test_oversubscription_is_named_with_both_ways_out():
    assert fanout.oversubscription(2, 1, 2) is None
    assert fanout.oversubscription(4, 4, 16) is None
    said = fanout.oversubscription(2, 2, 2)
    assert said is not None
    assert "2 concurrent stages x 2 threads (runtime.threads) need 4 cores, and this machine has 2" in said
    assert "--concurrency to 1" in said and "--set runtime.threads=1" in said


def test_dvc_order_is_dvc_repro_order(tmp_path):
    root = _dvc_project(tmp_path / "p", DIAMOND)
    # what a plain `dvc repro` runs, in its order
    proc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, capture_output=True, text=True, check=True)
    ran = [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")]
    assert fanout.dvc_order(root, ["d", "c", "b", "a"]) == ran
    assert ran != sorted(ran) or ran == ["a", "b", "c", "d"]


def test_relative_paths_outside_the_project_are_named(tmp_path):
    root = _dvc_project(
        tmp_path / "p",
        """\
        stages:
          a:
            cmd: cat ../outside.txt > a.txt
            deps: [../outside.txt, seed.txt]
            outs: [a.txt]
          b:
            cmd: cat /etc/hostname > b.txt
            deps: [/etc/hostname]
            outs: [b.txt]
        """,
    )
    assert fanout.relative_outside_deps(root) == ["a: ../outside.txt"]


def test_stage_guard_takes_the_stage_down_with_its_parent(tmp_path):
    """A parent (standing in for a Dask worker) starts the guard, which starts a process tree
    (a shell and its sleep, as dvc and its stage command); the parent is killed with SIGKILL."""
    pids = tmp_path / "pids"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.Popen([sys.executable, '-m', 'flows.stage_guard', '--', 'sh', '-c', "
            f"'sleep 300 & echo $! > {pids}; wait']).wait()",
        ],
        cwd=ROOT,
    )
    deadline = time.time() + 30
    while time.time() < deadline and not (pids.is_file() and pids.read_text().strip()):
        time.sleep(0.1)
    sleeper = psutil.Process(int(pids.read_text()))
    assert sleeper.is_running()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs([sleeper], timeout=10)
    assert not alive, "the stage outlived the process that started it"


def test_stage_guard_passes_the_exit_status_on(tmp_path):
    run = subprocess.run([sys.executable, "-m", "flows.stage_guard", "--", "sh", "-c", "exit 3"], cwd=ROOT)
    assert run.returncode == 3
    run = subprocess.run([sys.executable, "-m", "flows.stage_guard", "--", "sh", "-c", "kill -9 $$"], cwd=ROOT)
    assert run.returncode == 128 + 9

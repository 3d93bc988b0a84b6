"""The cluster estimate behind README's "16 workers" figure (benchmarks/fanout.py estimate): the
critical path and greedy list schedule over a stage graph, and the restriction of the graph to
what `dvc repro TARGET` runs (on a small DVC project), and the seeding of benchmark copies with
a project's results. No timing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fanout_bench", REPO / "benchmarks" / "fanout.py")
fanout_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fanout_bench)

# stage -> the stages it depends on: a -> (b, c) -> d, and e hanging off a, used by nothing below
GRAPH = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": {"a"}}
TIMES = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 1.0, "e": 4.0}


def test_one_worker_runs_everything_one_after_another():
    critical, makespan = fanout_bench.schedule(TIMES, GRAPH, 1)
    assert critical == 5.0  # a, e
    assert makespan == sum(TIMES.values())


def test_enough_workers_reach_the_critical_path():
    critical, makespan = fanout_bench.schedule(TIMES, GRAPH, 3)
    assert (critical, makespan) == (5.0, 5.0)


def test_two_workers_overlap_the_branches():
    # longest remaining path first: e (4) and b (3+1) start at 1, c after b, d after c: 1+3+2+1
    critical, makespan = fanout_bench.schedule(TIMES, GRAPH, 2)
    assert critical == 5.0
    assert makespan == 7.0


def test_target_keeps_the_stages_above_it_only(tmp_path):
    # the project's graph: a -> b, and c on its own; `dvc repro b` runs a and b
    project = _project(tmp_path / "p", extra="  c:\n    cmd: echo three > c.txt\n    outs: [c.txt]\n")
    deps = fanout_bench.graph(project)
    assert deps == {"a": set(), "b": {"a"}, "c": set()}
    sub = fanout_bench.restrict(project, deps, ["b"])
    assert sub == {"a": set(), "b": {"a"}}
    critical, makespan = fanout_bench.schedule({"a": 1.0, "b": 3.0, "c": 4.0}, sub, 1)
    assert (critical, makespan) == (4.0, 4.0)  # c's 4 s no longer counted
    with pytest.raises(SystemExit, match="unknown stage.*'evalute'"):
        fanout_bench.restrict(project, deps, ["evalute"])


def test_train_steps_come_from_the_metrics_dvc_lock_lists(tmp_path):
    # the benchmark's check that two copies did the same work: early stopping decides the steps
    (tmp_path / "r" / "a").mkdir(parents=True)
    (tmp_path / "r" / "a" / "metrics.json").write_text('{"train": {"steps": 640, "best_step": 400}}')
    (tmp_path / "r" / "b.json").write_text('{"dev": {"f1": 0.5}}')  # no training: not listed
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\n"
        "stages:\n"
        "  finetune@a:\n"
        "    cmd: x\n"
        "    outs:\n"
        "    - path: r/a/metrics.json\n"
        "    - path: models/a\n"
        "  evaluate:\n"
        "    cmd: y\n"
        "    outs:\n"
        "    - path: r/b.json\n"
    )
    assert fanout_bench.train_steps(tmp_path) == {"finetune@a": 640}
    assert fanout_bench.train_steps(tmp_path / "nowhere") == {}


def _project(path: Path, extra: str = "") -> Path:
    """A two-stage DVC project, a -> b (and `extra` stages), in a git repo of its own, with `a` run."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).parent / "dvc")
    path.mkdir()
    (path / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: echo one > a.txt\n    outs: [a.txt]\n"
        "  b:\n    cmd: cat a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n" + extra
    )
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=path, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "p"], cwd=path, check=True)
    subprocess.run([dvc, "repro", "-q", "a"], cwd=path, check=True, env=env)
    return path


def test_seed_gives_the_copy_the_projects_results_and_nothing_else(tmp_path):
    import os
    import subprocess
    import sys

    project = _project(tmp_path / "project")
    copy = fanout_bench._copy_project(project, tmp_path / "copy")
    assert not (copy / "a.txt").exists() and not (copy / "dvc.lock").exists()
    assert fanout_bench.seed(project, copy, ["a"]) == ["a"]
    assert (copy / "a.txt").read_text() == "one\n"  # pulled into the copy's own cache and checked out
    assert (copy / ".dvc" / "cache").is_dir()
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    status = subprocess.run([dvc, "status"], cwd=copy, capture_output=True, text=True, env=env).stdout
    assert "b:" in status and "a:" not in status  # a is done, b still to run
    with pytest.raises(SystemExit, match="no such stage"):
        fanout_bench.seed(project, fanout_bench._copy_project(project, tmp_path / "copy2"), ["nope*"])


def test_estimate_without_any_stage_time_says_so(tmp_path, monkeypatch, capsys):
    project = _project(tmp_path / "p")
    monkeypatch.setattr("sys.argv", ["fanout.py", "estimate", str(tmp_path / "none.json"), "--project", str(project)])
    with pytest.raises(SystemExit, match="no stage times for .*none.json"):
        fanout_bench.main()
    # one time given: the schedule prints (a counted, b as 0)
    monkeypatch.setattr("sys.argv", ["fanout.py", "estimate", "none", "--project", str(project), "--extra", "a=2"])
    fanout_bench.main()
    assert "1 workers: makespan 2 s (1.00x)" in capsys.readouterr().out

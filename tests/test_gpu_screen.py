"""profiles/gpu_screen.py run: the stage commands of several grid entries in dependency order,
each entry's params overrides in its own workspace copy, dev figures back and test figures not,
a failed stage's dependents not started, the packed float16 weights restored as float32."""

from __future__ import annotations

import importlib.util
import json
import lzma
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_screen", REPO / "profiles" / "gpu_screen.py")
gpu_screen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_screen)

PY = sys.executable


# a stand-in stage: fails if a required folder is missing, makes its output folder, writes
# metrics (with test figures, as the real stages do) that show the l2sp its params.yaml gave
STAGE = """
import json, pathlib, sys, yaml
need, make, metrics, kind = sys.argv[1:5]
if need != "-" and not pathlib.Path(need).is_dir():
    raise SystemExit(f"{need} missing")
if kind == "bad":
    raise SystemExit("broken on purpose")
if make != "-":
    pathlib.Path(make).mkdir(parents=True, exist_ok=True)
l2sp = yaml.safe_load(open("params.yaml"))["tapt"]["train"]["l2sp"]
m = {"train": {"l2sp": l2sp, "test_examples": 9}, "dev": {"accuracy": l2sp}, "test": {"accuracy": 1.0}}
pathlib.Path(metrics).parent.mkdir(parents=True, exist_ok=True)
pathlib.Path(metrics).write_text(json.dumps(m))
"""


def _stage(name: str, dep: str, out: str, kind: str = "ok") -> dict[str, object]:
    metrics = f"reports/{name.replace('@', '_')}.json"
    cmd = f"{PY} ../../packed/stage.py {dep} {out} {metrics} {kind} --metrics {metrics}"
    return {"name": name, "deps": [dep, "params.yaml"], "outs": [out], "cmd": cmd}


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "packed"
    ws = folder / "ws"
    (ws / "models/base").mkdir(parents=True)
    (ws / "params.yaml").write_text(yaml.safe_dump({"tapt": {"train": {"l2sp": 0.0}}}))
    (folder / "stage.py").write_text(STAGE)
    weights = {"w": torch.tensor([1.0, 1.0 / 3.0, -2.5e-3]), "ids": torch.arange(3)}
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in weights.items()}
    save_file(half, str(tmp_path / "m16.safetensors"))
    with lzma.open(folder / "model16.safetensors.xz", "wb") as f:
        f.write((tmp_path / "m16.safetensors").read_bytes())
    stages = [
        _stage("tapt-sentiment@t-base", "models/base", "models/tapt/t/base"),
        _stage("finetune-sentiment-tapt@t-base-13", "models/tapt/t/base", "models/s/t"),
        _stage("finetune-sentiment@t-base-13", "models/base", "models/s/b"),
        _stage("tapt-ner@bad-base", "models/base", "models/tapt/bad/base", kind="bad"),
        _stage("finetune-ner-tapt@bad-base-13", "models/tapt/bad/base", "models/n/bad"),
    ]
    (folder / "stages.json").write_text(json.dumps(stages))
    return folder


def test_run_grid(tmp_path: Path) -> None:
    folder, out, work = _folder(tmp_path), tmp_path / "out", tmp_path / "work"
    out.mkdir()
    grid = {"v1": {"tapt.train.l2sp": 0.5}, "v2": {"tapt.train.l2sp": 0.75}}
    gpu_screen.run(folder, grid, concurrency=2, launch_until=120, kill_at=180, out=out, work=work)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by = {(r["variant"], r["stage"]): r for r in rows}
    # each grid entry's override reached its TAPT and the fine-tuning that depends on it
    assert by[("v1", "finetune-sentiment-tapt@t-base-13")]["metrics"]["dev"]["accuracy"] == 0.5
    assert by[("v2", "finetune-sentiment-tapt@t-base-13")]["metrics"]["dev"]["accuracy"] == 0.75
    assert by[("v2", "tapt-sentiment@t-base")]["metrics"]["train"]["l2sp"] == 0.75
    # base fine-tuning only in the first entry (later entries change TAPT alone)
    assert ("v1", "finetune-sentiment@t-base-13") in by and ("v2", "finetune-sentiment@t-base-13") not in by
    # a failed TAPT: logged, and its fine-tuning never started
    assert by[("v1", "tapt-ner@bad-base")]["rc"] == 1
    assert by[("v1", "finetune-ner-tapt@bad-base-13")]["rc"] == "blocked"
    assert not (work / "ws-v1/models/n/bad").exists()
    assert "broken on purpose" in (out / "failures.log").read_text()
    # test figures stay on the machine: no key naming test comes back
    assert "test" not in (out / "results.jsonl").read_text()
    assert "test" in (work / "ws-v1/reports/finetune-sentiment-tapt_t-base-13.json").read_text()  # they were there
    # the packed float16 weights come back as float32 (rounded once), integers untouched
    restored = load_file(str(work / "ws-v2/models/base/model.safetensors"))
    assert restored["w"].dtype == torch.float32 and restored["ids"].dtype == torch.int64
    assert torch.equal(restored["w"], torch.tensor([1.0, 1.0 / 3.0, -2.5e-3]).half().float())


def test_launch_deadline(tmp_path: Path) -> None:
    """Nothing starts after --launch-until: what is left is listed in not_run.txt."""
    folder, out, work = _folder(tmp_path), tmp_path / "out", tmp_path / "work"
    out.mkdir()
    gpu_screen.run(folder, {"v1": {}}, concurrency=1, launch_until=0, kill_at=10, out=out, work=work)
    assert not (out / "results.jsonl").exists()
    assert len((out / "not_run.txt").read_text().split()) == 5


# a stand-in for TAPT and two fine-tuning runs in one stage: the metrics files where the real
# stages write them, a TAPT-dependent dev figure, test figures next to it, a failure on demand
EXP_STAGE = """
import json, pathlib, yaml
l2sp = yaml.safe_load(open("params.yaml"))["tapt"]["train"]["l2sp"]
if l2sp < 0:
    raise SystemExit("broken on purpose")
files = {
    "reports/tapt/t/base/metrics.json": {"base": {"perplexity": 100.0}, "adapted": {"perplexity": 40.0}, "train": {"steps": 7}},
    "reports/finetune/sentiment/t/base-s13/metrics.json":
        {"task": "t", "variant": "base", "seed": 13, "dev": {"micro_f1": 0.5}, "test": {"micro_f1": 0.9}},
    "reports/finetune/sentiment/t/base-tapt-s13/metrics.json":
        {"task": "t", "variant": "base-tapt", "seed": 13, "dev": {"micro_f1": 0.5 + l2sp}, "test": {"micro_f1": 0.9}},
}
for path, m in files.items():
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_text(json.dumps(m))
"""


@pytest.mark.slow  # a real DVC queue worker: ~30 s
def test_exp_queue_rows(tmp_path: Path) -> None:
    """What profiles/tapt-screen.sh does with DVC's queue, on a one-stage project: the committed
    baseline and each queued experiment come back from `dvc exp show --json` under their names,
    dev figures only; a failed experiment is left out."""
    import os
    import subprocess
    import time

    dvc = str(Path(PY).parent / "dvc")
    # the queue's worker is spawned as `dvc ...`: found on PATH, as under `make`
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"}

    def sh(*cmd: str) -> str:
        return subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout

    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    (tmp_path / "stage.py").write_text(EXP_STAGE)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tapt": {"train": {"l2sp": 0.0}}}))
    metrics = [
        "reports/tapt/t/base/metrics.json",
        "reports/finetune/sentiment/t/base-s13/metrics.json",
        "reports/finetune/sentiment/t/base-tapt-s13/metrics.json",
    ]
    stage = {"cmd": f"{PY} stage.py", "deps": ["stage.py"], "params": ["tapt.train"], "metrics": metrics}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"screen": stage}}))
    sh(dvc, "repro", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "baseline")
    sh(dvc, "exp", "run", "--queue", "-n", "strong", "-S", "tapt.train.l2sp=0.25")
    sh(dvc, "exp", "run", "--queue", "-n", "broken", "-S", "tapt.train.l2sp=-1")
    sh(dvc, "queue", "start", "-j", "1")
    deadline = time.monotonic() + 300
    while re.search(r"\b(Queued|Running)\b", sh(dvc, "queue", "status")):
        assert time.monotonic() < deadline, sh(dvc, "queue", "status")
        time.sleep(2)
    shown = json.loads(sh(dvc, "exp", "show", "--json"))
    rows = gpu_screen.from_exp_show(shown, "profile")
    by = {(r["variant"], r["stage"]): r["metrics"] for r in rows}
    assert set(by) == {
        (name, stage)
        for name in ("profile", "strong")
        for stage in ("tapt-sentiment@t-base", "finetune-sentiment@t-base-s13", "finetune-sentiment@t-base-tapt-s13")
    }
    assert by[("profile", "finetune-sentiment@t-base-tapt-s13")]["dev"]["micro_f1"] == 0.5
    assert by[("strong", "finetune-sentiment@t-base-tapt-s13")]["dev"]["micro_f1"] == 0.75
    assert "test" not in json.dumps(rows)
    # the table: base once, each configuration against it
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = gpu_screen.table([results])
    assert "| t (micro_f1) | strong | 1 | 0.7500 | – | +0.2500 | 7 | 100 → 40 |" in table
    assert "| t (micro_f1) | profile | 1 | 0.5000 | – | +0.0000 | 7 | 100 → 40 |" in table


def test_exp_show_unfinished_left_out() -> None:
    """While the queue runs, `dvc exp show` lists queued and running experiments with their
    baseline's figures: they must not enter the table as results of their own."""
    data = {"metrics": {"reports/finetune/ner/t/base-tapt-s13/metrics.json": {"data": {"dev": {"micro_f1": 0.5}}}}}
    shown = [
        {"rev": "workspace", "data": data, "error": None, "experiments": None},
        {
            "rev": "a" * 40,
            "data": data,
            "error": None,
            "experiments": [
                {"executor": {"state": state}, "name": name, "revs": [{"rev": "b" * 40, "name": name, "data": data}]}
                for name, state in (("queued", "queued"), ("running", "running"), ("failed", "failed"))
            ]
            + [{"executor": None, "name": "done", "revs": [{"rev": "c" * 40, "name": "done", "data": data}]}],
        },
    ]
    rows = gpu_screen.from_exp_show(shown, "profile")
    assert [(r["variant"], r["stage"]) for r in rows] == [
        ("profile", "finetune-ner@t-base-tapt-s13"),
        ("done", "finetune-ner@t-base-tapt-s13"),
    ]

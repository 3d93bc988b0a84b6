"""profiles/tapt-screen.sh (`make screen`) with a stand-in `dvc` that records its calls: the
workspace narrowed to the screened tasks and seeds, the baseline reproduced and committed, one
queued experiment per grid line with its overrides, a wait that lasts while the queue still
runs, and the table made from what `dvc exp show --json` returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# `dvc queue status` says Running twice before the queue is empty; `dvc exp show --json` gives a
# baseline and one finished experiment
DVC = """#!/bin/sh
echo "$*" >> {calls}
case "$1 $2" in
  "queue status")
    n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}
    # as DVC does, more lines after the one a reader waits for (a reader that quits at the
    # first match leaves this writer a broken pipe)
    [ "$n" -lt 2 ] && printf 'Task     Name    Created    Status\\nabc1234  tapt10  04:00 PM   Running\\n' && sleep 0.3
    printf '\\nWorker status: 1 active, 0 idle\\n'
    exit 0 ;;
  "exp show") cat {shown} ;;
esac
exit 0
"""


def _shown() -> list[dict]:
    def data(value: float) -> dict:
        path = "reports/finetune/sentiment/fpb50/{}-s13/metrics.json"
        return {
            "metrics": {
                path.format("base"): {"data": {"task": "fpb50", "variant": "base", "seed": 13, "dev": {"accuracy": 0.8}}},
                path.format("base-tapt"): {
                    "data": {
                        "task": "fpb50",
                        "variant": "base-tapt",
                        "seed": 13,
                        "dev": {"accuracy": value},
                        "test": {"accuracy": 1},
                    }
                },
            }
        }

    exp = {"executor": None, "name": "tapt10", "revs": [{"rev": "b" * 40, "name": "tapt10", "data": data(0.85)}]}
    return [{"rev": "a" * 40, "data": data(0.81), "error": None, "experiments": [exp]}]


def test_screen_queues_the_grid_and_waits(tmp_path: Path) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls, shown = tmp_path / "calls", tmp_path / "shown.json"
    shown.write_text(json.dumps(_shown()))
    (bin_ / "dvc").write_text(DVC.format(calls=calls, count=tmp_path / "count", shown=shown))
    (bin_ / "dvc").chmod(0o755)
    grid = tmp_path / "grid"
    grid.write_text("# a comment\ntapt10 tapt.train.l2sp=0.0\n\ntapt3 tapt.train.num_epochs=3.0 +tapt.data.masking=static\n")
    ws, data = tmp_path / "ws", tmp_path / "data"
    data.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FINPIPE_DATA": str(data),
        "SCREEN_WORKSPACE": str(ws),
        "SCREEN_GRID": str(grid),
        "SCREEN_TASKS": "fpb50 finer_ord",
        "SCREEN_SEEDS": "13 14",
        "SCREEN_POLL_S": "0.1",
    }
    proc = subprocess.run(["bash", "profiles/tapt-screen.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = yaml.safe_load((ws / "params.yaml").read_text())
    ft = params["finetune"]
    assert list(ft["sentiment"]["tasks"]) == ["fpb50"] and list(ft["ner"]["tasks"]) == ["finer_ord"]
    assert ft["seeds"] == [13, 14] and ft["variants"] == ["base"] and params["tapt"]["starts"] == ["base"]
    assert {b["task"] for b in params["evaluate"]["baselines"]} == {"fpb50"}
    # the profile's own TAPT section, untouched (the baseline's stages are `make real`'s)
    assert params["tapt"] == yaml.safe_load((REPO / "profiles/real.yaml").read_text())["tapt"]
    # committed before the baseline ran, and again after it (its dvc.lock)
    log = subprocess.run(["git", "log", "--format=%s"], cwd=ws, capture_output=True, text=True).stdout.split("\n")
    assert log[:2] == ["screen baseline", "screen: fpb50 finer_ord, seeds 13 14"]
    made = [c for c in calls.read_text().splitlines() if not c.startswith(("exp remove", "cache dir"))]
    assert made == [
        "repro evaluate",
        "exp run --queue -n tapt10 -S tapt.train.l2sp=0.0 evaluate",
        "exp run --queue -n tapt3 -S tapt.train.num_epochs=3.0 -S +tapt.data.masking=static evaluate",
        "queue start -j 1",
        "queue status",  # Running
        "queue status",  # Running
        "queue status",  # empty: done
        "queue status",  # shown once more at the end
        "exp show --json",
    ]
    table = (ws / "screen.md").read_text()
    assert "| fpb50 (accuracy) | tapt10 | 1 | 0.8500 | – | +0.0500 |" in table
    assert "| fpb50 (accuracy) | profile | 1 | 0.8100 | – | +0.0100 |" in table
    assert "test" not in (ws / "results.jsonl").read_text()

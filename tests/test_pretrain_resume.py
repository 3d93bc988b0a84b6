"""kill -9 during pretraining, then `dvc repro`: the stage resumes from the last complete
checkpoint (and says from which step) and ends with the same metrics as a run that was never
interrupted (`dvc repro -f`, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import tiny_pretrain
from test_dvc_pipeline import _sh, copy_repo

from finpipe.run_summary import WALL_CLOCK

pytestmark = pytest.mark.slow


def test_kill_then_dvc_repro_resumes_to_the_same_result(tmp_path):
    ws = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["pretrain"] = tiny_pretrain(max_steps=150, save_steps=10, logging_steps=10, learning_rate=5e-4)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["dvc", "repro", "pretrain"],
        cwd=ws,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpts = ws / "data/work/checkpoints/pretrain"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any((p / "trainer_state.json").is_file() for p in ckpts.glob("*/checkpoint-20")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9: dvc and the training process
    proc.wait()
    assert not (ws / "models/adapted/model.safetensors").exists()

    out = _sh(["dvc", "repro", "pretrain"], ws)
    step = int(out.split("resuming from ")[1].split("(step ")[1].split(")")[0])
    assert step >= 20
    resumed = json.loads((ws / "reports/pretrain/metrics.json").read_text())
    assert resumed["train"]["steps"] == 150

    out = _sh(["dvc", "repro", "-f", "pretrain"], ws)  # from scratch: the checkpoints were spent
    assert "resuming from" not in out
    fresh = json.loads((ws / "reports/pretrain/metrics.json").read_text())
    # the whole file is equal except the declared wall-clock section (this process's share)
    resumed_run, fresh_run = resumed.pop(WALL_CLOCK), fresh.pop(WALL_CLOCK)
    assert resumed == fresh
    assert resumed_run["resumed_from_step"] == step and fresh_run["resumed_from_step"] is None
    assert resumed_run["steps"] == 150 - step and fresh_run["steps"] == 150
    assert resumed["train"]["loss"] is not None and resumed["train"]["useful_tokens"] > 0

"""runtime.threads: every training stage runs with the recorded thread count, whatever the
environment asks for, and dvc.yaml declares it for each of them, so dvc.lock and the run-cache
record it (the thread count changes the trained model)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from finpipe import cli
from finpipe.threads import apply_threads, usable_cores

REPO = Path(__file__).resolve().parents[1]
TRAINING = ("finpipe pretrain", "finpipe tapt-", "finpipe finetune-")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_apply_threads_sets_torch_and_warns_past_the_cores(restore_threads, caplog):
    apply_threads(1)
    assert torch.get_num_threads() == 1
    with caplog.at_level(logging.WARNING, logger="finpipe.threads"):
        apply_threads(usable_cores() + 1)
    assert torch.get_num_threads() == usable_cores() + 1
    assert "runtime.threads is" in caplog.text and "same results" in caplog.text


def _params(tmp_path: Path, threads: int) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runtime"] = {"threads": threads}
    params["paths"]["inputs"] = {k: str(REPO / v) for k, v in params["paths"]["inputs"].items()}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


COMMANDS = {
    "pretrain": (
        "tasks.pretrain",
        ["--corpus", "c", "--output", "o", "--metrics", "m", "--live", "l", "--checkpoints", "k", "--cache", "x"],
    ),
    "tapt-sentiment": (
        "tasks.tapt",
        ["--task", "headlines", "--model", "m", "--data", "d", "--output", "o", "--metrics", "m", "--live", "l"]
        + ["--checkpoints", "k", "--cache", "x"],
    ),
    "finetune-sentiment": (
        "tasks.finetune_sentiment",
        ["--task", "headlines", "--variant", "base", "--seed", "13", "--model", "m", "--data", "d", "--output", "o"]
        + ["--metrics", "m", "--predictions", "p", "--live", "l", "--checkpoints", "k"],
    ),
    "finetune-ner": (
        "tasks.finetune_ner",
        ["--task", "news", "--variant", "base", "--seed", "13", "--model", "m", "--data", "d", "--output", "o"]
        + ["--metrics", "m", "--predictions", "p", "--live", "l", "--checkpoints", "k"],
    ),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_training_commands_run_with_the_params_threads(command, tmp_path, monkeypatch, restore_threads):
    import importlib

    module, args = COMMANDS[command]
    seen: list[int] = []
    monkeypatch.setattr(importlib.import_module(module), "run", lambda *a, **k: seen.append(torch.get_num_threads()))
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # what a fan-out or Dask's nanny may have set
    torch.set_num_threads(1)
    want = usable_cores() + 2  # a count nothing else here would pick
    assert cli.main([command, "--params", str(_params(tmp_path, want)), *args]) == 0
    assert seen == [want]


def test_every_training_stage_declares_runtime_threads():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    training = {name: spec.get("do", spec) for name, spec in stages.items() if spec.get("do", spec)["cmd"].startswith(TRAINING)}
    assert {"pretrain", "tapt-sentiment", "tapt-ner", "finetune-sentiment", "finetune-ner"} <= set(training)
    for name, spec in training.items():
        params = [p if isinstance(p, str) else next(iter(p)) for p in spec.get("params", [])]
        assert "runtime.threads" in params, f"{name}: runtime.threads is not a declared param"
        assert "finpipe/threads.py" in spec["deps"], f"{name}: finpipe/threads.py is not a declared dep"

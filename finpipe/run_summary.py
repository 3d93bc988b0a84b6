"""Training summaries that a resumed run reports exactly as an uninterrupted one.

The HF Trainer's `training_loss` averages the steps of the current process only (after a resume:
the steps since the checkpoint), and its speed figures time this process. A stage's metrics
therefore keep two kinds of fields apart:
- everything outside `this_run` is a function of the params and the data: equal, to the last
  digit, whether the run was interrupted and resumed or not (tests/test_pretrain_resume.py);
- `this_run` (WALL_CLOCK) holds what describes one process's run: its seconds, its speed, the
  step it resumed from. These are declared to differ between runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

WALL_CLOCK = "this_run"


class LogAtCheckpoints(TrainerCallback):
    """Log the running loss whenever a checkpoint is written. A resumed Trainer restarts its
    loss accumulator at the checkpoint, so an interval cut by the checkpoint would be lost;
    logging there closes every interval inside the saved `log_history`."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if control.should_save or state.global_step >= state.max_steps:  # the last interval too
            control.should_log = True
        return control


def mean_training_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The mean per-step training loss over every step of the run, from the logged interval
    means (each weighted by its number of steps). The log history is part of every checkpoint,
    so a resumed run sums the same intervals as an uninterrupted one."""
    total, steps, last = 0.0, 0, 0
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        n = entry["step"] - last
        if n > 0:
            total += entry["loss"] * n
            steps += n
            last = entry["step"]
    return round(total / steps, 5) if steps else None


def checkpoint_progress(checkpoint: str | None) -> dict[str, int]:
    """Optimizer steps and useful tokens already done in the checkpoint a run resumes from."""
    if not checkpoint:
        return {"step": 0, "tokens": 0}
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return {"step": int(state.get("global_step", 0)), "tokens": int(state.get("num_input_tokens_seen") or 0)}

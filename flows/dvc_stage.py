"""Prefect task-level code: run one DVC stage, stream its output into the run logger, and
classify how it ended. Staleness is DVC's business (`dvc repro --single-item`); this module
never re-implements a stage.

How a stage ends decides what Prefect does with it:
- up to date: a Completed state named "Skipped";
- a `finpipe ... error: ...` line and exit 1/2 (bad input, bad param, validation over the
  threshold): StageFailed, never retried, its one-line message becomes the run's message;
- anything else (a killed process, exit by signal, an OSError): TransientStageError, retried.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from prefect.states import Completed

_EXITED = re.compile(r"exited with (-?\d+)")
_FINPIPE_ERROR = re.compile(r"^finpipe [\w-]+: error: (.*)$")
# dvc's own exit codes (dvc/cli/__init__.py): 251 config error, 252 interrupted by the user,
# 253 not a DVC repo, 254 dvc.yaml/params parse error; 255 any DvcException or unexpected error
_DVC_DETERMINISTIC = (251, 252, 253, 254)
_DVC_TRANSIENT = re.compile(r"unexpected error|lock|timed? ?out|temporar|connection", re.IGNORECASE)


class StageFailed(Exception):
    """A deterministic failure: rerunning cannot help."""


class TransientStageError(Exception):
    """A failure that may pass on retry (killed worker, I/O trouble)."""


def dvc_bin() -> str:
    """The dvc next to this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else "dvc"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # finpipe and dvc from this interpreter's venv come first on PATH for the stage commands
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def classify(stage: str, returncode: int, lines: list[str]) -> Exception | None:
    """None on success, StageFailed when a rerun would fail the same way, else TransientStageError."""
    if returncode == 0:
        return None
    errors = [m.group(1) for line in lines if (m := _FINPIPE_ERROR.match(line.strip()))]
    exited = [int(m.group(1)) for line in lines if (m := _EXITED.search(line))]
    dvc_errors = [line.strip() for line in lines if line.startswith("ERROR")]
    code = exited[-1] if exited else returncode
    if errors and code in (1, 2):
        return StageFailed(f"{stage}: {errors[-1]}")
    if code in (1, 2) and not any("Traceback" in line for line in lines):
        return StageFailed(f"{stage}: {dvc_errors[-1] if dvc_errors else f'exited with {code}'}")
    # DVC refused before the command ran (a param or dependency missing, an unknown stage, a
    # corrupt dvc.yaml): the same inputs give the same refusal
    refused = returncode == 255 and dvc_errors and not _DVC_TRANSIENT.search(dvc_errors[-1])
    if not exited and (returncode in _DVC_DETERMINISTIC or refused):
        return StageFailed(f"{stage}: {dvc_errors[-1] if dvc_errors else f'dvc exited with {returncode}'}")
    return TransientStageError(f"{stage}: exited with {code}; last output: {lines[-1].strip() if lines else ''}")


def stream(cmd: list[str], cwd: Path, env: dict[str, str], logger: Any, lines: list[str], stage: str) -> int:
    """Run `cmd`, every line of its output into `lines` and the run logger; its exit status."""
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as err:
        raise TransientStageError(f"{stage}: cannot start {Path(cmd[0]).name}: {err}") from err
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip():
            logger.info("%s", line.rstrip())
    return proc.wait()


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except TransientStageError:
        return True
    except Exception:
        return False
    return False


def _flatten(prefix: str, obj: Any, rows: list[dict[str, Any]]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, (int, float, bool)) or obj is None:
        rows.append({"metric": prefix, "value": obj})


def artifact_key(stage: str) -> str:
    """Prefect artifact keys: lowercase letters, numbers and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-")


def publish_reports(stage: str, report_files: list[Path]) -> int:
    """Markdown outputs of a stage (validation reports, later the evaluation report) as one
    markdown artifact keyed by stage, so the UI keeps each report's history."""
    parts = [f"_`{path}`_\n\n{path.read_text(encoding='utf-8')}" for path in report_files if path.is_file()]
    if parts:
        create_markdown_artifact(
            key=f"report-{artifact_key(stage)}", markdown="\n\n---\n\n".join(parts), description=f"Report of DVC stage `{stage}`"
        )
    return len(parts)


def publish(stage: str, root: str, metric_files: list[str], report_files: list[str]) -> None:
    publish_metrics(stage, [Path(root) / m for m in metric_files])
    publish_reports(stage, [Path(root) / r for r in report_files])


def publish_metrics(stage: str, metric_files: list[Path]) -> int:
    rows: list[dict[str, Any]] = []
    for path in metric_files:
        if path.is_file():
            _flatten("", json.loads(path.read_text()), rows)
    if rows:
        create_table_artifact(
            key=f"metrics-{artifact_key(stage)}",
            table=rows,
            description=f"Metrics of DVC stage `{stage}` ({', '.join(map(str, metric_files))})",
        )
    return len(rows)


@task(name="dvc-stage", task_run_name="{stage}", retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=_retry_transient)
def run_stage(
    stage: str,
    root: str,
    force: bool = False,
    metric_files: list[str] | None = None,
    report_files: list[str] | None = None,
    known_fresh: bool = False,
) -> Any:
    """`dvc repro --single-item <stage>` with its output streamed into the Prefect logger.

    known_fresh: `dvc status` already said the stage is up to date (and nothing upstream
    reran since), so the task records the skip without starting dvc again.
    """
    logger = get_run_logger()
    if known_fresh:
        publish(stage, root, metric_files or [], report_files or [])
        logger.info("%s: up to date (dvc status), skipped", stage)
        return Completed(name="Skipped", message=f"{stage}: up to date, skipped", data={"stage": stage, "ran": False})
    cmd = [dvc_bin(), "repro", "--single-item", *(["--force"] if force else []), stage]
    logger.info("$ %s", " ".join(cmd))
    t0 = time.perf_counter()
    lines: list[str] = []
    returncode = stream(cmd, Path(root), _env(), logger, lines, stage)
    error = classify(stage, returncode, lines)
    if error is not None:
        raise error
    seconds = time.perf_counter() - t0
    publish(stage, root, metric_files or [], report_files or [])
    if not any(line.startswith("Running stage") for line in lines):
        return Completed(name="Skipped", message=f"{stage}: up to date, skipped", data={"stage": stage, "ran": False})
    return Completed(message=f"{stage}: ran in {seconds:.1f} s", data={"stage": stage, "ran": True, "seconds": round(seconds, 2)})

"""End to end: `dvc repro` of the embedded default in a copy of the repo (every stage, MiniLM
pretraining and fine-tuning included); a second repro does nothing; a change to one ingest
param reruns only the stages of that data kind; a fine-tuning param does not touch
pretraining; the report, `dvc metrics show` and `dvc plots show` work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _table(cmd: list[str], cwd: Path, columns: int) -> str:
    """What a command prints to a terminal `columns` wide (stdout only)."""
    env = {**os.environ, "COLUMNS": str(columns), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def readme_exp_view() -> list[str]:
    """The arguments of the README's readable `dvc exp show` view, as documented."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- readable-views -->", 1)[1].split("```", 2)[1]
    line = next(x for x in block.splitlines() if "dvc exp show" in x)
    return shlex.split(line.split("dvc exp show", 1)[1], comments=True)


def copy_repo(dst: Path) -> Path:
    """The committed and untracked-but-not-ignored files of the repo, as a new git repo."""
    repo = Path(__file__).resolve().parents[1]
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if rel == "dvc.lock" or not (repo / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dst / rel)
    _sh(["git", "init", "-q"], dst)
    _sh(["git", "config", "user.name", "t"], dst)  # dvc exp commits too
    _sh(["git", "config", "user.email", "t@example.com"], dst)
    _sh(["git", "add", "-A"], dst)
    _sh(["git", "commit", "-qm", "copy"], dst)
    return dst


def _exp_rows(shown: list[dict]) -> list[dict]:
    """Every row of `dvc exp show --json`: baselines and their experiments."""
    rows = []
    for top in shown:
        rows.append(top)
        for exp in top.get("experiments") or []:
            rows += exp.get("revs") or []
    return rows


def _status(ws: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["dvc", "status", "--json"], cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


KINDS = (("sentiment", "headlines"), ("ner", "news"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("ws") / "repo")


@pytest.mark.timeout(2700)  # the whole embedded default with MiniLM, then a rerun of the NER branch
def test_repro_then_nothing_to_do_then_only_changed_kind(workspace):
    out = _sh(["dvc", "repro"], workspace)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {
        *(f"{s}@{k}" for s in ("ingest", "validate") for k in ("corpus", "sentiment", "ner")),
        "pretrain",
        "base-model",
        "evaluate",
        *(f"finetune-sentiment@headlines-{v}-13" for v in ("adapted", "base")),
        *(f"finetune-ner@news-{v}-13" for v in ("adapted", "base")),
        # task-adaptive pretraining from both starts, and the fine-tunings of the TAPT models
        *(f"tapt-{kind}@{task}-{start}" for kind, task in KINDS for start in ("base", "adapted")),
        *(f"finetune-{kind}-tapt@{task}-{start}-13" for kind, task in KINDS for start in ("base", "adapted")),
    }
    assert (workspace / "data/work/clean/corpus/corpus.parquet").is_file()
    assert (workspace / "reports/validation/ner.md").is_file()
    report = (workspace / "reports/report.md").read_text()
    assert report.startswith("# What domain pretraining bought") and "**headlines**" in report and "**news**" in report
    assert "data:image/png;base64," in (workspace / "reports/report.html").read_text()
    shown = _sh(["dvc", "metrics", "show", "--json"], workspace)
    assert '"headlines/adapted-tapt/delta_macro_f1"' in shown and '"news/base-tapt/micro_f1"' in shown
    tapt = json.loads((workspace / "reports/tapt/headlines/base/metrics.json").read_text())
    assert tapt["base"]["head_steps"] > 10 and tapt["train"]["steps"] > 0  # heads fitted for the run's budget
    # the demo shows models that learned: with the article's encoder rate and the pooler of a
    # mean-pooled sentence encoder, every test item came out "neutral" (macro-F1 0.07)
    evaluated = json.loads((workspace / "reports/evaluate/metrics.json").read_text())
    for variant in ("base", "adapted", "base-tapt", "adapted-tapt"):
        assert evaluated[f"headlines/{variant}/macro_f1"] >= 0.5, evaluated
    _sh(["dvc", "plots", "show", "-o", "plots-html"], workspace)
    assert (workspace / "plots-html/index.html").stat().st_size > 1000

    out = _sh(["dvc", "repro"], workspace)
    assert "Running stage" not in out and "Data and pipelines are up to date" in out

    # experiments compare: metrics are DVC-cached outputs, so every experiment's metrics (the
    # stages it reran and the ones it reused) are read back through its dvc.lock
    for name, confidence in (("conf90", "0.9"), ("conf80", "0.8")):
        _sh(["dvc", "exp", "run", "-n", name, "-S", f"evaluate.confidence={confidence}"], workspace)
    rows = {r["name"]: r for r in _exp_rows(json.loads(_sh(["dvc", "exp", "show", "--json"], workspace)))}
    lows = {}
    for name in ("conf90", "conf80"):
        metrics = rows[name]["data"]["metrics"]
        assert metrics and not [p for p, m in metrics.items() if "error" in m], metrics
        assert {"reports/pretrain/metrics.json", "reports/evaluate/metrics.json"} <= set(metrics)
        lows[name] = metrics["reports/evaluate/metrics.json"]["data"]["headlines/adapted/delta_macro_f1_ci_low"]
    assert lows["conf90"] < lows["conf80"]  # a narrower interval: the experiments differ as they should
    diff = _sh(["dvc", "metrics", "diff", "conf90", "conf80", "--json"], workspace)
    assert "headlines/adapted/delta_macro_f1_ci_low" in diff and "failed to load" not in diff
    # every output is cached, so back at the baseline DVC restores it from the run-cache: nothing reruns
    _sh(["git", "checkout", "params.yaml"], workspace)
    out = _sh(["dvc", "repro"], workspace)
    assert "Running stage" not in out, out
    assert json.loads(_status(workspace)) == {}

    # the documented readable views fit 120 columns: the headline per task, and the experiments
    headline = _table(["dvc", "metrics", "show", "reports/evaluate/summary"], workspace, 120)
    lines = headline.splitlines()
    # header, then headlines and news x adapted, base-tapt, adapted-tapt
    assert len(lines) == 7 and max(map(len, lines)) <= 120, headline
    assert "headlines/adapted-tapt.json" in headline and "news/base-tapt.json" in headline and "delta" in lines[0]
    table = _table(["dvc", "exp", "show", *readme_exp_view()], workspace, 120)
    assert max(map(len, table.splitlines())) <= 120 and "conf90" in table, table
    assert all(f"headlines/{v}/delta" in table for v in ("adapted", "base-tapt", "adapted-tapt")), table

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["ingest"]["ner"]["seed"] = 99
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _sh(["dvc", "repro"], workspace)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # the NER split changed, so NER's task-adaptive pretraining (its train texts changed), NER
    # fine-tuning and the evaluation follow; nothing else
    assert ran == {
        "ingest@ner",
        "validate@ner",
        *(f"tapt-ner@news-{start}" for start in ("base", "adapted")),
        *(f"finetune-ner@news-{v}-13" for v in ("adapted", "base")),
        *(f"finetune-ner-tapt@news-{start}-13" for start in ("base", "adapted")),
        "evaluate",
    }

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["finetune"]["sentiment"]["train"]["num_epochs"] += 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(_status(workspace)))  # pretraining is not among them
    assert changed == {
        *(f"finetune-sentiment@headlines-{v}-13" for v in ("adapted", "base")),
        *(f"finetune-sentiment-tapt@headlines-{start}-13" for start in ("base", "adapted")),
    }

    # a stage tracks the params it reads: a pretraining learning rate leaves the base model alone
    params["pretrain"]["train"]["learning_rate"] *= 2
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(_status(workspace)))
    assert "pretrain" in changed and "base-model" not in changed
    assert not any(s.startswith("tapt-") for s in changed)  # TAPT's own knobs are in tapt.*

    assert '"rows_quarantined"' in _sh(["dvc", "metrics", "show", "--json"], workspace)

"""The README's "Your own data" section, followed literally on files this test writes.

The test reads the section's YAML block and commands from README.md itself (the blocks after
the `<!-- own-data:params -->` and `<!-- own-data:run -->` markers), applies the YAML with the
rule the section states, and runs each command as written in a copy of the repo. If the README
and the code drift apart, this fails.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_dvc_pipeline import copy_repo

from finpipe import synth

# the whole user pipeline (TAPT included) runs in the first test's setup: above 900 s on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

README = Path(__file__).resolve().parents[1] / "README.md"
# "`datasets`, `sources` and `tasks` replace the embedded ones whole ... every other entry shown
# changes that one knob"
REPLACED_WHOLE = {"datasets", "sources", "tasks"}


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Your own data\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def block_after(marker: str, text: str) -> str:
    found = re.search(rf"<!-- {re.escape(marker)} -->\s*```\w*\n(.*?)```", text, re.DOTALL)
    assert found, f"README 'Your own data' lost its {marker} block"
    return found.group(1)


def apply_section(params: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The README's rule: named collections replaced whole, every other entry knob by knob."""
    out = dict(params)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in REPLACED_WHOLE:
            out[key] = apply_section(out[key], value)
        else:
            out[key] = value
    return out


def write_user_files(root: Path, seed: int = 11) -> None:
    """The three files in the shapes the section's table gives (not the embedded formats)."""
    rng = random.Random(seed)
    corpus = root / "my-data" / "corpus"
    corpus.mkdir(parents=True)
    with open(corpus / "filings.jsonl", "w", encoding="utf-8") as fh:
        for i, doc in enumerate(synth.corpus_documents(120, seed=seed)):
            fh.write(json.dumps({"doc": f"F-{i:04d}", "body": doc["text"]}) + "\n")

    sentiment = root / "my-data" / "sentiment"
    sentiment.mkdir(parents=True)
    with open(sentiment / "desk.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "label"])
        for row in synth.sentiment_rows(rng, 300):
            score = float(row["score"])
            writer.writerow([row["text"], "negative" if score < -0.1 else "positive" if score > 0.1 else "neutral"])

    ner = root / "my-data" / "ner"
    ner.mkdir(parents=True)
    lines = []
    for doc in synth.ner_sentences(rng, 30):
        lines += ["-DOCSTART- O", ""]
        for sent in doc:  # IO tags: the B-/I- distinction dropped, as in FIN5-style files
            lines += [f"{tok} {'O' if tag == 'O' else 'I-' + tag[2:]}" for tok, tag in sent] + [""]
    (ner / "deals.conll").write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def followed(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess]]:
    ws = copy_repo(tmp_path_factory.mktemp("own-data") / "repo")
    # the commands say .venv/bin/...: the copy gets the venv this test runs in
    (ws / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    write_user_files(ws)

    text = section()
    params = yaml.safe_load((ws / "params.yaml").read_text())
    change = yaml.safe_load(block_after("own-data:params", text))
    (ws / "params.yaml").write_text(yaml.safe_dump(apply_section(params, change), sort_keys=False))

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = []
    for line in block_after("own-data:run", text).splitlines():
        command = line.split("  #")[0].strip()
        if not command or command.startswith("#"):
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=ws, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"README step `{command}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        done.append(proc)
    return ws, done


def test_every_step_of_the_section_runs(followed):
    ws, done = followed
    assert len(done) >= 3  # the checks, dvc repro, the metrics
    assert any("repro" in " ".join(p.args) for p in done)


def test_the_pipeline_ran_on_the_users_data_and_tasks(followed):
    ws, _ = followed
    lock = (ws / "dvc.lock").read_text()
    assert "finetune-sentiment@desk-adapted-13" in lock and "finetune-ner@deals-base-13" in lock
    assert "headlines" not in lock and "news.conll" not in lock  # nothing of the embedded default left
    ingested = json.loads((ws / "reports" / "ingest" / "sentiment.json").read_text())
    assert set(ingested) == {"desk"} and ingested["desk"]["rows"] == 300
    evaluated = json.loads((ws / "reports" / "evaluate" / "metrics.json").read_text())
    assert {key.split("/")[0] for key in evaluated} == {"desk", "deals"}
    report = (ws / "reports" / "report.md").read_text()
    assert "desk" in report and "deals" in report


def test_the_metrics_command_shows_a_row_per_task(followed):
    _, done = followed
    shown = next(p.stdout for p in done if "metrics show" in " ".join(p.args))
    rows = {line.split()[0] for line in shown.splitlines()[1:]}
    variants = ("adapted", "base-tapt", "adapted-tapt")  # each compared with base
    assert rows == {f"reports/evaluate/summary/{task}/{v}.json" for task in ("desk", "deals") for v in variants}, shown
    assert "delta" in shown.splitlines()[0] and max(map(len, shown.splitlines())) <= 120

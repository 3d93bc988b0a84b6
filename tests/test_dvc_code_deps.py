"""Every stage in dvc.yaml depends on the code it runs: the stage module under tasks/ and every
project module it imports, directly or not. A module left out would let `dvc repro` skip a
stage whose output that code changed (DVC reruns only on declared deps)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# imported by every stage but never changes what a stage writes
NOT_OUTPUT_RELEVANT = {
    "finpipe/__init__.py",
    "finpipe/errors.py",  # exception types
    "finpipe/finetune/__init__.py",  # docstrings only
    "finpipe/pretrain/__init__.py",
    "finpipe/readers/__init__.py",
    "tasks/__init__.py",
}


def _module_file(dotted: str) -> Path | None:
    base = REPO / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_imports(path: Path, seen: set[Path] | None = None) -> set[Path]:
    """The project's own modules `path` imports, transitively (function-level imports too)."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] not in ("finpipe", "tasks"):
                continue
            found = _module_file(name)
            if found is not None and found not in seen:
                seen.add(found)
                project_imports(found, seen)
    return seen


def stages() -> dict[str, dict]:
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in raw.items()}


def _covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(stages()))
def test_stage_depends_on_all_the_code_it_runs(stage):
    deps = [d for d in stages()[stage]["deps"] if isinstance(d, str) and not d.startswith("${")]
    modules = [d for d in deps if d.startswith("tasks/")]
    assert len(modules) == 1, f"{stage}: expected one tasks/ module among the deps, got {modules}"
    used = {str(p.relative_to(REPO)) for p in project_imports(REPO / modules[0])} - NOT_OUTPUT_RELEVANT
    missing = sorted(rel for rel in used if not _covered(rel, deps))
    assert not missing, f"dvc.yaml stage {stage} runs code it does not depend on: {missing}"


def test_every_model_is_a_dvc_artifact_made_by_a_stage():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        artifacts = repo.artifacts.read()["dvc.yaml"]
        outs = {str(Path(o.fs_path).relative_to(REPO)) for stage in repo.index.stages for o in stage.outs}
    paths = {name: a.path for name, a in artifacts.items()}
    assert paths == {
        "adapted-encoder": "models/adapted",
        "base-encoder": "models/base",
        "tapt-encoders": "models/tapt",
        "sentiment-models": "models/sentiment",
        "ner-models": "models/ner",
    }
    for name, path in paths.items():  # a stage output, or the folder that holds the fine-tuned ones
        assert any(o == path or o.startswith(path + "/") for o in outs), f"artifact {name}: {path} is no stage output"
    assert all(a.type == "model" and a.desc for a in artifacts.values())

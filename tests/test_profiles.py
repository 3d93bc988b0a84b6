"""Every params file the project ships (params.yaml, profiles/real.yaml) loads into the
dataclasses and has every key that a stage of dvc.yaml tracks: a missing key would only show
when `dvc repro` reaches that stage, possibly an hour into `make real`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import real_data_present

from finpipe.config import load_params

REPO = Path(__file__).resolve().parents[1]


def _has(data: dict, dotted: str) -> bool:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("params_file", ["params.yaml", "profiles/real.yaml"])
def test_params_file_has_every_tracked_key(tmp_path, params_file):
    # every key known, every value valid; the real profile's input folders exist only where
    # the real data sets do (../shared/data), so its paths are checked only there
    load_params(REPO / params_file, check_paths=params_file == "params.yaml" or real_data_present())
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / params_file, tmp_path / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    data = yaml.safe_load((tmp_path / "params.yaml").read_text())
    with Repo(str(tmp_path)) as repo:
        stages = list(repo.index.stages)
        missing = [
            f"{stage.addressing}: {key}"
            for stage in stages
            for dep in stage.deps
            if isinstance(dep, ParamsDependency)
            for key in (dep.params or [])
            if not _has(data, key)
        ]
    assert len(stages) > 10 and not missing

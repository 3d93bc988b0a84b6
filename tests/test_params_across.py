"""Params checked together before any stage does work: a fine-tuning task that does not fit the
ingest section, or an input that is not where the readers will look, stops `load_params` (which
every stage calls) with one line naming key and fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from helpers import real_data_present

from finpipe.config import load_params
from finpipe.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shipped(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def _load(tmp_path, params: dict, root=REPO, **kw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_params(path, root=root, **kw)


def _refused(tmp_path, shipped: dict, change) -> tuple[dict, str]:
    """The shipped params with `change` applied, and the one-line error loading them gives."""
    params = copy.deepcopy(shipped)
    change(params)
    with pytest.raises(UserError) as err:
        _load(tmp_path, params)
    return params, str(err.value)


CASES = [
    (
        lambda p: p["finetune"]["sentiment"]["tasks"]["headlines"].update(dataset="fpb"),
        "finetune.sentiment.tasks.headlines.dataset: 'fpb' is not a sentiment dataset in ingest.sentiment.datasets "
        "(have: ['headlines'])",
    ),
    (
        lambda p: p["ingest"]["sentiment"]["datasets"]["headlines"].update(ordered=False),
        "finetune.sentiment.tasks.headlines.target: 'ordinal' needs ordered labels: "
        "set ingest.sentiment.datasets.headlines.ordered: true, or use target: classes",
    ),
    (
        lambda p: p["ingest"]["sentiment"]["datasets"]["headlines"].update(score_column=None, label_column="label"),
        "finetune.sentiment.tasks.headlines: target 'ordinal' with a score output needs scores, and "
        "ingest.sentiment.datasets.headlines has no score_column; set score_loss_weight: 0",
    ),
    (
        lambda p: p["finetune"]["ner"]["tasks"]["news"].update(dataset="filings"),
        "finetune.ner.tasks.news.dataset: 'filings' is not an NER dataset in ingest.ner.datasets (have: ['news'])",
    ),
]


@pytest.mark.parametrize(("change", "message"), CASES)
def test_cross_section_mistakes_stop_the_load(tmp_path, shipped, change, message):
    _, refusal = _refused(tmp_path, shipped, change)
    assert message in refusal
    assert "\n" not in refusal


def test_a_model_level_error_names_the_rule_without_dumping_the_section(tmp_path, shipped):
    params = copy.deepcopy(shipped)
    params["finetune"]["ner"]["tasks"]["headlines"] = {"dataset": "news"}  # the sentiment task's name
    with pytest.raises(UserError) as err:
        _load(tmp_path, params)
    message = str(err.value)
    assert "task names must differ between sentiment and ner: ['headlines']" in message and len(message) < 200


def test_shipped_params_pass(repo):
    load_params(repo / "params.yaml")
    load_params(repo / "profiles" / "real.yaml", check_paths=real_data_present())


def _datasets(p: dict, kind: str) -> dict:
    return p["ingest"][kind]["datasets"]


def _briefs(p: dict) -> dict:
    return p["ingest"]["corpus"]["sources"][1]


SHIPPED_SOURCE = "ingest.corpus.sources.1.path (source 'briefs')"
IN_CORPUS = "in paths.inputs.corpus (data/embedded/corpus)"
BASE_FIX = "point it at a model folder, or use a hub id, package:<module>/<dir> or scratch"
PATH_CASES = [
    (
        lambda p: p["paths"]["inputs"].update(sentiment="data/my/sentiment"),
        f"paths.inputs.sentiment: data/my/sentiment not found (relative to {REPO}); "
        "point it at the folder with your sentiment files",
    ),
    (
        lambda p: _datasets(p, "sentiment")["headlines"].update(path="labels.csv"),
        "ingest.sentiment.datasets.headlines.path: labels.csv not found in paths.inputs.sentiment "
        "(data/embedded/sentiment); point it at an existing file",
    ),
    (
        lambda p: _datasets(p, "ner")["news"].update(path=None, splits={"train": "news.conll", "dev": "dev.conll"}),
        "ingest.ner.datasets.news.splits.dev: dev.conll not found in paths.inputs.ner (data/embedded/ner); "
        "point it at an existing file",
    ),
    (
        lambda p: _datasets(p, "ner")["news"].update(path="."),
        "ingest.ner.datasets.news.path: . in paths.inputs.ner (data/embedded/ner) is a folder, expected a file; "
        "point it at a file",
    ),
    (
        lambda p: _briefs(p).update(format="text_dir"),
        f"{SHIPPED_SOURCE}: briefs.txt {IN_CORPUS} is a file, and format text_dir reads a folder; "
        "point it at a folder, or set format: text",
    ),
    (
        lambda p: _briefs(p).update(path=".", format="text_dir", pattern="*.md"),
        f"{SHIPPED_SOURCE}: . {IN_CORPUS} has no files matching '*.md'; add them, or set pattern",
    ),
    (
        lambda p: _briefs(p).update(path=".", format="reuters_sgml"),
        f"{SHIPPED_SOURCE}: . {IN_CORPUS} has no files matching '*.sgm'; add them, or set pattern",
    ),
    (
        lambda p: _briefs(p).update(path="."),
        f"{SHIPPED_SOURCE}: . {IN_CORPUS} is a folder, and format text reads one file; "
        "point it at a file, or set format: text_dir",
    ),
    (
        lambda p: p["pretrain"]["model"].update(base="./models/my-bert"),
        f"pretrain.model.base: ./models/my-bert not found (relative to {REPO}); {BASE_FIX}",
    ),
    (
        lambda p: p["pretrain"]["model"].update(base="/no/such/bert"),
        f"pretrain.model.base: /no/such/bert not found; {BASE_FIX}",
    ),
]


@pytest.mark.parametrize(("change", "message"), PATH_CASES)
def test_missing_inputs_stop_the_load(tmp_path, shipped, change, message):
    params, refusal = _refused(tmp_path, shipped, change)
    assert refusal == f"{tmp_path / 'params.yaml'}: {message}"
    _load(tmp_path, params, check_paths=False)  # `finpipe check` reads a file not in place yet


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["pretrain"]["model"].update(base="some-org/some-bert"),  # a hub id: not looked up
        lambda p: p["pretrain"]["model"].update(base="package:not_installed_here/model"),
        lambda p: p["pretrain"]["model"].update(base="scratch"),
        lambda p: p["pretrain"]["model"].update(base=str(REPO / "finpipe")),  # an existing folder
        lambda p: _briefs(p).update(path=".", format="text_dir", pattern="*.txt"),
        lambda p: p["paths"]["inputs"].update(ner=str(REPO / "data/embedded/ner")),  # absolute
    ],
)
def test_inputs_that_exist_pass(tmp_path, shipped, change):
    params = copy.deepcopy(shipped)
    change(params)
    _load(tmp_path, params)


def test_every_missing_input_is_counted_on_the_one_line(tmp_path, shipped):
    params = copy.deepcopy(shipped)
    _datasets(params, "sentiment")["headlines"].update(path="a.csv")
    _datasets(params, "ner")["news"].update(path="b.conll")
    params["pretrain"]["model"]["base"] = "../nowhere"
    with pytest.raises(UserError) as err:
        _load(tmp_path, params)
    assert str(err.value).endswith("point it at an existing file (+2 more: ingest.ner.datasets.news.path, pretrain.model.base)")


def test_relative_paths_are_from_the_project_of_the_params_file(tmp_path, shipped, monkeypatch):
    """As DVC runs stages: from the folder with dvc.yaml, also for a params file in a subfolder
    (profiles/real.yaml) and whatever the working directory; without a dvc.yaml, from the cwd."""
    project = tmp_path / "project"
    for kind in ("corpus", "sentiment", "ner"):
        (project / "in" / kind).mkdir(parents=True)
        for f in (REPO / "data/embedded" / kind).iterdir():
            (project / "in" / kind / f.name).write_bytes(f.read_bytes())
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "profiles").mkdir()
    params = copy.deepcopy(shipped)
    params["paths"]["inputs"] = {kind: f"in/{kind}" for kind in ("corpus", "sentiment", "ner")}
    path = project / "profiles" / "mine.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    load_params(path)
    (project / "dvc.yaml").unlink()
    with pytest.raises(UserError, match=f"paths.inputs.corpus: in/corpus not found \\(relative to {tmp_path}\\)"):
        load_params(path)
    monkeypatch.chdir(project)
    load_params(path)

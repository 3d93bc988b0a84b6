"""Params checked together before any stage does work: a fine-tuning task that does not fit the
ingest section stops `load_params` (which every stage calls) with one line naming key and fix."""

from __future__ import annotations

import copy

import pytest
import yaml

from finpipe.config import load_params
from finpipe.errors import UserError


@pytest.fixture
def shipped(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def _load(tmp_path, params: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_params(path)


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
    params = copy.deepcopy(shipped)
    change(params)
    with pytest.raises(UserError) as err:
        _load(tmp_path, params)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_model_level_error_names_the_rule_without_dumping_the_section(tmp_path, shipped):
    params = copy.deepcopy(shipped)
    params["finetune"]["ner"]["tasks"]["headlines"] = {"dataset": "news"}  # the sentiment task's name
    with pytest.raises(UserError) as err:
        _load(tmp_path, params)
    message = str(err.value)
    assert "task names must differ between sentiment and ner: ['headlines']" in message and len(message) < 200


def test_shipped_params_pass(repo):
    load_params(repo / "params.yaml")
    load_params(repo / "profiles" / "real.yaml")

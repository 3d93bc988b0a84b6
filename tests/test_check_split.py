"""`finpipe check` splits a file as the ingest stage would, so it finds what `validate` finds:
dev/test rows whose text is also in train (issue #16 point 3). The spec comes from flags (the
dataclass defaults) or from a dataset of a params file (`--dataset NAME`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finpipe.cli import main
from finpipe.config import NerIngest, Validate, load_params, parse
from finpipe.errors import ValidationFailed
from tasks import ingest, validate

LEAK = "text also appears in the train split"


def leaky_conll(path: Path, docs: int = 12, per_doc: int = 4) -> Path:
    """`docs` documents of `per_doc` unique sentences plus one boilerplate sentence each: the
    boilerplate of every document that goes to dev/test repeats a train sentence."""
    blocks = []
    for d in range(docs):
        blocks.append("-DOCSTART- O\n")
        blocks += [f"Firm{d}x{s} B-ORG\nreported O\nresults O\n. O\n" for s in range(per_doc)]
        blocks.append("Shares O\nrose O\n. O\n")
    path.write_text("\n".join(blocks))
    return path


def _project(tmp_path: Path, repo: Path, ner_spec: dict, validate_section: dict | None = None) -> Path:
    """A params file (the shipped one, edited) whose NER input folder is tmp_path/ner; absolute
    input folders, so it loads from any working directory."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (tmp_path / "ner").mkdir(exist_ok=True)
    inputs = params["paths"]["inputs"]
    inputs.update(corpus=str(repo / inputs["corpus"]), sentiment=str(repo / inputs["sentiment"]), ner=str(tmp_path / "ner"))
    params["ingest"]["ner"] = {"seed": 7, "datasets": {"news": ner_spec}}
    params["validate"].update(validate_section or {})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _stage(tmp_path: Path, params_file: Path) -> dict:
    """ingest + validate, as `dvc repro validate@ner` runs them; the dataset's report."""
    params = load_params(params_file)
    ingest.run_ner(params.ingest.ner, Path(params.paths.inputs["ner"]), tmp_path / "in")
    with pytest.raises(ValidationFailed):
        validate.run_ner(params.validate, tmp_path / "in", tmp_path / "clean", tmp_path / "q", tmp_path / "r")
    return json.loads((tmp_path / "r" / "ner.json").read_text())["datasets"]["news"]


def test_check_finds_the_leak_by_default(tmp_path, capsys):
    path = leaky_conll(tmp_path / "n.conll")
    assert main(["check", "ner", str(path), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert f"| {LEAK} | 2 |" in out
    assert out.rstrip().endswith(
        f"To pass: remove the duplicated sentences from {path} (listed in the report above), "
        "or rerun with --max-bad-fraction 0.034"
    )
    # what the stage finds with the same (default) spec
    ingest.run_ner(parse(NerIngest, {"datasets": {"news": {"path": "n.conll"}}}), tmp_path, tmp_path / "in")
    with pytest.raises(ValidationFailed):
        validate.run_ner(Validate(), tmp_path / "in", tmp_path / "clean", tmp_path / "q", tmp_path / "r")
    stage = json.loads((tmp_path / "r" / "ner.json").read_text())["datasets"]["news"]
    checked = json.loads((tmp_path / "r.json").read_text())
    assert checked["checks"] == stage["checks"] == {LEAK: 2}
    assert [f["origin"] for f in checked["first_failures"]] == [f["origin"] for f in stage["first_failures"]]


def test_the_suggested_max_bad_fraction_passes(tmp_path, capsys):
    path = leaky_conll(tmp_path / "n.conll")
    assert main(["check", "ner", str(path), "--max-bad-fraction", "0.033"]) == 1
    assert main(["check", "ner", str(path), "--max-bad-fraction", "0.034"]) == 0


def test_split_flags_reach_the_split(tmp_path, capsys):
    path = leaky_conll(tmp_path / "n.conll")
    assert main(["check", "ner", str(path), "--dev-fraction", "0", "--test-fraction", "0"]) == 0
    assert main(["check", "ner", str(path), "--seed", "1", "--json", str(tmp_path / "r.json")]) == 1
    assert json.loads((tmp_path / "r.json").read_text())["checks"] == {LEAK: 2}


def test_dataset_spec_and_thresholds_come_from_params(tmp_path, repo, capsys):
    (tmp_path / "ner").mkdir()
    leaky_conll(tmp_path / "ner" / "news.conll")
    spec = {"path": "news.conll", "format": "conll", "split_by": "document", "dev_fraction": 0.3, "test_fraction": 0.3}
    params_file = _project(tmp_path, repo, spec)
    stage = _stage(tmp_path, params_file)
    # no FILE: the dataset's own file, where the stage reads it
    args = ["check", "ner", "--dataset", "news", "--params", str(params_file), "--json", str(tmp_path / "c.json")]
    assert main(args) == 1
    checked = json.loads((tmp_path / "c.json").read_text())
    assert stage["checks"] == {LEAK: 8} and checked["checks"] == stage["checks"]
    assert [f["origin"] for f in checked["first_failures"]] == [f["origin"] for f in stage["first_failures"]]
    # a FILE replaces the spec's path; the spec's split stays
    other = leaky_conll(tmp_path / "other.conll")
    assert main(["check", "ner", str(other), "--dataset", "news", "--params", str(params_file)]) == 1
    assert f"| {LEAK} | 8 |" in capsys.readouterr().out
    # validate.* from the same params file
    params_file = _project(tmp_path, repo, spec, {"max_bad_fraction": 0.2})
    assert main(["check", "ner", str(other), "--dataset", "news", "--params", str(params_file)]) == 0


def test_dataset_mistakes_are_one_line(tmp_path, repo, capsys):
    params_file = _project(tmp_path, repo, {"path": "news.conll"})
    path = leaky_conll(tmp_path / "n.conll")
    assert main(["check", "ner", str(path), "--dataset", "filings", "--params", str(params_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"finpipe check: error: check: --dataset 'filings' is not in ingest.ner.datasets of {params_file} (have: ['news'])"
    )
    assert main(["check", "ner", str(path), "--dataset", "news", "--params", str(params_file), "--seed", "3"]) == 2
    assert "--seed cannot be combined with --dataset: the spec comes from ingest.ner" in capsys.readouterr().err
    assert main(["check", "ner"]) == 2
    assert "give a FILE, or --dataset NAME" in capsys.readouterr().err
    assert main(["check", "corpus", str(path), "--test-fraction", "0.1"]) == 2
    assert "check corpus: --test-fraction does not apply to corpus files" in capsys.readouterr().err


def test_a_file_in_place_of_split_files_says_what_is_not_checked(tmp_path, repo, capsys):
    spec = {"splits": {"train": "train.conll", "dev": "dev.conll"}, "test_fraction": 0.2}
    params_file = _project(tmp_path, repo, spec)
    path = leaky_conll(tmp_path / "n.conll")
    main(["check", "ner", str(path), "--dataset", "news", "--params", str(params_file)])
    out = capsys.readouterr().out
    assert out.startswith("note: n.conll replaces the split files of news (train, dev) and is split by its dev_fraction")
    assert len(out.splitlines()[0]) < 250


def test_corpus_check_says_what_it_cannot_check(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("text\nProfit rose. Sales fell.\n")
    assert main(["check", "corpus", str(tmp_path / "c.csv")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "note: check reads this one source: documents repeated in another corpus source "
        "(dropped by `finpipe ingest corpus`) are not looked for"
    )


def test_params_without_dataset_gives_the_validate_thresholds(tmp_path, repo, capsys):
    """Without --dataset the spec comes from the flags, and validate.* from --params when given."""
    params_file = _project(tmp_path, repo, {"path": "news.conll"}, {"ner": {"max_tokens": 3}})
    path = leaky_conll(tmp_path / "n.conll")
    assert main(["check", "ner", str(path), "--dev-fraction", "0", "--test-fraction", "0"]) == 0
    args = ["check", "ner", str(path), "--dev-fraction", "0", "--test-fraction", "0", "--params", str(params_file)]
    assert main(args) == 1
    assert "| more than 3 tokens | 48 |" in capsys.readouterr().out

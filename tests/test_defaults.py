"""One source of defaults: params.yaml lists every knob, each at the default its dataclass in
finpipe/config.py declares. A knob that params.yaml leaves out, or sets to another value, is
a second default that can drift from the first."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from finpipe import config
from finpipe.config import load_params

REPO = Path(__file__).resolve().parents[1]
# named entries that describe the user's data, not knobs with defaults
ENTRIES = {"inputs", "sources", "datasets", "tasks", "baselines", "note", "replay_sources"}


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    default = field.default
    if hasattr(default, "get_default"):  # pydantic's Field(default=...)
        return default.get_default(call_default_factory=True)
    return default


def _nested(cls: type, name: str) -> type | None:
    hint = typing.get_type_hints(cls, vars(config))[name]
    return hint if dataclasses.is_dataclass(hint) else None


def disagreements(cls: type, parsed: Any, raw: dict[str, Any], where: str) -> list[str]:
    found = []
    for field in dataclasses.fields(cls):
        key = f"{where}.{field.name}".lstrip(".")
        if field.name in ENTRIES:
            continue
        if field.name not in raw:
            found.append(f"{key}: missing from params.yaml")
            continue
        sub = _nested(cls, field.name)
        if sub is not None:
            found += disagreements(sub, getattr(parsed, field.name), raw[field.name], key)
            continue
        default = _default(field)
        if default is dataclasses.MISSING:
            continue  # required: no default to disagree with
        if getattr(parsed, field.name) != default:
            found.append(f"{key}: params.yaml {getattr(parsed, field.name)!r}, finpipe/config.py {default!r}")
    return found


def test_params_yaml_lists_every_knob_at_its_dataclass_default():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    parsed = load_params(REPO / "params.yaml")
    assert disagreements(config.Params, parsed, raw, "") == []


def test_a_changed_default_is_caught(tmp_path):
    """The check itself: one knob moved away from its default, one removed."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["finetune"]["ner"]["stride"] = 8
    del raw["pretrain"]["train"]["logging_steps"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    parsed = load_params(tmp_path / "params.yaml", root=REPO)
    found = disagreements(config.Params, parsed, raw, "")
    assert found == [
        "pretrain.train.logging_steps: missing from params.yaml",
        "finetune.ner.stride: params.yaml 8, finpipe/config.py 16",
    ]

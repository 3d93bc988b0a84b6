"""Which column holds the text, the label or the score when the configured one is not in the file.

A configured column that the file has is always used. Otherwise the file's columns are matched
against the usual names of the role (case and spaces/hyphens/underscores ignored): one match is
taken and logged ("text column: title (detected)"), several are an error that lists them, none
an error that lists the file's columns. `sentiment` is a label column when it holds strings
and a score column when it holds numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from finpipe.errors import UserError

log = logging.getLogger(__name__)

ANY, STRINGS, NUMBERS = "any", "strings", "numbers"


@dataclass(frozen=True)
class Role:
    """A column the readers look for: its param, and the usual names with what each must hold."""

    what: str  # "text", "label", "score"
    param: str  # the spec field (and, with - for _, the CLI flag)
    names: dict[str, str]  # usual name -> ANY, STRINGS or NUMBERS

    def shown(self) -> str:
        return ", ".join(n if holds == ANY else f"{n} ({holds})" for n, holds in self.names.items())


TEXT = Role("text", "text_column", {"text": ANY, "title": ANY, "headline": ANY, "sentence": ANY, "body": ANY, "content": ANY})
LABEL = Role("label", "label_column", {"label": ANY, "class": ANY, "sentiment": STRINGS})
SCORE = Role("score", "score_column", {"score": ANY, "sentiment": NUMBERS, "sentiment_score": ANY})


def _key(name: object) -> str:
    return "_".join(str(name).casefold().replace("-", " ").replace("_", " ").split())


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def holds_numbers(values: Iterable[object]) -> bool:
    """Every non-empty value is a number or a string that reads as one (CSV cells are strings)."""
    seen = False
    for value in values:
        if _blank(value):
            continue
        if isinstance(value, bool):
            return False
        try:
            float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        seen = True
    return seen


def _fits(holds: str, values: Callable[[str], Iterable[object]], column: str) -> bool:
    if holds == ANY:
        return True
    numeric = holds_numbers(values(column))
    return numeric if holds == NUMBERS else not numeric and any(not _blank(v) for v in values(column))


@dataclass(frozen=True)
class Found:
    """A role's column: the configured one, one detected, or none (with why)."""

    column: str | None
    detected: bool = False


def find(
    path: Path,
    role: Role,
    configured: str | None,
    columns: Sequence[str],
    values: Callable[[str], Iterable[object]] | None = None,
    taken: Collection[str] = (),
) -> Found:
    """The column for `role`: `configured` when the file has it, else the one usual name the
    file has (columns in `taken` belong to another role). Several: UserError listing them."""
    if configured is not None and configured in columns:
        return Found(configured)
    candidates = [
        c for c in columns if c not in taken and _key(c) in role.names and _fits(role.names[_key(c)], values or _none, c)
    ]
    if len(candidates) > 1:
        raise UserError(
            f"{path}: {_missing(configured, role)}several columns could hold the {role.what}: {candidates}; "
            f"set {role.param} (--{role.param.replace('_', '-')}) to one of them"
        )
    if not candidates:
        return Found(None)
    holds = role.names[_key(candidates[0])]
    log.info("%s: %s column: %s (detected%s)", path.name, role.what, candidates[0], "" if holds == ANY else f", holds {holds}")
    return Found(candidates[0], detected=True)


def _none(column: str) -> list[object]:
    return []


def _missing(configured: str | None, role: Role) -> str:
    return f"no column {configured!r} (param {role.param}), and " if configured is not None else ""


def not_found(path: Path, role: Role, configured: str | None, columns: Sequence[str]) -> UserError:
    start = f"no column {configured!r} (param {role.param})" if configured is not None else f"no {role.what} column"
    return UserError(
        f"{path}: {start}, nor one of the usual {role.what} columns ({role.shown()}); columns are {list(map(str, columns))}"
    )


def required(path: Path, role: Role, configured: str, columns: Sequence[str], taken: Collection[str] = ()) -> str:
    """The column of a role the file must have (the text)."""
    found = find(path, role, configured, columns, taken=taken)
    if found.column is None:
        raise not_found(path, role, configured, columns)
    return found.column

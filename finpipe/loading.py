"""Loading a checkpoint into a model with other heads, with one log line instead of a table.

transformers 5 prints a multi-line "LOAD REPORT" table of missing and unexpected keys on every
such load. Where new heads are the point (a sentiment head on an encoder, an encoder out of a
pretraining checkpoint), that is expected; this logs the same facts in one line, grouped by
module. Errors (size mismatches) still raise as before.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _no_load_report() -> Iterator[None]:
    reporter = logging.getLogger("transformers.modeling_utils")
    level = reporter.level
    reporter.setLevel(logging.ERROR)
    try:
        yield
    finally:
        reporter.setLevel(level)


def _modules(keys: Iterable[str]) -> str:
    """'classes.bias', 'classes.linear.weight', 'scorer.bias' -> 'classes (2), scorer (1)'."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        name = ".".join(parts[:2]) if parts[0] in ("cls", "bert") and len(parts) > 2 else parts[0]
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))


def load_with_heads(cls: Any, path: Any, what: str, **kwargs: Any) -> tuple[Any, dict[str, list[str]]]:
    """`cls.from_pretrained(path, **kwargs)` and its loading info, logged in one line: which
    modules start from random weights, which checkpoint weights this model does not use."""
    with _no_load_report():
        model, info = cls.from_pretrained(path, output_loading_info=True, **kwargs)
    new, unused = sorted(info.get("missing_keys", [])), sorted(info.get("unexpected_keys", []))
    log.info(
        "%s from %s: new weights: %s; unused checkpoint weights: %s",
        what,
        path,
        _modules(new) or "none",
        _modules(unused) or "none",
    )
    return model, info

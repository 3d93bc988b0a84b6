"""BIO tag helpers: IO → BIO conversion, repair of ill-formed BIO, and the well-formedness test."""

from __future__ import annotations

from collections.abc import Sequence


def _split(tag: str) -> tuple[str, str | None]:
    if tag == "O":
        return "O", None
    prefix, _, etype = tag.partition("-")
    return prefix, etype or None


def to_bio(tags: Sequence[str]) -> tuple[list[str], int]:
    """Make a tag sequence valid BIO: an I-X that does not continue an X entity becomes B-X.

    This is both the IO→BIO conversion (each run of I-X starts with B-X) and the repair of
    'I- after O'. Returns the new tags and how many were changed.
    """
    out: list[str] = []
    changed = 0
    prev_type: str | None = None
    for tag in tags:
        prefix, etype = _split(tag)
        if prefix == "I" and etype != prev_type:
            out.append(f"B-{etype}")
            changed += 1
        else:
            out.append(tag)
        prev_type = etype if prefix in ("B", "I") else None
    return out, changed


def bio_problem(tags: Sequence[str]) -> str | None:
    """None when `tags` is well-formed BIO, else a short description of the first problem."""
    prev_type: str | None = None
    for i, tag in enumerate(tags):
        prefix, etype = _split(tag)
        if prefix not in ("O", "B", "I") or (prefix != "O" and not etype):
            return f"token {i + 1}: tag {tag!r} is not O, B-X or I-X"
        if prefix == "I" and etype != prev_type:
            return f"token {i + 1}: {tag} does not continue an entity of type {etype}"
        prev_type = etype if prefix in ("B", "I") else None
    return None

"""Fallbacks made visible: whenever training takes a slower road than asked (a compiled step runs eagerly, a pack
trains its members one by one, a pack-size probe fails), one line says so in the terminal, at once, and the same
line goes into the run's record (``TrainLog.fallbacks``, a result's ``fallbacks``), so a table of runs shows it."""
from __future__ import annotations

import sys

#: What can fall back: a compiled step to eager, a pack to one-by-one training, a pack-size probe to a smaller size.
KINDS = ("compile", "pack", "probe")


def fallback(kind: str, why: str, record: list[str] | None = None) -> str:
    """Print ``kdlib fallback (kind): why`` to stderr (flushed) and append it to ``record``; returns the line."""
    if kind not in KINDS:
        raise ValueError(f"fallback kind {kind!r} is not allowed: use one of {list(KINDS)}")
    line = f"kdlib fallback ({kind}): {why}"
    print(line, file=sys.stderr, flush=True)
    if record is not None and line not in record:
        record.append(line)
    return line


def kinds(lines: list[str] | None) -> list[str]:
    """The kinds of fallback among ``lines`` (each at most once, in :data:`KINDS` order): a table's column."""
    lines = lines or []
    return [k for k in KINDS if any(line.startswith(f"kdlib fallback ({k})") for line in lines)]

"""Recognise a click log's layout from its first line, for ``--data`` without ``--format``.

Known layouts (docs/data.md):

* ``criteo`` -- 40 tab-separated fields: a 0/1 label, 13 integer counts (may be empty), 26
  categorical values of at most 8 hex digits (may be empty);
* ``avazu`` -- 24 comma-separated fields: the header ``id,click,hour,C1,...,C21`` (the Kaggle
  ``train.csv``), or a data row whose second field is a 0/1 label and whose third is the
  ``YYMMDDHH`` hour (the dev/test splits have no header).

Only the first line is looked at (the readers check every row and name the line and column
of a bad one), so a file whose first line fits a layout is read as that layout.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import avazu, criteo

__all__ = ["LAYOUTS", "detect_layout", "describe_first_line"]

#: What :func:`detect_layout` recognises.
LAYOUTS = ("criteo", "avazu")

_HEX = re.compile(r"^[0-9a-fA-F]{0,8}$")
_INT = re.compile(r"^-?[0-9]*$")
_HOUR = re.compile(r"^[0-9]{8}$")
_READ_LIMIT = 1 << 20       # a first line longer than this is no known layout


def _first_line(path: Path) -> str | None:
    """The first non-empty line (without its line end), or None for an empty file."""
    with open(path, "rb") as f:
        while True:
            raw = f.readline(_READ_LIMIT)
            if not raw:
                return None
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.strip():
                return line


def _is_criteo(line: str) -> bool:
    f = line.split("\t")
    if len(f) != len(criteo.COLUMNS):
        return False
    dense = f[1:1 + criteo.N_DENSE]
    cats = f[1 + criteo.N_DENSE:]
    return (f[0] in ("0", "1") and all(_INT.match(x) for x in dense)
            and all(_HEX.match(x) for x in cats))


def _is_avazu(line: str) -> bool:
    f = line.split(",")
    if len(f) != len(avazu.COLUMNS):
        return False
    if tuple(x.strip() for x in f) == avazu.COLUMNS:
        return True
    return f[1] in ("0", "1") and bool(_HOUR.match(f[2]))


def detect_layout(path: str | Path) -> str | None:
    """``"criteo"``, ``"avazu"``, ``"empty"`` (no non-empty line) or ``None`` (not a known
    layout) for the file at ``path``, from its first line. Raises ``OSError`` when it cannot
    be read."""
    line = _first_line(Path(path))
    if line is None:
        return "empty"
    if _is_criteo(line):
        return "criteo"
    if _is_avazu(line):
        return "avazu"
    return None


def describe_first_line(path: str | Path) -> str:
    """A short description of the first line for messages: its field count per separator."""
    line = _first_line(Path(path)) or ""
    counts = []
    for name, sep in (("tab", "\t"), ("comma", ","), ("semicolon", ";"), ("|", "|")):
        n = len(line.split(sep))
        if n > 1:
            counts.append(f"{n} {name}-separated fields")
    return " / ".join(counts) if counts else "1 field"

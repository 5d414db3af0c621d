"""Reader for the Criteo Kaggle / Terabyte click-log TSV format.

One sample per line, tab-separated, no header, 40 columns: the label (0/1), I1..I13 integer
counts (may be empty, may be negative in the raw data), C1..C26 categorical values hashed by
Criteo to 8 hex digits (may be empty). See docs/data.md for the mappings.
`parse_criteo` reads up to the categorical keys (a `RawClickLog`), `read_criteo` maps them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _text
from .dataset import ClickDataset
from .errors import DataFormatError
from .presets import CRITEO_KAGGLE_TABLE_SIZES
from .tables import MAPPINGS, RawClickLog, map_keys, mappings_for, table_sizes_for  # noqa: F401

N_DENSE = 13
N_TABLES = 26
#: Column names, 1-based column i has name COLUMNS[i-1].
COLUMNS: tuple[str, ...] = (
    ("label",) + tuple(f"I{i}" for i in range(1, N_DENSE + 1))
    + tuple(f"C{i}" for i in range(1, N_TABLES + 1))
)

_FIRST_DENSE_COLUMN = 2
_FIRST_CAT_COLUMN = 2 + N_DENSE
_BAD_HEX_CHAR = re.compile(r"[^0-9a-fA-F\n]")


#: Key of an empty categorical field: outside the 32-bit values, so it counts as a value of
#: its own in the statistics (it maps to row 0 under both mappings).
EMPTY_KEY = 1 << 32


def map_categorical(
    values: np.ndarray,
    empty: np.ndarray,
    table_sizes: tuple[int, ...],
    mapping: str | tuple[str, ...],
) -> np.ndarray:
    """Rows (int64 ``[n, 26]``) for 32-bit categorical values ``[n, 26]``.

    ``modulo``: ``value % size`` (an empty field has value 0, hence row 0).
    ``hash``: ``splitmix64(value | table << 32) % size`` with ``table`` the 0-based index
    (C1 is 0), so equal values in different tables land on unrelated rows; empty -> row 0.
    ``mapping`` is one name for every table or one per table.
    """
    maps = mappings_for(mapping, values.shape[1])
    return map_keys(values.astype(np.uint64), empty, table_sizes, maps)


def parse_criteo(
    path: str | Path,
    *,
    split: str | None = None,
    log_dense: bool = True,
    max_rows: int | None = None,
) -> RawClickLog:
    """Read a Criteo TSV file up to the categorical mapping (see `read_criteo`).

    The keys are the C fields' 32-bit values (`EMPTY_KEY`, flagged empty, for an empty
    field); ``.to_dataset(table_sizes, mapping)`` maps them to rows as `read_criteo` does.
    """
    file = _text.resolve_file(path, split, (".tsv", ".txt"))
    rows = [line.split("\t") for line in _text.read_lines(file, max_rows)]
    _text.check_column_counts(file, rows, COLUMNS, 1, "tab")
    _text.check_labels(file, [r[0] for r in rows], 1, COLUMNS[0], 1)
    n = len(rows)

    dense_fields = [f for r in rows for f in r[1:_FIRST_CAT_COLUMN - 1]]
    bad = _text.find_bad_int(dense_fields)
    if bad is not None:
        line, column = _text.field_position(bad, _FIRST_DENSE_COLUMN, N_DENSE, 1)
        raise DataFormatError(
            file, line, column, COLUMNS[column - 1], _text.int_problem(dense_fields[bad])
        )
    raw = np.array([int(f) if f else 0 for f in dense_fields], dtype=np.int64)
    raw = raw.reshape(n, N_DENSE)
    dense = np.log1p(np.maximum(raw, 0)) if log_dense else raw.astype(np.float64)

    cat_fields = [f for r in rows for f in r[_FIRST_CAT_COLUMN - 1:]]
    bad = find_bad_hex(cat_fields)
    if bad is not None:
        line, column = _text.field_position(bad, _FIRST_CAT_COLUMN, N_TABLES, 1)
        raise DataFormatError(file, line, column, COLUMNS[column - 1],
                              hex_problem(cat_fields[bad]))
    keys, empty = decode_hex32(cat_fields)

    labels = np.array([r[0] == "1" for r in rows], dtype=np.float32)
    return RawClickLog(
        labels=labels,
        dense=dense.astype(np.float32).reshape(n, N_DENSE),
        keys=keys.reshape(n, N_TABLES),
        empty=empty.reshape(n, N_TABLES),
        table_names=COLUMNS[_FIRST_CAT_COLUMN - 1:],
        name=f"{file.parent.name}/{file.stem}",
    )


def read_criteo(
    path: str | Path,
    *,
    split: str | None = None,
    table_sizes: int | Sequence[int] = CRITEO_KAGGLE_TABLE_SIZES,
    mapping: str | Sequence[str] = "modulo",
    log_dense: bool = True,
    max_rows: int | None = None,
) -> ClickDataset:
    """Read a Criteo TSV file into a `ClickDataset`.

    Args:
        path: a ``.tsv`` file, or a folder holding ``<split>.tsv`` (or ``<split>.txt``).
        split: ``"train"`` (default for a folder), ``"dev"`` or ``"test"``; folders only.
        table_sizes: rows per table C1..C26, or one int for all (default: Criteo Kaggle's).
        mapping: ``"modulo"`` or ``"hash"`` (see `map_categorical`), for all tables or a
            sequence of 26, one per table.
        log_dense: apply DLRM's ``log(1 + max(x, 0))`` to I1..I13; else the raw counts.
        max_rows: read only the first ``max_rows`` lines.

    Raises:
        DataFormatError: wrong column count, label not 0/1, non-integer I field, or a C field
            that is not 1-8 hex digits (or empty); the message gives file, line and column.
    """
    sizes = table_sizes_for(table_sizes, N_TABLES)
    maps = mappings_for(mapping, N_TABLES)
    raw = parse_criteo(path, split=split, log_dense=log_dense, max_rows=max_rows)
    return raw.to_dataset(sizes, maps)


def hex_problem(value: str) -> str:
    """Why ``value`` is not an accepted hex categorical field."""
    return f"categorical value must be 1-8 hex digits or empty, got {value!r}"


def decode_hex32(fields: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(keys uint64, empty bool) of checked hex fields (1-8 hex digits or empty)."""
    # Left-pad to 8 digits (empty -> 0) and decode all fields in one C call.
    packed = bytes.fromhex("".join([f.rjust(8, "0") for f in fields]))
    keys = np.frombuffer(packed, dtype=">u4").astype(np.uint64)
    empty = np.array([not f for f in fields], dtype=bool)
    keys[empty] = EMPTY_KEY
    return keys, empty


def find_bad_hex(fields: list[str]) -> int | None:
    """Index of the first field that is neither empty nor 1-8 hex digits, or None."""
    if max(map(len, fields), default=0) <= 8 and not _BAD_HEX_CHAR.search("\n".join(fields)):
        return None
    for i, f in enumerate(fields):
        if len(f) > 8 or _BAD_HEX_CHAR.search(f):
            return i
    return None  # pragma: no cover

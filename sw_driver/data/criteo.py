"""Reader for the Criteo Kaggle / Terabyte click-log TSV format.

One sample per line, tab-separated, no header, 40 columns: the label (0/1), I1..I13 integer
counts (may be empty, may be negative in the raw data), C1..C26 categorical values hashed by
Criteo to 8 hex digits (may be empty). See docs/data.md for the mappings.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from . import _text
from .dataset import ClickDataset
from .errors import DataFormatError
from .hashing import splitmix64
from .presets import CRITEO_KAGGLE_TABLE_SIZES

N_DENSE = 13
N_TABLES = 26
#: Column names, 1-based column i has name COLUMNS[i-1].
COLUMNS: tuple[str, ...] = (
    ("label",) + tuple(f"I{i}" for i in range(1, N_DENSE + 1))
    + tuple(f"C{i}" for i in range(1, N_TABLES + 1))
)
MAPPINGS = ("modulo", "hash")

_FIRST_DENSE_COLUMN = 2
_FIRST_CAT_COLUMN = 2 + N_DENSE
_BAD_HEX_CHAR = re.compile(r"[^0-9a-fA-F\n]")


def table_sizes_for(table_sizes: int | tuple[int, ...], n_tables: int) -> tuple[int, ...]:
    """Normalise ``table_sizes`` (one int for every table, or one per table) and check it."""
    if isinstance(table_sizes, (int, np.integer)):
        sizes = (int(table_sizes),) * n_tables
    else:
        sizes = tuple(int(s) for s in table_sizes)
    if len(sizes) != n_tables:
        raise ValueError(f"expected {n_tables} table sizes, got {len(sizes)}")
    for t, s in enumerate(sizes):
        if s < 1:
            raise ValueError(f"table {t}: size must be >= 1, got {s}")
    return sizes


def map_categorical(
    values: np.ndarray, empty: np.ndarray, table_sizes: tuple[int, ...], mapping: str
) -> np.ndarray:
    """Rows (int64 ``[n, 26]``) for 32-bit categorical values ``[n, 26]``.

    ``modulo``: ``value % size`` (an empty field has value 0, hence row 0).
    ``hash``: ``splitmix64(value | table << 32) % size`` with ``table`` the 0-based index
    (C1 is 0), so equal values in different tables land on unrelated rows; empty -> row 0.
    """
    if mapping == "modulo":
        return values.astype(np.int64) % np.asarray(table_sizes, dtype=np.int64)
    if mapping == "hash":
        tables = np.arange(values.shape[1], dtype=np.uint64) << np.uint64(32)
        mixed = splitmix64(values.astype(np.uint64) | tables)
        rows = (mixed % np.asarray(table_sizes, dtype=np.uint64)).astype(np.int64)
        rows[empty] = 0
        return rows
    raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")


def read_criteo(
    path: str | Path,
    *,
    split: str | None = None,
    table_sizes: int | tuple[int, ...] = CRITEO_KAGGLE_TABLE_SIZES,
    mapping: str = "modulo",
    log_dense: bool = True,
    max_rows: int | None = None,
) -> ClickDataset:
    """Read a Criteo TSV file into a `ClickDataset`.

    Args:
        path: a ``.tsv`` file, or a folder holding ``<split>.tsv`` (or ``<split>.txt``).
        split: ``"train"`` (default for a folder), ``"dev"`` or ``"test"``; folders only.
        table_sizes: rows per table C1..C26, or one int for all (default: Criteo Kaggle's).
        mapping: ``"modulo"`` or ``"hash"`` (see `map_categorical`).
        log_dense: apply DLRM's ``log(1 + max(x, 0))`` to I1..I13; else the raw counts.
        max_rows: read only the first ``max_rows`` lines.

    Raises:
        DataFormatError: wrong column count, label not 0/1, non-integer I field, or a C field
            that is not 1-8 hex digits (or empty); the message gives file, line and column.
    """
    sizes = table_sizes_for(table_sizes, N_TABLES)
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
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
    bad = _find_bad_hex(cat_fields)
    if bad is not None:
        line, column = _text.field_position(bad, _FIRST_CAT_COLUMN, N_TABLES, 1)
        raise DataFormatError(
            file, line, column, COLUMNS[column - 1],
            f"categorical value must be 1-8 hex digits or empty, got {cat_fields[bad]!r}",
        )
    # Left-pad to 8 digits (empty -> 0) and decode all fields in one C call.
    packed = bytes.fromhex("".join([f.rjust(8, "0") for f in cat_fields]))
    values = np.frombuffer(packed, dtype=">u4").astype(np.int64).reshape(n, N_TABLES)
    empty = np.array([not f for f in cat_fields], dtype=bool).reshape(n, N_TABLES)
    sparse = map_categorical(values, empty, sizes, mapping)

    labels = np.array([r[0] == "1" for r in rows], dtype=np.float32)
    return ClickDataset(
        labels=torch.from_numpy(labels),
        dense=torch.from_numpy(dense.astype(np.float32).reshape(n, N_DENSE)),
        sparse=torch.from_numpy(np.ascontiguousarray(sparse)).reshape(n, N_TABLES),
        table_sizes=sizes,
        name=f"{file.parent.name}/{file.stem}",
    )


def _find_bad_hex(fields: list[str]) -> int | None:
    """Index of the first field that is neither empty nor 1-8 hex digits, or None."""
    if max(map(len, fields), default=0) <= 8 and not _BAD_HEX_CHAR.search("\n".join(fields)):
        return None
    for i, f in enumerate(fields):
        if len(f) > 8 or _BAD_HEX_CHAR.search(f):
            return i
    return None  # pragma: no cover

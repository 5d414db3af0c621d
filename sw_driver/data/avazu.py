"""Reader for the Avazu CTR CSV format.

24 comma-separated columns (no quoting): ``id, click, hour, C1, banner_pos, site_id, ...,
C21``. ``train.csv`` of the Kaggle set starts with that header line; the dev/test splits have
none. The header is recognised by its first field being ``id`` and must then match exactly.

Mapping (see docs/data.md): label = click; dense = (hour of day, day of week) from ``hour``
(YYMMDDHH); each of the other 21 columns -> row ``string_hash64(value) % table_size``
(``mapping="modulo"``, the default) or a table-salted mix of that hash (``"hash"``).
The ``id`` column is ignored. `parse_avazu` stops before the mapping (a `RawClickLog`).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _text
from .dataset import ClickDataset
from .errors import DataFormatError
from .hashing import string_hash64
from .presets import AVAZU_DEFAULT_TABLE_SIZE
from .tables import RawClickLog, mappings_for, table_sizes_for

#: The categorical fields, in table order (table 0 is C1).
CATEGORICAL: tuple[str, ...] = (
    "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
    "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)
#: Column names, 1-based column i has name COLUMNS[i-1].
COLUMNS: tuple[str, ...] = ("id", "click", "hour") + CATEGORICAL
N_TABLES = len(CATEGORICAL)
#: The dense features derived from ``hour``.
DENSE: tuple[str, ...] = ("hour_of_day", "day_of_week")

_LABEL_COLUMN = 2
_HOUR_COLUMN = 3
_FIRST_CAT_COLUMN = 4


def hour_features(hour: str) -> tuple[float, float] | None:
    """(hour of day 0..23, day of week 0..6 with Monday 0) of ``YYMMDDHH`` (20YY), or None.

    The raw date is not kept as a feature: a model trained on some days would meet unseen
    dates at test time, while hour of day and weekday recur.
    """
    if len(hour) != 8 or not hour.isascii() or not hour.isdigit():
        return None
    yy, mm, dd, hh = int(hour[0:2]), int(hour[2:4]), int(hour[4:6]), int(hour[6:8])
    if hh > 23:
        return None
    try:
        day = datetime.date(2000 + yy, mm, dd)
    except ValueError:
        return None
    return float(hh), float(day.weekday())


def parse_avazu(
    path: str | Path, *, split: str | None = None, max_rows: int | None = None
) -> RawClickLog:
    """Read an Avazu CSV file up to the categorical mapping (see `read_avazu`).

    The keys are ``string_hash64`` of the 21 fields; ``.to_dataset(table_sizes, mapping)``
    maps them to rows as `read_avazu` does.
    """
    file = _text.resolve_file(path, split, (".csv",))
    with open(file, "rb") as f:
        has_header = f.readline().split(b",", 1)[0] == b"id"
    limit = None if max_rows is None else max_rows + has_header
    lines = _text.read_lines(file, limit)
    if has_header:
        _check_header(file, lines[0].split(","))
        lines = lines[1:]
    first_line = 2 if has_header else 1
    rows = [line.split(",") for line in lines]
    _text.check_column_counts(file, rows, COLUMNS, first_line, "comma")
    _text.check_labels(file, [r[1] for r in rows], _LABEL_COLUMN, "click", first_line)
    n = len(rows)

    # Few distinct hours (one per hour of the log): convert each once.
    hours = [r[2] for r in rows]
    features = {h: hour_features(h) for h in set(hours)}
    for i, h in enumerate(hours):
        if features[h] is None:
            raise DataFormatError(file, first_line + i, _HOUR_COLUMN, "hour", hour_problem(h))
    dense = np.array([features[h] for h in hours], dtype=np.float32).reshape(n, len(DENSE))

    # Hash each distinct string once; values repeat heavily.
    fields = [f for r in rows for f in r[_FIRST_CAT_COLUMN - 1:]]
    codes = {v: string_hash64(v) for v in set(fields)}
    keys = np.array([codes[v] for v in fields], dtype=np.uint64).reshape(n, N_TABLES)

    labels = np.array([r[1] == "1" for r in rows], dtype=np.float32)
    return RawClickLog(labels=labels, dense=dense, keys=keys,
                       empty=np.zeros((n, N_TABLES), dtype=bool), table_names=CATEGORICAL,
                       name=f"{file.parent.name}/{file.stem}")


def read_avazu(
    path: str | Path,
    *,
    split: str | None = None,
    table_sizes: int | Sequence[int] = AVAZU_DEFAULT_TABLE_SIZE,
    mapping: str | Sequence[str] = "modulo",
    max_rows: int | None = None,
) -> ClickDataset:
    """Read an Avazu CSV file into a `ClickDataset` (2 dense features, 21 tables).

    Args:
        path: a ``.csv`` file, or a folder holding ``<split>.csv``.
        split: ``"train"`` (default for a folder), ``"dev"`` or ``"test"``; folders only.
        table_sizes: rows per categorical field (21 ints, `CATEGORICAL` order) or one int for
            all (default ``AVAZU_DEFAULT_TABLE_SIZE`` = 2**20).
        mapping: ``"modulo"`` (default: ``string_hash64(value) % size``) or ``"hash"``
            (``splitmix64(string_hash64(value) ^ table << 32) % size``), for all tables or a
            sequence of 21, one per table.
        max_rows: read only the first ``max_rows`` samples (the header does not count).

    Raises:
        DataFormatError: wrong column count, a header that differs from the expected names,
            click not 0/1, or an ``hour`` that is not a valid YYMMDDHH; with file, line, column.
    """
    sizes = table_sizes_for(table_sizes, N_TABLES)
    maps = mappings_for(mapping, N_TABLES)
    return parse_avazu(path, split=split, max_rows=max_rows).to_dataset(sizes, maps)


def hour_problem(value: str) -> str:
    """Why ``value`` is not an accepted ``hour`` field."""
    return f"hour must be YYMMDDHH (a valid date, HH 00-23), got {value!r}"


def _check_header(file: Path, names: list[str]) -> None:
    # A header is only recognised by its first field; the rest must match exactly.
    for i, (got, want) in enumerate(zip(names, COLUMNS)):
        if got != want:
            raise DataFormatError(
                file, 1, i + 1, want, f"header has {got!r} where {want!r} is expected"
            )
    if len(names) != len(COLUMNS):
        column = min(len(names), len(COLUMNS)) + 1
        name = COLUMNS[column - 1] if column <= len(COLUMNS) else "unexpected"
        raise DataFormatError(
            file, 1, column, name,
            f"header has {len(names)} comma-separated columns, expected {len(COLUMNS)}",
        )

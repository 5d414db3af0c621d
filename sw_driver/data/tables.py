"""Per-table sizes, the categorical mapping (value -> row) and per-table statistics.

Every reader first turns a categorical field into a 64-bit *key* (Criteo: the 32-bit value of
its 8 hex digits; Avazu and string columns: `string_hash64` of the text), kept in a
`RawClickLog`; the mapping then sends key ``k`` of table ``t`` (0-based) with ``n_t`` rows to

* ``modulo``: ``k % n_t``;
* ``hash``: ``splitmix64(k ^ (t << 32)) % n_t`` (for Criteo's 32-bit values this is the
  ``splitmix64(v | t << 32)`` of `read_criteo`), so equal keys of different tables land on
  unrelated rows and keys with structured low bits are spread;

and a field flagged *empty* (a Criteo-style hex field left blank) goes to row 0 under both.
`table_stats` and `table_warnings` report constant tables and heavy sharing of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .dataset import ClickDataset
from .hashing import splitmix64

#: The categorical mappings, see the module docstring.
MAPPINGS: tuple[str, ...] = ("modulo", "hash")
#: `table_warnings` flags a table whose distinct values exceed this many per row.
COLLISION_FACTOR = 2.0


def table_sizes_for(table_sizes: int | Sequence[int], n_tables: int) -> tuple[int, ...]:
    """Normalise ``table_sizes`` (one int for every table, or one per table) and check it."""
    if isinstance(table_sizes, str):
        raise TypeError(f"table_sizes must be an int or a sequence of ints, got "
                        f"{table_sizes!r} (for 'auto' use RawClickLog.auto_table_sizes)")
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


def mappings_for(mapping: str | Sequence[str], n_tables: int) -> tuple[str, ...]:
    """Normalise ``mapping`` (one of `MAPPINGS` for every table, or one per table)."""
    maps = (mapping,) * n_tables if isinstance(mapping, str) else tuple(mapping)
    if len(maps) != n_tables:
        raise ValueError(f"expected {n_tables} mappings, got {len(maps)}")
    for t, m in enumerate(maps):
        if m not in MAPPINGS:
            raise ValueError(f"mapping must be one of {MAPPINGS}, got {m!r}"
                             + (f" (table {t})" if n_tables > 1 else ""))
    return maps


def map_keys(
    keys: np.ndarray,
    empty: np.ndarray | None,
    table_sizes: Sequence[int],
    mappings: Sequence[str],
) -> np.ndarray:
    """Rows (int64 ``[n, T]``) of keys (uint64 ``[n, T]``), per-table sizes and mappings.

    ``empty`` (bool ``[n, T]`` or None) marks fields that go to row 0 whatever the mapping.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    sizes = np.asarray(table_sizes, dtype=np.uint64)
    rows = keys % sizes
    hashed = [t for t, m in enumerate(mappings) if m == "hash"]
    if hashed:
        cols = np.asarray(hashed, dtype=np.intp)
        salt = cols.astype(np.uint64) << np.uint64(32)
        rows[:, cols] = splitmix64(keys[:, cols] ^ salt) % sizes[cols]
    if empty is not None:
        rows[empty] = 0
    return rows.astype(np.int64)


def distinct_counts(a: np.ndarray) -> list[int]:
    """Number of distinct values in each column of a 2-D array."""
    return [int(np.unique(a[:, t]).size) for t in range(a.shape[1])]


@dataclass(eq=False)
class RawClickLog:
    """Samples read from a click log before the categorical mapping (what `map_keys` maps).

    Attributes:
        labels: float32 ``[n]``.
        dense: float32 ``[n, n_dense]`` (transforms applied).
        keys: uint64 ``[n, n_tables]``, the 64-bit key of each categorical field.
        empty: bool ``[n, n_tables]``, fields that map to row 0 whatever the mapping.
        table_names: one name per table (for messages and statistics).
        name: where the samples came from, e.g. ``criteo_kaggle_8k/train``.
    """

    labels: np.ndarray
    dense: np.ndarray
    keys: np.ndarray
    empty: np.ndarray
    table_names: tuple[str, ...]
    name: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_tables(self) -> int:
        """Number of categorical tables."""
        return int(self.keys.shape[1])

    def distinct_values(self) -> list[int]:
        """Distinct keys (raw values) per table; an empty hex field counts as one value."""
        return distinct_counts(self.keys)

    def auto_table_sizes(self, cap: int | None = None) -> tuple[int, ...]:
        """The ``auto`` rule: each table gets as many rows as it has distinct values here,
        at most ``cap`` and at least 1. (The values are still hashed or taken modulo the
        size, so some share rows: the rule sizes tables, it builds no vocabulary.)"""
        if cap is not None and cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        return tuple(max(1, d if cap is None else min(d, cap)) for d in self.distinct_values())

    def to_dataset(
        self, table_sizes: int | Sequence[int], mapping: str | Sequence[str] = "modulo"
    ) -> ClickDataset:
        """The samples as a `ClickDataset`: keys mapped to rows of tables of ``table_sizes``
        rows (one int for all, or one per table) by ``mapping`` (one for all, or per table)."""
        sizes = table_sizes_for(table_sizes, self.n_tables)
        rows = map_keys(self.keys, self.empty, sizes, mappings_for(mapping, self.n_tables))
        return ClickDataset(
            labels=torch.from_numpy(np.ascontiguousarray(self.labels, dtype=np.float32)),
            dense=torch.from_numpy(np.ascontiguousarray(self.dense, dtype=np.float32)),
            sparse=torch.from_numpy(np.ascontiguousarray(rows)),
            table_sizes=sizes,
            name=self.name,
        )


@dataclass(frozen=True)
class TableStats:
    """How one table is used by a data set.

    Attributes:
        table: 0-based table index.
        name: the column's name (``C3``), or ``table<i>`` when none is known.
        rows: the table's size.
        samples: samples counted.
        distinct_values: distinct raw values (keys), or None when only rows were given.
        distinct_rows: distinct rows looked up.
    """

    table: int
    name: str
    rows: int
    samples: int
    distinct_values: int | None
    distinct_rows: int

    @property
    def constant(self) -> bool:
        """Every sample looks up the same row (the table cannot tell samples apart)."""
        return self.samples > 0 and self.distinct_rows == 1

    @property
    def values_per_row(self) -> float | None:
        """Distinct raw values per row of the table (None without raw values)."""
        return None if self.distinct_values is None else self.distinct_values / self.rows


def table_stats(
    data: ClickDataset, raw: RawClickLog | None = None, names: Sequence[str] | None = None
) -> list[TableStats]:
    """Per-table statistics of ``data``; distinct raw values need ``raw``, the log ``data``
    was mapped from (same samples). ``names`` default to ``raw``'s table names."""
    if raw is not None and (len(raw) != len(data) or raw.n_tables != data.n_tables):
        raise ValueError(f"raw has {len(raw)} samples x {raw.n_tables} tables, data "
                         f"{len(data)} x {data.n_tables}")
    if names is None:
        names = raw.table_names if raw is not None else [f"table{t}" for t in
                                                          range(data.n_tables)]
    if len(names) != data.n_tables:
        raise ValueError(f"{len(names)} names for {data.n_tables} tables")
    used = distinct_counts(data.sparse.detach().cpu().numpy())
    values = raw.distinct_values() if raw is not None else [None] * data.n_tables
    return [TableStats(t, str(names[t]), data.table_sizes[t], len(data), values[t], used[t])
            for t in range(data.n_tables)]


def table_warnings(stats: Sequence[TableStats],
                   collision_factor: float = COLLISION_FACTOR) -> list[str]:
    """One line per suspicious table: constant (every sample on one row), or more than
    ``collision_factor`` distinct raw values per row (heavy sharing of rows)."""
    lines = []
    for s in stats:
        where = f"table {s.table} ({s.name})"
        values = "" if s.distinct_values is None else (
            f"{s.distinct_values:,} distinct value{'s' * (s.distinct_values != 1)}, ")
        if s.constant:
            lines.append(f"{where} is constant: all {s.samples:,} samples look up one row "
                         f"({values}{s.rows:,} row{'s' * (s.rows != 1)})")
        elif s.distinct_values is not None and s.distinct_values > collision_factor * s.rows:
            lines.append(f"{where}: {s.distinct_values:,} distinct values share {s.rows:,} "
                         f"rows ({s.distinct_values / s.rows:.1f} per row, "
                         f"{s.distinct_rows:,} rows used)")
    return lines

"""Inverse-CDF sampling of Zipf ranks over many tables at once, without per-row arrays.

Rank ``k`` (1-based) of a table with ``n`` rows has weight ``k**-s``. The first
``exact_head`` ranks use their exact cumulative weights (a small array per table); beyond them
the sum is replaced by the integral of ``x**-s`` over ``[k - 1/2, k + 1/2)`` (the midpoint rule,
relative error below ``s(s+1)/24 k**-2``, i.e. < 2e-6 past rank 256), which inverts in closed
form. Sampling a batch is therefore O(batch x log exact_head) whatever the table size.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


class ZipfTables:
    """Zipf(s) rank distributions for tables of the given sizes.

    Masses are unnormalised weights: ``total_mass[t]`` is table ``t``'s normaliser, and
    `ranks` maps a mass ``m`` in ``[0, mass_upto(t, h))`` to the rank whose cumulative
    weight interval holds ``m``. Drawing ``m = u * mass_upto(t, h)`` with ``u ~ U[0, 1)``
    samples the distribution truncated to ranks ``1..h``.
    """

    def __init__(self, table_sizes: Sequence[int], exponent: float, exact_head: int = 256):
        if exponent < 0:
            raise ValueError(f"Zipf exponent must be >= 0, got {exponent}")
        if exact_head < 1:
            raise ValueError(f"exact_head must be >= 1, got {exact_head}")
        self.sizes = np.asarray(table_sizes, dtype=np.int64)
        if (self.sizes < 1).any():
            raise ValueError(f"every table needs >= 1 row, got {list(table_sizes)}")
        self.exponent = float(exponent)
        self.exact_head = exact_head
        self.head_len = np.minimum(self.sizes, exact_head)
        cums = [np.cumsum(np.arange(1, k + 1, dtype=np.float64) ** -self.exponent)
                for k in self.head_len]
        self.head_mass = np.array([c[-1] for c in cums])
        # One sorted array for all tables: table t's normalised head CDF shifted by t, so a
        # single searchsorted serves every table.
        self._flat_cdf = np.concatenate([c / c[-1] + t for t, c in enumerate(cums)])
        self._offsets = np.concatenate([[0], np.cumsum(self.head_len)[:-1]])
        self._cums = cums
        self._a = exact_head + 0.5  # the tail's continuous range starts here
        self.total_mass = self.head_mass + np.array(
            [self._integral(n + 0.5) if n > exact_head else 0.0 for n in self.sizes]
        )

    def _integral(self, b: float | np.ndarray) -> float | np.ndarray:
        """Integral of x**-s from the tail start ``a`` to ``b``."""
        s, a = self.exponent, self._a
        if abs(1.0 - s) < 1e-12:
            return np.log(b / a)
        return (np.power(b, 1.0 - s) - a ** (1.0 - s)) / (1.0 - s)

    def mass_upto(self, table: int, rank: int) -> float:
        """Cumulative weight of ranks ``1..rank`` of ``table`` (rank clipped to the table)."""
        rank = min(int(rank), int(self.sizes[table]))
        if rank < 1:
            return 0.0
        if rank <= self.head_len[table]:
            return float(self._cums[table][rank - 1])
        return float(self.head_mass[table] + self._integral(rank + 0.5))

    def probability(self, table: int, rank: int) -> float:
        """Model probability of ``rank`` in ``table`` (exact in the head)."""
        return (self.mass_upto(table, rank) - self.mass_upto(table, rank - 1)) / float(
            self.total_mass[table]
        )

    def ranks(self, mass: np.ndarray) -> np.ndarray:
        """1-based ranks (int64) for unnormalised masses ``[batch, n_tables]``."""
        mass = np.asarray(mass, dtype=np.float64)
        tables = np.broadcast_to(np.arange(mass.shape[1]), mass.shape)
        out = np.empty(mass.shape, dtype=np.int64)
        head_mass = self.head_mass[tables]
        in_head = mass < head_mass
        t = tables[in_head]
        q = mass[in_head] / head_mass[in_head] + t
        idx = np.searchsorted(self._flat_cdf, q, side="right") - self._offsets[t]
        out[in_head] = np.clip(idx + 1, 1, self.head_len[t])
        if not in_head.all():
            t = tables[~in_head]
            y = mass[~in_head] - head_mass[~in_head]
            s = self.exponent
            if abs(1.0 - s) < 1e-12:
                x = self._a * np.exp(y)
            else:
                base = self._a ** (1.0 - s) + (1.0 - s) * y
                x = np.power(np.maximum(base, 1e-300), 1.0 / (1.0 - s))
            out[~in_head] = np.clip(np.floor(x + 0.5), self.exact_head + 1, self.sizes[t])
        return out


def zipf_top_probability(n: int, exponent: float) -> float:
    """Exact probability of rank 1 among ``n`` ranks: ``1 / sum(k**-s)`` (plain sum; for tests)."""
    return 1.0 / math.fsum(k ** -exponent for k in range(1, n + 1))

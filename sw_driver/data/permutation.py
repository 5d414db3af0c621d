"""Seeded pseudo-random permutations of ``0..n-1`` for many tables, never materialised.

A Feistel network on ``w = max(2, ceil(log2 n))`` bits is a bijection of ``0..2**w-1``
(unbalanced when ``w`` is odd: halves of ``w - w//2`` and ``w//2`` bits whose widths swap every
round, as in docs/spec.md section 3). Cycle walking (re-applying it while the value is
``>= n``) restricts it to a bijection of ``0..n-1``; since ``2**w < 2n`` fewer than half of
the values need a second pass on average. Memory is O(1) per table, where
``numpy.random.permutation`` would need 10 M entries for the largest Criteo table.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_ONE = np.uint64(1)
_U64 = np.uint64(64)


class TablePermutations:
    """One keyed permutation per table; the keys come from ``seed`` (same seed, same maps)."""

    def __init__(self, table_sizes: Sequence[int], seed: int, rounds: int = 4):
        if rounds < 2 or rounds % 2:
            raise ValueError(f"rounds must be even and >= 2, got {rounds}")
        self.sizes = np.asarray(table_sizes, dtype=np.int64)
        if self.sizes.ndim != 1 or (self.sizes < 1).any():
            raise ValueError("every table needs >= 1 row")
        bits = np.array([max(2, (int(n) - 1).bit_length()) for n in self.sizes])
        self._lo_bits = (bits // 2).astype(np.uint64)        # width of the low half
        self._hi_bits = (bits - bits // 2).astype(np.uint64)  # width of the high half
        rng = np.random.default_rng([seed, 0x9E37])
        self._keys = rng.integers(0, 2**63, size=(rounds, len(self.sizes)), dtype=np.uint64)
        self._usizes = self.sizes.astype(np.uint64)
        self.rounds = rounds

    @staticmethod
    def _f(x: np.ndarray, key: np.ndarray, width: np.ndarray) -> np.ndarray:
        # Multiply-xorshift mixing of (x ^ key); the top `width` bits are the round output.
        y = (x ^ key) * _MUL1
        y = (y ^ (y >> np.uint64(31))) * _MUL2
        return y >> (_U64 - width)

    def _feistel(self, x: np.ndarray, sel, inverse: bool) -> np.ndarray:
        """One pass of the network; ``sel`` picks the per-table parameters for ``x``."""
        wa, wb = self._hi_bits[sel], self._lo_bits[sel]
        keys = [k[sel] for k in self._keys]
        if not inverse:
            hi, lo = x >> wb, x & ((_ONE << wb) - _ONE)
            for key in keys:  # (hi: wa bits, lo: wb bits) -> (lo, hi ^ F(lo)), widths swap
                hi, lo = lo, hi ^ self._f(lo, key, wa)
                wa, wb = wb, wa
            return (hi << wb) | lo
        # An even number of rounds leaves the widths as they started.
        hi, lo = x >> wb, x & ((_ONE << wb) - _ONE)
        for key in reversed(keys):  # undo: (hi, lo) -> (lo ^ F(hi), hi)
            wa, wb = wb, wa
            hi, lo = lo ^ self._f(hi, key, wa), hi
        return (hi << wb) | lo

    def _apply(self, values: np.ndarray, inverse: bool) -> np.ndarray:
        values = np.asarray(values, dtype=np.int64)
        if values.ndim != 2 or values.shape[1] != len(self.sizes):
            raise ValueError(f"expected [batch, {len(self.sizes)}] values, got {values.shape}")
        if ((values < 0) | (values >= self.sizes)).any():
            raise ValueError("values must lie in 0..table_size-1")
        # First pass on the 2-D array (per-table parameters broadcast along the batch).
        x = self._feistel(values.astype(np.uint64), np.s_[None, :], inverse)
        rows, cols = np.nonzero(x >= self._usizes)
        if rows.size:
            flat, n_tables = x.reshape(-1), x.shape[1]
            todo, t = rows * n_tables + cols, cols
            while todo.size:  # cycle walking; ends since each cycle returns below n
                flat[todo] = self._feistel(flat[todo], t, inverse)
                keep = flat[todo] >= self._usizes[t]
                todo, t = todo[keep], t[keep]
        return x.astype(np.int64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Permute ``[batch, n_tables]`` values column by column (int64 in, int64 out)."""
        return self._apply(values, inverse=False)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """The inverse permutation: ``inverse(perm(v)) == v``."""
        return self._apply(values, inverse=True)

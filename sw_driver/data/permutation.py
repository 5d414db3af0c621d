"""Seeded pseudo-random permutations of ``0..n-1`` for many tables, never materialised.

A balanced Feistel network on ``2h`` bits (``4**h >= n``, h >= 1) is a bijection of
``0..4**h-1``; cycle walking (re-applying it while the value is ``>= n``) restricts it to a
bijection of ``0..n-1``. This costs O(1) memory per table, where ``numpy.random.permutation``
would need an array of 10 M entries for the largest Criteo table.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


class TablePermutations:
    """One keyed permutation per table; keys come from ``seed`` (same seed, same permutations)."""

    def __init__(self, table_sizes: Sequence[int], seed: int, rounds: int = 4):
        if rounds < 2:
            raise ValueError(f"rounds must be >= 2, got {rounds}")
        self.sizes = np.asarray(table_sizes, dtype=np.int64)
        if (self.sizes < 1).any():
            raise ValueError("every table needs >= 1 row")
        bits = np.array([max(2, (int(n) - 1).bit_length()) for n in self.sizes])
        self.half_bits = ((bits + 1) // 2).astype(np.uint64)
        rng = np.random.default_rng([seed, 0x9E37])
        self.keys = rng.integers(0, 2**63, size=(rounds, len(self.sizes)), dtype=np.uint64)
        self.rounds = rounds

    def _feistel(self, x: np.ndarray, t: np.ndarray, inverse: bool) -> np.ndarray:
        h = self.half_bits[t]
        mask = (np.uint64(1) << h) - np.uint64(1)
        left, right = x >> h, x & mask
        order = range(self.rounds - 1, -1, -1) if inverse else range(self.rounds)
        for i in order:
            if inverse:
                left, right = right ^ self._round(left, self.keys[i][t], h), left
            else:
                left, right = right, left ^ self._round(right, self.keys[i][t], h)
        return (left << h) | right

    @staticmethod
    def _round(x: np.ndarray, key: np.ndarray, h: np.ndarray) -> np.ndarray:
        # Multiply-xorshift mixing of (x ^ key); the top h bits are the round output.
        y = (x ^ key) * _MUL1
        y = (y ^ (y >> np.uint64(31))) * _MUL2
        return y >> (np.uint64(64) - h)

    def _apply(self, values: np.ndarray, inverse: bool) -> np.ndarray:
        values = np.asarray(values, dtype=np.int64)
        if values.ndim != 2 or values.shape[1] != len(self.sizes):
            raise ValueError(f"expected [batch, {len(self.sizes)}] values, got {values.shape}")
        if ((values < 0) | (values >= self.sizes)).any():
            raise ValueError("values must lie in 0..table_size-1")
        t = np.broadcast_to(np.arange(len(self.sizes)), values.shape).ravel()
        x = self._feistel(values.ravel().astype(np.uint64), t, inverse)
        n = self.sizes.astype(np.uint64)[t]
        todo = np.flatnonzero(x >= n)
        while todo.size:  # cycle walking: terminates since every cycle returns to a value < n
            x[todo] = self._feistel(x[todo], t[todo], inverse)
            todo = todo[x[todo] >= n[todo]]
        return x.astype(np.int64).reshape(values.shape)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Permute ``[batch, n_tables]`` values column by column (int64 in, int64 out)."""
        return self._apply(values, inverse=False)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """The inverse permutation: ``inverse(perm(v)) == v``."""
        return self._apply(values, inverse=True)

"""The share of popular inputs for a hot set chosen by frequency (what the EAL approximates).

A lookup's key is the pair (table, row), encoded as ``table << 40 | row`` so that integer order
is (table, row) order. The hot set is the ``hot_budget`` most frequent keys of a sample, ties
broken by the smaller key; an input is popular iff every one of its lookups is in the hot set
(docs/spec.md section 6).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

ROW_BITS = 40


class PopularShare(NamedTuple):
    """Result of `popular_share`: the popular fraction and the hot-set size actually used."""

    share: float
    hot_set_size: int


def lookup_keys(sparse: np.ndarray | torch.Tensor) -> np.ndarray:
    """Keys ``table << 40 | row`` (int64 ``[n, n_tables]``) of one-hot lookups ``[n, n_tables]``."""
    if isinstance(sparse, torch.Tensor):
        sparse = sparse.numpy()
    sparse = np.asarray(sparse, dtype=np.int64)
    if sparse.ndim != 2:
        raise ValueError(f"sparse must be [n, n_tables], got shape {sparse.shape}")
    if sparse.size and (sparse.min() < 0 or sparse.max() >= 1 << ROW_BITS):
        raise ValueError(f"rows must lie in 0..2**{ROW_BITS}-1")
    return (np.arange(sparse.shape[1], dtype=np.int64) << ROW_BITS) | sparse


def hot_set(
    sparse: np.ndarray | torch.Tensor, hot_budget: int, min_count: int = 1
) -> np.ndarray:
    """The sorted keys of the ``hot_budget`` most frequent lookups (ties: smaller key first).

    Keys seen fewer than ``min_count`` times are never hot (``min_count=2`` mirrors the EAL,
    where an entry becomes popular by being re-referenced); the set may then be smaller than
    the budget, as it is when the sample has fewer distinct keys.
    """
    if hot_budget < 0:
        raise ValueError(f"hot_budget must be >= 0, got {hot_budget}")
    keys, counts = np.unique(lookup_keys(sparse), return_counts=True)
    # np.unique sorts keys ascending, so a stable sort by descending count breaks ties by key.
    order = np.argsort(-counts, kind="stable")[:hot_budget]
    order = order[counts[order] >= min_count]
    return np.sort(keys[order])


def popular_share(
    sparse: np.ndarray | torch.Tensor,
    hot_budget: int,
    *,
    measure_on: np.ndarray | torch.Tensor | None = None,
    min_count: int = 1,
) -> PopularShare:
    """Fraction of inputs whose every lookup is in the hot set chosen on ``sparse``.

    The hot set is `hot_set` of ``sparse``; the share is measured on ``measure_on`` when given
    (held-out, as the accelerator learns on early mini-batches and classifies later ones),
    else in-sample on ``sparse``. About 0.3 s for 100k x 26 lookups.
    """
    hot = hot_set(sparse, hot_budget, min_count)
    target = lookup_keys(sparse if measure_on is None else measure_on)
    if target.shape[0] == 0:
        return PopularShare(0.0, int(hot.size))
    if hot.size == 0:
        return PopularShare(0.0, 0)
    pos = np.minimum(np.searchsorted(hot, target), hot.size - 1)
    popular = (hot[pos] == target).all(axis=1)
    return PopularShare(float(popular.mean()), int(hot.size))

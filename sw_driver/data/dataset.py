"""The in-memory form of a click log: labels, dense features and one row index per table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch


@dataclass(eq=False)
class ClickDataset:
    """Samples of a click log, one-hot per categorical table.

    Attributes:
        labels: float32 ``[n]``, the click label (0.0 or 1.0 for the readers).
        dense: float32 ``[n, n_dense]``, the numerical features.
        sparse: int64 ``[n, n_tables]``, the row looked up in each table.
        table_sizes: rows per table; every ``sparse[:, t]`` lies in ``0..table_sizes[t]-1``.
        name: where the samples came from (for messages and reports).

    Construction checks dtypes, shapes and the row range; a bad row index raises
    ``ValueError`` naming the table, the value and the sample.
    """

    labels: torch.Tensor
    dense: torch.Tensor
    sparse: torch.Tensor
    table_sizes: tuple[int, ...]
    name: str = ""

    def __post_init__(self) -> None:
        self.table_sizes = tuple(int(s) for s in self.table_sizes)
        _check_tensor("labels", self.labels, torch.float32, 1)
        _check_tensor("dense", self.dense, torch.float32, 2)
        _check_tensor("sparse", self.sparse, torch.int64, 2)
        n = self.labels.shape[0]
        if self.dense.shape[0] != n or self.sparse.shape[0] != n:
            raise ValueError(
                f"sample counts differ: labels {n}, dense {self.dense.shape[0]}, "
                f"sparse {self.sparse.shape[0]}"
            )
        if self.sparse.shape[1] != len(self.table_sizes):
            raise ValueError(
                f"sparse has {self.sparse.shape[1]} tables but table_sizes has "
                f"{len(self.table_sizes)}"
            )
        for t, size in enumerate(self.table_sizes):
            if size < 1:
                raise ValueError(f"table {t} has size {size}; every table needs >= 1 row")
        if n:
            # numpy on a zero-copy view: far cheaper than torch's elementwise ops on CPU.
            sparse = self.sparse.detach().cpu().numpy()
            bad = (sparse < 0) | (sparse >= np.asarray(self.table_sizes, dtype=np.int64))
            if bad.any():
                sample, table = (int(i) for i in np.argwhere(bad)[0])
                value = int(self.sparse[sample, table])
                raise ValueError(
                    f"table {table}: row {value} outside 0..{self.table_sizes[table] - 1} "
                    f"(sample {sample})"
                )

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def n_dense(self) -> int:
        """Number of dense features."""
        return self.dense.shape[1]

    @property
    def n_tables(self) -> int:
        """Number of categorical tables (lookups per sample)."""
        return self.sparse.shape[1]

    def subset(self, start: int, stop: int) -> ClickDataset:
        """Samples ``start..stop-1`` (Python slice rules) as views, without re-validating."""
        rows = slice(start, stop)
        return _unchecked(
            self.labels[rows], self.dense[rows], self.sparse[rows], self.table_sizes,
            f"{self.name}[{start}:{stop}]",
        )

    def pin_memory(self) -> ClickDataset:
        """A copy in page-locked host memory (what ``DataLoader(pin_memory=True)`` calls), so
        that copies to a GPU can run asynchronously (``non_blocking=True``)."""
        return _unchecked(self.labels.pin_memory(), self.dense.pin_memory(),
                          self.sparse.pin_memory(), self.table_sizes, self.name)

    @staticmethod
    def concat(parts: Sequence[ClickDataset], name: str | None = None) -> ClickDataset:
        """The samples of ``parts`` one after another (equal table sizes and dense width)."""
        if not parts:
            raise ValueError("concat needs at least one part")
        sizes, n_dense = parts[0].table_sizes, parts[0].n_dense
        for p in parts[1:]:
            if p.table_sizes != sizes or p.n_dense != n_dense:
                raise ValueError(f"cannot concatenate {p.name!r} ({p.n_dense} dense, tables "
                                 f"{p.table_sizes}) to {parts[0].name!r} ({n_dense} dense, "
                                 f"tables {sizes})")
        if len(parts) == 1:
            labels, dense, sparse = parts[0].labels, parts[0].dense, parts[0].sparse
        else:
            labels = torch.cat([p.labels for p in parts])
            dense = torch.cat([p.dense for p in parts])
            sparse = torch.cat([p.sparse for p in parts])
        # The parts were validated; so is their concatenation.
        return _unchecked(labels, dense, sparse, sizes,
                          parts[0].name if name is None else name)

    def mini_batches(self, batch_size: int, drop_last: bool = False) -> Iterator[ClickDataset]:
        """Consecutive mini-batches of ``batch_size`` samples in order (views).

        The last one may be shorter unless ``drop_last`` is set.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.subset(start, min(start + batch_size, n))


def _check_tensor(what: str, t: torch.Tensor, dtype: torch.dtype, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{what} must be {dtype}, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{what} must have {ndim} dimension(s), got shape {tuple(t.shape)}")


def _unchecked(labels, dense, sparse, table_sizes, name) -> ClickDataset:
    # Slices of a validated data set are valid: skip the O(n) range check.
    obj = object.__new__(ClickDataset)
    obj.labels, obj.dense, obj.sparse = labels, dense, sparse
    obj.table_sizes, obj.name = table_sizes, name
    return obj

"""The input classifier and the fragmenter golden model (``docs/spec.md`` sections 6 and 7).

A working set is given as ``sparse``, an integer tensor ``[n_inputs, n_tables]``: column ``t``
holds the row that input looks up in table ``t`` (one lookup per table, spec section 6).
"""

from dataclasses import dataclass

import torch

from hotline_spec.config import FragmenterConfig

from .access_logger import AccessLogger
from .dedup import dedup_cut
from .feistel import sparse_keys, split_keys

__all__ = ["WorkingSetSchedule", "classify_inputs", "fragment", "fragment_stream",
           "iter_working_sets"]


@dataclass
class WorkingSetSchedule:
    """What the fragmenter produces for one working set (spec section 7).

    Attributes
    ----------
    popular_micro_batches : list of int64 tensors
        Indices (within the working set) of the popular inputs, in input order, cut into
        chunks of ``micro_batch_size`` (last may be shorter, none empty).
    non_popular : int64 tensor
        Indices of the non-popular inputs, in input order (may be empty).
    cold_keys, cold_tables, cold_rows : int64 tensors ``[n_cold]``
        The missing lookups' keys, de-duplicated in first-seen order, and their fields.
    remapped : int64 tensor ``[n_inputs, n_tables]``
        Every lookup as an index into ``[hot table (entries rows); cold rows]``.
    popular : bool tensor ``[n_inputs]``
        The input classifier's verdict (spec section 6).
    hit : bool tensor ``[n_inputs, n_tables]``
        The frozen-mode hit of each lookup.
    n_lookups, n_hits, n_cold : int
        Lookups in the working set, how many hit, and unique cold rows.
    ended_early : bool
        The de-dup table's bank-capacity rule (spec section 7.5) ended the working set
        before the inputs it was given ran out: the inputs after ``n_inputs`` start the next.
    """

    popular_micro_batches: list
    non_popular: torch.Tensor
    cold_keys: torch.Tensor
    cold_tables: torch.Tensor
    cold_rows: torch.Tensor
    remapped: torch.Tensor
    popular: torch.Tensor
    hit: torch.Tensor
    n_lookups: int
    n_hits: int
    n_cold: int
    ended_early: bool = False

    @property
    def n_inputs(self):
        """Inputs in the working set."""
        return self.popular.numel()

    @property
    def n_popular(self):
        """Popular inputs (spec section 6)."""
        return int(self.popular.sum())


def classify_inputs(hit_matrix):
    """The input classifier (spec section 6): bool ``[n_inputs, n_tables]`` frozen-mode hits
    -> bool ``[n_inputs]``, an input being popular iff all of its lookups hit."""
    hit_matrix = torch.as_tensor(hit_matrix)
    if hit_matrix.dim() != 2:
        raise ValueError(f"hit_matrix must be 2-D [n_inputs, n_tables], not {tuple(hit_matrix.shape)}")
    return hit_matrix.to(torch.bool).all(dim=1)


def _first_seen_unique(x):
    """``(uniques in first-seen order, index of each element of x into them)``, vectorised."""
    uniq, inverse = torch.unique(x, sorted=True, return_inverse=True)
    pos = torch.arange(x.numel(), dtype=torch.int64)
    first = torch.full((uniq.numel(),), x.numel(), dtype=torch.int64)
    first = first.scatter_reduce(0, inverse, pos, reduce="amin", include_self=True)
    order = torch.argsort(first)                # uniques by first occurrence
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), dtype=torch.int64)
    return uniq[order], rank[inverse]


def fragment(tables_rows, logger, micro_batch_size, popular_max_rrpv=None, fragmenter=None):
    """Fragment one working set (spec sections 6 and 7) against a frozen ``logger``.

    Parameters
    ----------
    tables_rows : integer tensor ``[n_inputs, n_tables]``
        Row looked up by each input in each table (table id = column index).
    logger : AccessLogger
        The learned EAL; it is only read (frozen-mode lookups).
    micro_batch_size : int
        Popular micro-batch size, >= 1 (the spec's default is the mini-batch size ``N``).
    popular_max_rrpv : int, optional
        Frozen-mode threshold; default ``logger.cfg.popular_max_rrpv``.
    fragmenter : FragmenterConfig, optional
        Apply its de-dup table's bank-capacity rule (spec section 7.5): the schedule may then
        cover only the first ``n_inputs`` of the inputs (``ended_early``). ``None``: no limit.

    Returns
    -------
    WorkingSetSchedule
    """
    if not isinstance(logger, AccessLogger):
        raise TypeError(f"logger must be an AccessLogger, not {type(logger).__name__}")
    if isinstance(micro_batch_size, bool) or not isinstance(micro_batch_size, int) \
            or micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be an int >= 1, not {micro_batch_size!r}")
    cfg = logger.cfg
    if fragmenter is not None:
        if not isinstance(fragmenter, FragmenterConfig):
            raise TypeError(f"fragmenter must be a FragmenterConfig, not {type(fragmenter).__name__}")
        if fragmenter.eal != cfg:
            raise ValueError("fragmenter.eal differs from the logger's EALConfig")
    sparse = torch.as_tensor(tables_rows)
    if sparse.dim() != 2:
        raise ValueError(f"tables_rows must be 2-D [n_inputs, n_tables], not {tuple(sparse.shape)}")
    n_inputs, n_tables = sparse.shape
    keys = sparse_keys(sparse, cfg)                    # validates tables and rows
    res = logger.lookup(keys, popular_max_rrpv)
    hit = res.hit
    popular = classify_inputs(hit)
    idx = torch.arange(n_inputs, dtype=torch.int64)
    popular_idx = idx[popular]
    micro = list(torch.split(popular_idx, micro_batch_size)) if popular_idx.numel() else []
    non_popular = idx[~popular]
    # Misses occur only in non-popular inputs; a row-major scan is input order, then table
    # order, exactly the spec's scan of the non-popular inputs.
    miss = ~hit
    cold_keys, cold_index = _first_seen_unique(keys[miss])
    if fragmenter is not None and cold_keys.numel():
        miss_input = idx.unsqueeze(1).expand(n_inputs, n_tables)[miss]
        first_input = torch.full((cold_keys.numel(),), n_inputs, dtype=torch.int64)
        first_input = first_input.scatter_reduce(0, cold_index, miss_input, reduce="amin")
        cut = dedup_cut(cold_keys, first_input, n_inputs, n_tables, fragmenter)
        if cut < n_inputs:
            # Everything of inputs < cut is independent of the inputs after it.
            early = fragment(sparse[:cut], logger, micro_batch_size, popular_max_rrpv)
            early.ended_early = True
            return early
    remapped = res.slot.clone()
    remapped[miss] = cfg.entries + cold_index
    cold_tables, cold_rows = split_keys(cold_keys, cfg)
    n_hits = int(hit.sum())
    return WorkingSetSchedule(
        popular_micro_batches=micro, non_popular=non_popular, cold_keys=cold_keys,
        cold_tables=cold_tables, cold_rows=cold_rows, remapped=remapped, popular=popular,
        hit=hit, n_lookups=n_inputs * n_tables, n_hits=n_hits, n_cold=cold_keys.numel())


def fragment_stream(tables_rows, logger, micro_batch_size, working_set_inputs,
                    fragmenter, popular_max_rrpv=None):
    """All working sets of a stream of inputs, as the RTL fragmenter cuts them: working sets
    of ``working_set_inputs`` inputs, each ended early by the de-dup rule when a bank fills;
    the next one starts at the first input left over. Returns ``[(start, schedule)]``."""
    if isinstance(working_set_inputs, bool) or not isinstance(working_set_inputs, int) \
            or working_set_inputs < 1:
        raise ValueError(f"working_set_inputs must be an int >= 1, not {working_set_inputs!r}")
    sparse = torch.as_tensor(tables_rows)
    out, start = [], 0
    while start < len(sparse):
        sched = fragment(sparse[start:start + working_set_inputs], logger, micro_batch_size,
                         popular_max_rrpv, fragmenter)
        out.append((start, sched))
        start += sched.n_inputs
    return out


def iter_working_sets(sparse, mini_batch_size, working_set):
    """Yield the consecutive working sets of ``sparse`` (spec section 7): slices of
    ``working_set`` mini-batches of ``mini_batch_size`` inputs each (``W * N`` rows); the
    last working set holds what is left (it may be shorter)."""
    for name, v in (("mini_batch_size", mini_batch_size), ("working_set", working_set)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, not {v!r}")
    step = mini_batch_size * working_set
    for start in range(0, len(sparse), step):
        yield sparse[start:start + step]

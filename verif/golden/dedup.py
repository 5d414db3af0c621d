"""The de-duplication table's observable rule (``docs/spec.md`` section 7.5): which bank a
cold row lands in, and where a working set ends when a bank fills up.

Only the bank of a key affects what the fragmenter outputs; the bucket and the probing order
decide timing, and are modelled here so that tests can craft colliding keys.
"""

import torch

from hotline_spec.config import DEDUP_MULTIPLIER, FragmenterConfig

__all__ = ["dedup_hash", "dedup_bank", "dedup_bucket", "dedup_cut"]

_MASK32 = (1 << 32) - 1


def dedup_hash(keys):
    """The 32-bit de-dup hash of int64 ``keys``: ``((k ^ (k >> 32)) mod 2^32) * M mod 2^32``."""
    k = torch.as_tensor(keys, dtype=torch.int64)
    folded = (k ^ (k >> 32)) & _MASK32            # keys are < 2^64; >> is arithmetic, so mask
    # The 64-bit product would overflow int64: multiply in two 16-bit halves, mod 2^32.
    lo = (folded & 0xFFFF) * DEDUP_MULTIPLIER
    hi = (((folded >> 16) * DEDUP_MULTIPLIER) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def dedup_bank(keys, fcfg: FragmenterConfig):
    """Bank of each key: the top ``log2(dedup_banks)`` bits of the hash."""
    if fcfg.dedup_bank_bits == 0:
        return torch.zeros_like(torch.as_tensor(keys, dtype=torch.int64))
    return dedup_hash(keys) >> (32 - fcfg.dedup_bank_bits)


def dedup_bucket(keys, fcfg: FragmenterConfig):
    """Home bucket of each key within its bank: the next ``log2(dedup_sets)`` hash bits."""
    shift = 32 - fcfg.dedup_bank_bits - fcfg.dedup_set_bits
    return (dedup_hash(keys) >> shift) & (fcfg.dedup_sets - 1)


def dedup_cut(cold_keys, cold_first_input, n_inputs, n_tables, fcfg: FragmenterConfig):
    """Inputs in the working set under the bank-capacity rule (spec section 7.5).

    ``cold_keys``: the distinct cold keys in first-seen order; ``cold_first_input``: the
    input each is first seen in (non-decreasing). A bank is *nearly full* once it holds more
    than ``bank_capacity - n_tables`` cold rows; the working set ends after the input whose
    cold row made a bank nearly full. Returns that input + 1, or ``n_inputs``.
    """
    cold_keys = torch.as_tensor(cold_keys, dtype=torch.int64)
    first = torch.as_tensor(cold_first_input, dtype=torch.int64)
    limit = fcfg.bank_capacity - n_tables            # >= 0: bank_capacity >= max_tables
    if cold_keys.numel() <= limit:
        return n_inputs
    bank = dedup_bank(cold_keys, fcfg)
    # Ordinal of each cold row within its bank, in first-seen order (a stable sort by bank).
    by_bank = torch.sort(bank, stable=True).indices
    sorted_bank = bank[by_bank]
    starts = torch.searchsorted(sorted_bank, sorted_bank, right=False)
    ordinal = torch.empty_like(by_bank)
    ordinal[by_bank] = torch.arange(by_bank.numel()) - starts
    tipping = ordinal == limit                       # the row that makes its bank nearly full
    if not bool(tipping.any()):
        return n_inputs
    return min(n_inputs, int(first[tipping].min()) + 1)

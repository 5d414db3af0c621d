"""Plain-Python reference of the key hash, written straight from docs/spec.md section 3.

Independent of ``verif.golden``: the golden-model tests compare against it. Only the round
constants are shared, because the spec names them as the values in ``hotline_spec/config.py``.
"""

from hotline_spec.config import FEISTEL_MULTIPLIERS, FEISTEL_ROUND_KEYS


def ref_f(x, i, wi, wo):
    """Round function F_i: a ``wo``-bit value from the ``wi``-bit half ``x``."""
    return (((x ^ (FEISTEL_ROUND_KEYS[i] % 2 ** wi)) * FEISTEL_MULTIPLIERS[i]) % 2 ** 32) >> (32 - wo)


def ref_hash(k, cfg):
    """The Feistel hash of key ``k`` (a Python int) under ``cfg``."""
    b = cfg.key_bits // 2
    hi, lo = k >> b, k % 2 ** b
    w_hi, w_lo = cfg.key_bits - b, b
    for i in range(cfg.hash_rounds):
        hi, lo = lo, hi ^ ref_f(lo, i, w_lo, w_hi)
        w_hi, w_lo = w_lo, w_hi
    return hi * 2 ** w_lo + lo


def ref_fields(h, cfg):
    """(bank, set, tag) of hash ``h``."""
    return (h % cfg.banks, (h >> cfg.bank_bits) % cfg.sets, h >> (cfg.bank_bits + cfg.set_bits))

"""Keys and the Feistel hash of the Hotline lookup path (``docs/spec.md`` sections 2 and 3).

Everything here is vectorised over ``torch.int64`` tensors of any shape. A key, hash or tag
that is 64 bits wide (``key_bits == 64``) is carried in an ``int64`` as its two's-complement bit
pattern: values ``>= 2**63`` appear negative. For every narrower field the values are plain
non-negative integers and a negative value is an error.

The round function multiplies a value of up to 32 bits by a 32-bit multiplier, whose exact
product can exceed ``2**63``; it is computed modulo ``2**32`` exactly by splitting the
multiplier into 16-bit halves, so no intermediate leaves ``int64``.

Two implementations of the hash give the same bits: the torch one (``_hash_raw``, a dozen
tensor ops a round, the reference) and a compiled one (numba, ``_hash_u64``: one pass, one
thread, unsigned 64-bit arithmetic), which :func:`feistel_hash`, :func:`hash_fields`,
:func:`make_keys` and :func:`sparse_keys` use for contiguous CPU ``int64`` tensors (and the
learner fuses with its loop). Many small torch ops are slow on a loaded machine with more
than one intra-op thread (each op waits for every thread); the compiled pass does not fork.
``reference=True`` (where offered) runs the torch version; the tests compare the two.
"""

import numba
import numpy as np
import torch

from hotline_spec.config import EALConfig, FEISTEL_MULTIPLIERS, FEISTEL_ROUND_KEYS

__all__ = ["make_keys", "sparse_keys", "split_keys", "feistel_hash", "feistel_unhash", "hash_fields",
           "fields_from_hash", "hash_from_fields", "key_from_fields",
           "feistel_hash_int", "feistel_unhash_int"]

_U32 = 0xFFFFFFFF


def _mask(width):
    return (1 << width) - 1


def _fmt_pos(flat_index, shape):
    if len(shape) == 0:
        return "()"
    return str(tuple(int(i) for i in np.unravel_index(int(flat_index), tuple(shape))))


def _as_int64(x, width, what):
    """Convert ``x`` (tensor, numpy array, int or nested sequence of ints) to an int64 tensor
    holding ``width``-bit unsigned values; raise ``ValueError`` naming the first bad value,
    its position and the limit. A 64-bit field accepts any int64 (two's-complement pattern)
    and Python ints in ``[0, 2**64)``."""
    limit = 1 << width
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(f"{what} must be an integer tensor, not {x.dtype}")
        t = x.to(torch.int64)
    else:
        arr = np.asarray(x)
        if not isinstance(x, np.ndarray) and arr.dtype.kind == "f":
            arr = np.asarray(x, dtype=object)  # e.g. [2**63, -1]: mixed ints beyond int64
        if arr.dtype == np.bool_ or arr.dtype.kind not in "iuO":
            raise TypeError(f"{what} must be integers, not {arr.dtype}")
        if arr.dtype == np.uint64:
            arr = arr.view(np.int64) if width == 64 else arr
        if arr.dtype.kind == "O" or (arr.dtype == np.uint64):
            # Python ints beyond int64: check exactly, then fold to the int64 bit pattern.
            flat = arr.reshape(-1).tolist()
            for i, v in enumerate(flat):
                if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"{what} must be integers, not {type(v).__name__}")
                if not 0 <= int(v) < limit:
                    raise ValueError(f"{what} {int(v)} at position {_fmt_pos(i, arr.shape)} is "
                                     f"out of range: must be 0 <= {what} < {limit} (2**{width})")
            folded = [int(v) - (1 << 64) if int(v) >= (1 << 63) else int(v) for v in flat]
            return torch.tensor(folded, dtype=torch.int64).reshape(arr.shape)
        t = torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64)))
    if width < 64:
        if _compilable(t):
            i = int(_first_out_of_range(t.reshape(-1).numpy(), width))
            if i < 0:
                return t
            bad = None
        else:
            bad = t < 0
            if width < 63:
                bad |= t >= limit
        if bad is None or bool(bad.any()):
            if bad is not None:
                i = int(torch.nonzero(bad.reshape(-1))[0])
            v = int(t.reshape(-1)[i])
            raise ValueError(f"{what} {v} at position {_fmt_pos(i, t.shape)} is out of range: "
                             f"must be 0 <= {what} < {limit} (2**{width})")
    return t


#: Tensors of at least this many elements take the compiled paths (below it a torch op is as
#: quick and compiling is not worth it).
COMPILED_MIN = 64


def _compilable(t):
    """A contiguous CPU int64 tensor large enough for the compiled paths."""
    return (t.dtype == torch.int64 and t.device.type == "cpu" and t.numel() >= COMPILED_MIN
            and t.is_contiguous())


@numba.njit(cache=True, nogil=True)
def _first_out_of_range(x, width):
    """Index of the first value of ``x`` (int64) outside ``0 <= v < 2**width`` (width < 64),
    or -1."""
    for i in range(x.shape[0]):
        if x[i] < 0 or (x[i] >> width) != 0:
            return i
    return -1


def _field(x, shift, width):
    """Bits ``[shift, shift + width)`` of the int64 bit pattern ``x`` (shift + width <= 64)."""
    if width == 0:
        return torch.zeros_like(x)
    if shift:
        x = x >> shift  # arithmetic shift; the mask below drops the sign copies
    if width >= 64:
        return x
    return x & _mask(width)


def _check_cfg(cfg):
    if not isinstance(cfg, EALConfig):
        raise TypeError(f"cfg must be an EALConfig, not {type(cfg).__name__}")


# ---------------------------------------------------------------------------------------
# Keys (spec section 2)
# ---------------------------------------------------------------------------------------

def make_keys(tables, rows, cfg):
    """Keys ``(t << row_bits) | r`` of lookups (table ``t``, row ``r``) (spec section 2).

    ``tables`` and ``rows`` are tensors, arrays or ints (broadcast against each other).
    Returns an int64 tensor. A table outside ``0 <= t < 2**table_bits`` or a row outside
    ``0 <= r < 2**row_bits`` raises ``ValueError`` naming the value, its position and the
    limit.
    """
    _check_cfg(cfg)
    if (isinstance(tables, torch.Tensor) and isinstance(rows, torch.Tensor)
            and tables.shape == rows.shape and _compilable(tables) and _compilable(rows)):
        out = torch.empty(rows.shape, dtype=torch.int64)
        if int(_make_keys_kernel(tables.reshape(-1).numpy(), rows.reshape(-1).numpy(),
                                 cfg.table_bits, cfg.row_bits, out.reshape(-1).numpy())) < 0:
            return out
        # an out-of-range field: the torch path below names it
    t = _as_int64(tables, cfg.table_bits, "table")
    r = _as_int64(rows, cfg.row_bits, "row")
    t, r = torch.broadcast_tensors(t, r)
    if cfg.table_bits == 0:
        return r.clone()
    return (t << cfg.row_bits) | r


@numba.njit(cache=True, nogil=True)
def _make_keys_kernel(tables, rows, table_bits, row_bits, out):
    """``out = (tables << row_bits) | rows``; returns the index of the first table or row out
    of range (``out`` then incomplete), or -1."""
    for i in range(rows.shape[0]):
        t = tables[i]
        r = rows[i]
        if t < 0 or (t >> table_bits) != 0 or r < 0 or (r >> row_bits) != 0:
            return i
        out[i] = (t << row_bits) | r
    return -1


@numba.njit(cache=True, nogil=True)
def _sparse_keys_kernel(sparse, table_bits, row_bits, out):
    """``out[i, t] = (t << row_bits) | sparse[i, t]``; returns the flat index of the first
    row (or table) out of range, or -1."""
    n, nt = sparse.shape
    if nt > (1 << table_bits):
        return nt if table_bits < 63 else -1
    for i in range(n):
        for t in range(nt):
            r = sparse[i, t]
            if r < 0 or (r >> row_bits) != 0:
                return i * nt + t
            out[i, t] = (t << row_bits) | r
    return -1


def sparse_keys(sparse, cfg):
    """Keys of a one-hot row-index matrix ``sparse [n_inputs, n_tables]`` whose column is the
    table id (spec sections 2 and 6): ``make_keys(column, sparse[:, column])``, with the same
    range errors."""
    sparse = torch.as_tensor(sparse)
    if sparse.dim() != 2:
        raise ValueError(f"sparse must be 2-D [n_inputs, n_tables], not {tuple(sparse.shape)}")
    n, t = sparse.shape
    if _compilable(sparse) and cfg.table_bits < 63 and cfg.row_bits < 63:
        _check_cfg(cfg)
        out = torch.empty(n, t, dtype=torch.int64)
        if int(_sparse_keys_kernel(sparse.numpy(), cfg.table_bits, cfg.row_bits,
                                   out.numpy())) < 0:
            return out
    return make_keys(torch.arange(t, dtype=torch.int64).expand(n, t), sparse, cfg)


def split_keys(keys, cfg):
    """Inverse of :func:`make_keys` (spec section 2): ``keys -> (tables, rows)``."""
    _check_cfg(cfg)
    k = _as_int64(keys, cfg.key_bits, "key")
    return _field(k, cfg.row_bits, cfg.table_bits), _field(k, 0, cfg.row_bits)


# ---------------------------------------------------------------------------------------
# Feistel hash (spec section 3)
# ---------------------------------------------------------------------------------------

def _round_fn(x, i, wi, wo):
    """``F_i(x) = (((x ^ (K_i mod 2^wi)) * M_i) mod 2^32) >> (32 - wo)`` (spec section 3).

    ``x`` holds ``wi <= 32``-bit values; the product modulo 2^32 is formed from the 16-bit
    halves of ``M_i`` so that nothing exceeds 2^49."""
    x = x ^ (FEISTEL_ROUND_KEYS[i] & _mask(wi))
    m = FEISTEL_MULTIPLIERS[i]
    m_lo, m_hi = m & 0xFFFF, m >> 16
    p = (x * m_lo + (((x * m_hi) & 0xFFFF) << 16)) & _U32
    return p >> (32 - wo)


def _widths(cfg):
    b = cfg.key_bits // 2
    return cfg.key_bits - b, b  # (a = width of hi, b = width of lo)


def _hash_raw(k, cfg):
    a, b = _widths(cfg)
    hi, lo = _field(k, b, a), _field(k, 0, b)
    wh, wl = a, b
    for i in range(cfg.hash_rounds):
        hi, lo = lo, hi ^ _round_fn(lo, i, wl, wh)
        wh, wl = wl, wh
    return (hi << wl) | lo


def _unhash_raw(h, cfg):
    a, b = _widths(cfg)
    wh, wl = (a, b) if cfg.hash_rounds % 2 == 0 else (b, a)
    hi, lo = _field(h, wl, wh), _field(h, 0, wl)
    for i in reversed(range(cfg.hash_rounds)):
        hi, lo = lo ^ _round_fn(hi, i, wh, wl), hi
        wh, wl = wl, wh
    return (hi << b) | lo


# --- the compiled hash (numba): the same bits as _hash_raw, unsigned 64-bit arithmetic ------

def hash_params(cfg):
    """The compiled hash's parameters for ``cfg``: ``(a, b, round_keys, multipliers)``, the
    half widths and uint64 arrays of the ``hash_rounds`` round constants."""
    a, b = _widths(cfg)
    rk = np.array(FEISTEL_ROUND_KEYS[:cfg.hash_rounds], dtype=np.uint64)
    mu = np.array(FEISTEL_MULTIPLIERS[:cfg.hash_rounds], dtype=np.uint64)
    return a, b, rk, mu


@numba.njit(cache=True, nogil=True, inline="always")
def _umask(width):
    """``2**width - 1`` as uint64 for ``0 <= width <= 64``."""
    if width >= 64:
        return np.uint64(0xFFFFFFFFFFFFFFFF)
    return (np.uint64(1) << np.uint64(width)) - np.uint64(1)


@numba.njit(cache=True, nogil=True, inline="always")
def _hash_u64(k, a, b, round_keys, mults):
    """The Feistel hash (spec section 3) of one key ``k`` (uint64, ``key_bits = a + b``):
    ``F_i(x) = (((x ^ (K_i mod 2^wi)) * M_i) mod 2^32) >> (32 - wo)`` on uint64 (the exact
    product of two 32-bit values fits)."""
    u32 = np.uint64(0xFFFFFFFF)
    hi = k >> np.uint64(b)
    lo = k & _umask(b)
    wh = a
    wl = b
    for i in range(round_keys.shape[0]):
        x = lo ^ (round_keys[i] & _umask(wl))
        f = ((x * mults[i]) & u32) >> np.uint64(32 - wh)
        nlo = hi ^ f
        hi = lo
        lo = nlo
        t = wh
        wh = wl
        wl = t
    return (hi << np.uint64(wl)) | lo


@numba.njit(cache=True, nogil=True)
def _hash_kernel(keys, a, b, round_keys, mults, out):
    """``out[i] = hash(keys[i])`` (int64 arrays, the uint64 bit patterns)."""
    for i in range(keys.shape[0]):
        out[i] = np.int64(_hash_u64(np.uint64(keys[i]), a, b, round_keys, mults))


@numba.njit(cache=True, nogil=True, inline="always")
def _split_u64(h, bank_bits, set_bits):
    """``(bank, set, tag)`` (int64) of a hash ``h`` (uint64): :func:`fields_from_hash`."""
    bank = np.int64(h & _umask(bank_bits))
    set_ = np.int64((h >> np.uint64(bank_bits)) & _umask(set_bits))
    if bank_bits + set_bits >= 64:
        return bank, set_, np.int64(0)
    return bank, set_, np.int64(h >> np.uint64(bank_bits + set_bits))


@numba.njit(cache=True, nogil=True)
def _fields_kernel(keys, a, b, round_keys, mults, bank_bits, set_bits, bank, set_, tag):
    """``(bank, set, tag)`` of each key's hash (spec section 3), int64 arrays."""
    for i in range(keys.shape[0]):
        h = _hash_u64(np.uint64(keys[i]), a, b, round_keys, mults)
        bank[i], set_[i], tag[i] = _split_u64(h, bank_bits, set_bits)


def _hash_compiled(k, cfg):
    """The compiled :func:`_hash_raw` of a contiguous CPU int64 tensor of checked keys."""
    a, b, rk, mu = hash_params(cfg)
    out = torch.empty(k.shape, dtype=torch.int64)
    _hash_kernel(k.reshape(-1).numpy(), a, b, rk, mu, out.reshape(-1).numpy())
    return out


def _fields_compiled(k, cfg):
    """``(bank, set, tag)`` of a contiguous CPU int64 tensor of checked keys, compiled."""
    a, b, rk, mu = hash_params(cfg)
    bank, set_, tag = (torch.empty(k.shape, dtype=torch.int64) for _ in range(3))
    _fields_kernel(k.reshape(-1).numpy(), a, b, rk, mu, cfg.bank_bits, cfg.set_bits,
                   bank.reshape(-1).numpy(), set_.reshape(-1).numpy(), tag.reshape(-1).numpy())
    return bank, set_, tag


def feistel_hash(keys, cfg, reference=False):
    """The Feistel hash of spec section 3, a bijection on ``key_bits``-bit values.

    ``keys``: int64 tensor (or ints) of keys, each ``0 <= k < 2**key_bits`` (else
    ``ValueError``). Returns an int64 tensor of the same shape. Computed by the compiled pass
    for contiguous CPU int64 tensors, else (or with ``reference=True``) by torch ops; the
    bits are the same.
    """
    _check_cfg(cfg)
    k = _as_int64(keys, cfg.key_bits, "key")
    if not reference and _compilable(k):
        return _hash_compiled(k, cfg)
    return _hash_raw(k, cfg)


def feistel_unhash(h, cfg):
    """The inverse Feistel hash of spec section 3: ``feistel_unhash(feistel_hash(k)) == k``."""
    _check_cfg(cfg)
    return _unhash_raw(_as_int64(h, cfg.key_bits, "hash"), cfg)


def fields_from_hash(h, cfg):
    """Split hash values into ``(bank, set, tag)`` (spec section 3):
    ``bank = h mod banks``, ``set = (h >> bank_bits) mod sets``,
    ``tag = h >> (bank_bits + set_bits)``."""
    _check_cfg(cfg)
    h = _as_int64(h, cfg.key_bits, "hash")
    bb, sb = cfg.bank_bits, cfg.set_bits
    return _field(h, 0, bb), _field(h, bb, sb), _field(h, bb + sb, cfg.tag_bits)


def hash_from_fields(bank, set, tag, cfg):
    """``(tag << (bank_bits + set_bits)) | (set << bank_bits) | bank`` (spec sections 3, 5);
    out-of-range fields raise ``ValueError``."""
    _check_cfg(cfg)
    b = _as_int64(bank, cfg.bank_bits, "bank")
    s = _as_int64(set, cfg.set_bits, "set")
    t = _as_int64(tag, cfg.tag_bits, "tag")
    b, s, t = torch.broadcast_tensors(b, s, t)
    bb, sb = cfg.bank_bits, cfg.set_bits
    t_sh = t if bb + sb == 0 else t << (bb + sb)
    return t_sh | (s << bb) | b


def hash_fields(keys, cfg, reference=False):
    """The tag-store address ``(bank, set, tag)`` of each key (spec sections 3 and 4);
    compiled for contiguous CPU int64 tensors unless ``reference``."""
    _check_cfg(cfg)
    k = _as_int64(keys, cfg.key_bits, "key")
    if not reference and _compilable(k):
        return _fields_compiled(k, cfg)
    return fields_from_hash(_hash_raw(k, cfg), cfg)


def key_from_fields(bank, set, tag, cfg):
    """The key stored in tag-store entry (bank, set, tag): ``unhash`` of the re-assembled hash
    (spec section 5). Inverse of :func:`hash_fields`."""
    return _unhash_raw(hash_from_fields(bank, set, tag, cfg), cfg)


# ---------------------------------------------------------------------------------------
# Scalar versions (plain Python ints, unsigned; handy in testbenches)
# ---------------------------------------------------------------------------------------

def _round_fn_int(x, i, wi, wo):
    return ((((x ^ (FEISTEL_ROUND_KEYS[i] & _mask(wi))) * FEISTEL_MULTIPLIERS[i]) & _U32)
            >> (32 - wo))


def feistel_hash_int(k, cfg):
    """Scalar :func:`feistel_hash` on a Python int ``0 <= k < 2**key_bits`` (spec section 3)."""
    _check_cfg(cfg)
    if not 0 <= k < (1 << cfg.key_bits):
        raise ValueError(f"key {k} is out of range: must be 0 <= key < {1 << cfg.key_bits}")
    a, b = _widths(cfg)
    hi, lo, wh, wl = k >> b, k & _mask(b), a, b
    for i in range(cfg.hash_rounds):
        hi, lo = lo, hi ^ _round_fn_int(lo, i, wl, wh)
        wh, wl = wl, wh
    return (hi << wl) | lo


def feistel_unhash_int(h, cfg):
    """Scalar :func:`feistel_unhash` on a Python int (spec section 3)."""
    _check_cfg(cfg)
    if not 0 <= h < (1 << cfg.key_bits):
        raise ValueError(f"hash {h} is out of range: must be 0 <= hash < {1 << cfg.key_bits}")
    a, b = _widths(cfg)
    wh, wl = (a, b) if cfg.hash_rounds % 2 == 0 else (b, a)
    hi, lo = h >> wl, h & _mask(wl)
    for i in reversed(range(cfg.hash_rounds)):
        hi, lo = lo ^ _round_fn_int(hi, i, wh, wl), hi
        wh, wl = wl, wh
    return (hi << b) | lo

"""Parallel, bit-identical ``uniform_`` fills from torch's CPU generator (for ``init_table``).

torch's CPU generator is a 32-bit Mersenne Twister (MT19937); ``Tensor.uniform_`` on a
float32 CPU tensor draws one 32-bit value per element, in element order, in one thread.
A fill of ``N`` elements that starts ``S`` draws into the stream therefore equals a fill by a
generator whose state is the serial generator's state after ``S`` draws. Advancing the state
(the twist, 624 words per 624 draws, no tempering, no float conversion) costs about 0.2 ns a
draw in compiled code against about 6 ns an element for ``uniform_``, so one thread walks the
stream from chunk start to chunk start while a pool of threads fills the chunks.

The state is read and written through ``Generator.get_state()`` / ``set_state()`` (torch's
5056-byte CPU state: seed, ``left``, ``seeded``, ``next``, 624 words as uint64, then the
normal-sampling cache). :func:`skip_ahead_works` checks once per process, on this torch,
that the walk reproduces the generator's own state after real ``uniform_`` fills; if not
(another layout, another sampler), :func:`parallel_uniform_tables` returns ``False`` and the
caller fills serially.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

__all__ = ["skip_ahead_works", "parallel_uniform_tables", "state_after"]

_N = 624
_M = 397
_STATE_BYTES = 5056
_LEFT, _NEXT, _WORDS = 8, 16, 24   # byte offsets of left (int32), next (uint64), state


@numba.njit(cache=True, nogil=True)
def _twist(mt):
    """MT19937's ``next_state`` (torch's ``at::mt19937``) on 624 uint32 words, in place."""
    upper = np.uint32(0x80000000)
    lower = np.uint32(0x7FFFFFFF)
    mat = np.uint32(0x9908B0DF)
    one = np.uint32(1)
    zero = np.uint32(0)
    for i in range(_N - _M):
        y = (mt[i] & upper) | (mt[i + 1] & lower)
        mt[i] = mt[i + _M] ^ (y >> one) ^ (mat if (mt[i + 1] & one) else zero)
    for i in range(_N - _M, _N - 1):
        y = (mt[i] & upper) | (mt[i + 1] & lower)
        mt[i] = mt[i + _M - _N] ^ (y >> one) ^ (mat if (mt[i + 1] & one) else zero)
    y = (mt[_N - 1] & upper) | (mt[0] & lower)
    mt[_N - 1] = mt[_M - 1] ^ (y >> one) ^ (mat if (mt[0] & one) else zero)


@numba.njit(cache=True, nogil=True)
def _advance(mt, left, nxt, draws):
    """Advance ``(mt, left, next)`` by ``draws`` 32-bit draws as ``at::mt19937::operator()``
    does (``if (--left == 0) next_state(); return temper(state[next++])``), without the
    tempering. Returns the new ``(left, next)``; ``mt`` is updated in place."""
    while draws > 0:
        free = left - 1                 # draws before the one that twists
        if draws <= free:
            return left - draws, nxt + draws
        draws -= free + 1
        _twist(mt)
        left = _N
        nxt = 1
    return left, nxt


class _Stream:
    """A walk along one generator's stream: ``state_bytes()`` at the current position,
    ``advance(draws)``."""

    def __init__(self, state):
        self.raw = state.numpy().copy()
        self.mt = self.raw[_WORDS:_WORDS + 8 * _N].view(np.uint64).astype(np.uint32)
        self.left = int(self.raw[_LEFT:_LEFT + 4].view(np.int32)[0])
        self.next = int(self.raw[_NEXT:_NEXT + 8].view(np.uint64)[0])

    def advance(self, draws):
        self.left, self.next = (int(v) for v in _advance(self.mt, self.left, self.next,
                                                         int(draws)))

    def state_bytes(self):
        out = self.raw.copy()
        out[_LEFT:_LEFT + 4].view(np.int32)[0] = self.left
        out[_NEXT:_NEXT + 8].view(np.uint64)[0] = self.next
        out[_WORDS:_WORDS + 8 * _N].view(np.uint64)[:] = self.mt
        return torch.from_numpy(out)


def state_after(seed, draws):
    """The ``get_state()`` bytes of ``torch.Generator().manual_seed(seed)`` after ``draws``
    32-bit draws, computed by the walk (the tests compare it with torch)."""
    s = _Stream(torch.Generator().manual_seed(int(seed)).get_state())
    s.advance(draws)
    return s.state_bytes()


_WORKS = None


def skip_ahead_works():
    """Whether the walk reproduces this torch's generator: after float32 ``uniform_`` fills
    of several sizes (across twists) the generator's state equals :func:`state_after`, and a
    fill from the walked state continues the serial values. Checked once per process."""
    global _WORKS
    if _WORKS is None:
        try:
            ok = torch.Generator().get_state().numel() == _STATE_BYTES
            g = torch.Generator().manual_seed(1234)
            drawn = 0
            for n in (1, 623, 624, 625, 3000):
                torch.empty(n).uniform_(-1.0, 1.0, generator=g)
                drawn += n
                ok = ok and torch.equal(g.get_state(), state_after(1234, drawn))
            serial = torch.empty(5000)
            serial.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(7))
            g2 = torch.Generator()
            g2.set_state(state_after(7, 1700))
            part = torch.empty(3300).uniform_(-0.5, 0.5, generator=g2)
            _WORKS = bool(ok and torch.equal(part, serial[1700:]))
        except Exception:   # another layout or API: fall back to the serial fill
            _WORKS = False
    return _WORKS


def parallel_uniform_tables(out, table_rows, seed, threads, chunk_elements=1 << 22):
    """Fill ``out`` (2-D, rows of contiguous elements, ``sum(table_rows)`` rows) as
    ``init_table`` does serially -- table ``t`` (rows ``offsets[t]:offsets[t] + n_t``)
    ``uniform_(-sqrt(1 / n_t), sqrt(1 / n_t))`` from one generator seeded with ``seed`` --
    in chunks of about ``chunk_elements`` on ``threads`` threads, with identical values.
    Returns ``False`` (nothing written) when the skip-ahead does not match this torch or
    ``out`` is not float32."""
    if out.dtype != torch.float32 or out.dim() != 2 or not skip_ahead_works():
        return False
    dim = int(out.shape[1])
    if dim > 1 and out.stride(1) != 1:
        return False
    rows_per_chunk = max(1, chunk_elements // max(1, dim))
    chunks = []                         # (first row, rows, bound), stream order
    start = 0
    for n in table_rows:
        bound = math.sqrt(1.0 / n)
        for a in range(0, n, rows_per_chunk):
            chunks.append((start + a, min(rows_per_chunk, n - a), bound))
        start += n
    stream = _Stream(torch.Generator().manual_seed(seed).get_state())

    def fill(first, rows, bound, state):
        g = torch.Generator()
        g.set_state(state)
        out[first:first + rows].uniform_(-bound, bound, generator=g)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="init-table") as pool:
        futures = []
        pos = 0
        for first, rows, bound in chunks:
            stream.advance(first * dim - pos)
            pos = first * dim
            futures.append(pool.submit(fill, first, rows, bound, stream.state_bytes()))
        for f in futures:
            f.result()
    return True

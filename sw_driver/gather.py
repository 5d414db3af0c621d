"""Multi-threaded row gather/scatter between a host embedding table and a staging buffer.

The driver moves the cold rows of a working set (``docs/driver.md``) between the big host
table (``float32 [R, D]``, ideally pinned) and a pinned staging buffer. Both directions are
row copies driven by an index list:

* :func:`gather_rows`: ``out[:n] = table[idx]`` (``torch.index_select(..., out=...)``),
* :func:`scatter_rows`: ``table[idx] = rows`` (``Tensor.index_copy_``).

The index list is cut into contiguous chunks, one per worker of a persistent
:class:`~concurrent.futures.ThreadPoolExecutor`; each chunk is one compiled copy (numba,
``nogil``: a row loop with a bounds check, for float32/float64 tables with contiguous rows)
or else one torch call on slices of the index list and the staging buffer. Both release the
GIL, so the chunks run in parallel. The compiled copy is as fast as ``index_select`` and
about three times faster than ``index_copy_`` (which takes a slow generic path on the CPU);
``compiled=False`` forces the torch calls. Chunks write disjoint slices of the staging buffer (gather) or
disjoint rows of the table (scatter, when ``idx`` has no duplicates), so no locking is
needed.

``python -m sw_driver.gather`` runs :func:`bench_gather` and prints rows/s for 1, 2, ...
threads against a plain single ``index_select``.
"""

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from .device_checks import _check_keys_kernel

__all__ = ["gather_rows", "scatter_rows", "gather_keys", "scatter_keys", "checked_copy", "make_pool", "chunk_bounds", "bench_gather",
           "MIN_CHUNK_ROWS"]

#: Below this many rows per chunk, splitting costs more than it saves (thread hand-off is
#: some microseconds; a row of 64 fp32 copies in a few nanoseconds).
MIN_CHUNK_ROWS = 4096


def make_pool(threads):
    """A persistent pool for :func:`gather_rows`/:func:`scatter_rows`: ``None`` for one
    thread (the copy runs in the calling thread), else a ``ThreadPoolExecutor(threads)``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, not {threads!r}")
    if threads == 1:
        return None
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hotline-gather")


def _pool_width(pool):
    if pool is None:
        return 1
    return max(1, int(getattr(pool, "_max_workers", 1)))


def chunk_bounds(n, parts, min_chunk=MIN_CHUNK_ROWS):
    """``[(start, stop), ...]``: ``range(n)`` cut into at most ``parts`` contiguous,
    near-equal, non-empty chunks of at least ``min_chunk`` rows (one chunk when ``n`` is
    small; none when ``n == 0``)."""
    if n <= 0:
        return []
    k = max(1, min(parts, n // max(1, min_chunk)))
    b = [n * i // k for i in range(k + 1)]
    return list(zip(b[:-1], b[1:]))


def _check_index(idx, name="idx"):
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(idx).__name__}")
    if idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be int64 or int32, not {idx.dtype}")
    if idx.dim() != 1:
        raise ValueError(f"{name} must be 1-D, not shape {tuple(idx.shape)}")
    if idx.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, not {idx.device}")


def _check_table(table, name):
    if not isinstance(table, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(table).__name__}")
    if table.dim() != 2:
        raise ValueError(f"{name} must be 2-D [rows, dim], not shape {tuple(table.shape)}")
    if table.device.type != "cpu":
        raise ValueError(f"{name} must be in host memory, not on {table.device}")


def _run(pool, calls):
    """Run ``calls`` (list of (fn, args, kwargs)) on ``pool``; the last one in this thread."""
    if not calls:
        return
    if pool is None or len(calls) == 1:
        for fn, args, kwargs in calls:
            fn(*args, **kwargs)
        return
    futures = [pool.submit(fn, *args, **kwargs) for fn, args, kwargs in calls[:-1]]
    fn, args, kwargs = calls[-1]
    error = None
    try:
        fn(*args, **kwargs)
    except BaseException as e:  # wait for the others before raising
        error = e
    for f in futures:
        try:
            f.result()
        except BaseException as e:
            error = error or e
    if error is not None:
        raise error


def _check_pair(table, buf, name, idx):
    """Checks a table, a row buffer ``buf`` (called ``name`` in errors) and an index list
    that go together; returns the number of indices."""
    _check_table(table, "table")
    _check_table(buf, name)
    _check_index(idx)
    n = idx.numel()
    if buf.dtype != table.dtype:
        raise TypeError(f"{name} has dtype {buf.dtype}, table has {table.dtype}")
    if buf.shape[1] != table.shape[1]:
        raise ValueError(f"{name} has dim {buf.shape[1]}, table has dim {table.shape[1]}")
    if buf.shape[0] < n:
        raise ValueError(f"{name} has {buf.shape[0]} rows, fewer than the {n} indices")
    return n


_COMPILED_DTYPES = (torch.float32, torch.float64)


@numba.njit(cache=True, nogil=True, inline="always")
def _copy_row(dst, a, src, b):
    for j in range(src.shape[1]):
        dst[a, j] = src[b, j]


@numba.njit(cache=True, nogil=True)
def _rows_kernel(scatter, table, idx, buf):
    """``scatter``: ``table[idx[i]] = buf[i]``, else ``buf[i] = table[idx[i]]``; returns the
    position of the first index outside the table (rows before it copied), or -1."""
    n_rows = table.shape[0]
    for i in range(idx.shape[0]):
        g = idx[i]
        if g < 0 or g >= n_rows:
            return i
        if scatter:
            _copy_row(table, g, buf, i)
        else:
            _copy_row(buf, i, table, g)
    return -1


# The two loops stay apart: with the bounds check and the copy in one shared inlined
# helper the gather measured 25 % slower (bench_software --parts move, 1 thread).
@numba.njit(cache=True, nogil=True)
def _keys_kernel(scatter, table, keys, row_bits, global_base, buf):
    """:func:`_rows_kernel` with the rows named by checked keys: row ``global_base[key >>
    row_bits] + (key & (2**row_bits - 1))``; returns the position of the first key whose row
    falls outside ``table`` (a defence only: the command checks refuse such keys first), or
    -1."""
    n_rows = table.shape[0]
    rmask = (1 << row_bits) - 1
    for i in range(keys.shape[0]):
        k = keys[i]
        g = global_base[k >> row_bits] + (k & rmask)
        if g < 0 or g >= n_rows:
            return i
        if scatter:
            _copy_row(table, g, buf, i)
        else:
            _copy_row(buf, i, table, g)
    return -1


@numba.njit(cache=True, nogil=True)
def _checked_copy_kernel(scatter, keys, key_bits, row_bits, slot_rows, slot_bad, global_base,
                         table, buf):
    """The command's key-list pass (:func:`sw_driver.device_checks._check_keys_kernel`,
    row opcodes), then, only if every key passed, the copy (``scatter``: ``table[row] =
    buf[i]``, else ``buf[i] = table[row]``): one call. Returns the first fault's ``(index,
    cause)``, ``(index, -1)`` for a row outside ``table`` (a defence), or ``(-1, 0)``."""
    none = np.zeros(0, dtype=np.int64)
    i, cause = _check_keys_kernel(keys, key_bits, True, row_bits, slot_rows, slot_bad, none,
                                  none)
    if i >= 0:
        return i, cause
    j = _keys_kernel(scatter, table, keys, row_bits, global_base, buf)
    if j >= 0:
        return j, -1
    return -1, 0


def checked_copy(scatter, table, keys, key_bits, row_bits, slot_rows, slot_bad, global_base,
                 buf, pool=None, *, min_chunk=MIN_CHUNK_ROWS):
    """The ``model`` transport's ``GATHER`` (``scatter`` false: ``buf[i] = row of keys[i]``)
    or ``WRITE_BACK`` (``buf[i]`` written to the row of ``keys[i]``): the key-list checks
    (``slot_rows``/``slot_bad``: numpy per-slot TABLE_ROWS and bad-slot flags, from
    :func:`sw_driver.device_checks.slot_arrays`), then the copy if they pass, compiled; one
    call for a single chunk, else the checks here and the copy on several threads (gather:
    ``torch.index_select`` of the checked rows; write-back: compiled chunks on ``pool``).

    Returns ``None`` when the tensors do not suit the compiled copy (nothing checked or
    copied), ``(index, cause)`` of the first bad key (nothing copied), or ``(-1, 0)``."""
    t_np = _rows_array(table)
    b_np = _rows_array(buf) if t_np is not None else None
    if b_np is None or keys.dtype != torch.int64 or not keys.is_contiguous():
        return None
    k_np = keys.numpy()
    base = np.ascontiguousarray(torch.as_tensor(global_base, dtype=torch.int64).numpy())
    bounds = chunk_bounds(keys.numel(), _pool_width(pool), min_chunk)
    if len(bounds) <= 1 or pool is None:
        i, cause = _checked_copy_kernel(scatter, k_np, key_bits, row_bits, slot_rows, slot_bad,
                                        base, t_np, b_np)
    elif not scatter:
        # Several threads: the check maps the keys to host rows and torch's index_select
        # copies them on its intra-op threads, which wake faster than a pool's (measured:
        # a 20 K-row gather split over two pool threads was no faster than one).
        n = keys.numel()
        rows = np.empty(n, dtype=np.int64)
        i, cause = _check_keys_kernel(k_np, key_bits, True, row_bits, slot_rows, slot_bad,
                                      base, rows)
        if i < 0:
            torch.index_select(table, 0, torch.from_numpy(rows), out=buf[:n])
    else:
        none = np.zeros(0, dtype=np.int64)
        i, cause = _check_keys_kernel(k_np, key_bits, True, row_bits, slot_rows, slot_bad,
                                      none, none)
        if i < 0:
            _keyed(True, table, keys, row_bits, base, buf, pool, min_chunk, "checked_copy")
    if cause == -1:
        raise IndexError(f"checked_copy: key {int(k_np[i]):#x} at position {i} names a row "
                         f"outside the table of {t_np.shape[0]} rows")
    return int(i), int(cause)


def _keyed_copy(scatter, table_np, keys_np, row_bits, base_np, buf_np, what):
    i = int(_keys_kernel(scatter, table_np, keys_np, row_bits, base_np, buf_np))
    if i >= 0:
        raise IndexError(f"{what}: key {int(keys_np[i]):#x} at position {i} names a row "
                         f"outside the table of {table_np.shape[0]} rows")


def _keyed(scatter, table, keys, row_bits, global_base, buf, pool, min_chunk, what):
    t_np = _rows_array(table)
    b_np = _rows_array(buf) if t_np is not None else None
    if b_np is None or keys.dtype != torch.int64 or not keys.is_contiguous():
        return False
    k_np = keys.numpy()
    base = np.ascontiguousarray(torch.as_tensor(global_base, dtype=torch.int64).numpy())
    calls = [(_keyed_copy, (scatter, t_np, k_np[a:b], row_bits, base, b_np[a:b], what), {})
             for a, b in chunk_bounds(keys.numel(), _pool_width(pool), min_chunk)]
    _run(pool, calls)
    return True


def gather_keys(table, keys, row_bits, global_base, out, pool=None, *,
                min_chunk=MIN_CHUNK_ROWS):
    """The ``model`` transport's ``GATHER`` copy of keys the command checks passed:
    ``out[i] = table[global_base[table_id] + row]`` with ``(table_id, row)`` the fields of
    ``keys[i]``, compiled, in chunks on ``pool``, without building the row list. Returns
    ``False`` (nothing copied) when the tensors do not suit the compiled copy (dtype other
    than float32/float64, rows not contiguous): the caller then maps the keys to rows and
    uses :func:`gather_rows`."""
    return _keyed(False, table, keys, row_bits, global_base, out, pool,
                  min_chunk, "gather_keys")


def scatter_keys(table, keys, row_bits, global_base, rows, pool=None, *,
                 min_chunk=MIN_CHUNK_ROWS):
    """``WRITE_BACK``'s copy, the inverse of :func:`gather_keys` (keys duplicate-free);
    ``False`` when the compiled copy does not apply."""
    return _keyed(True, table, keys, row_bits, global_base, rows, pool,
                  min_chunk, "scatter_keys")


def _rows_array(t):
    """A numpy view of a 2-D tensor with contiguous rows for the compiled copy, or ``None``."""
    if t.dtype not in _COMPILED_DTYPES or (t.shape[1] > 1 and t.stride(1) != 1):
        return None
    return t.detach().numpy()


def _compiled_copy(scatter, table_np, idx, buf_np, what):
    idx_np = idx.numpy()
    i = int(_rows_kernel(scatter, table_np, idx_np, buf_np))
    if i >= 0:
        raise IndexError(f"{what}: index {int(idx_np[i])} at position {i} is out of range for "
                         f"a table of {table_np.shape[0]} rows")


def _compiled_calls(scatter, table, idx, buf, bounds, what):
    """One compiled call per chunk, or ``None`` when the tensors do not suit it."""
    t_np = _rows_array(table)
    b_np = _rows_array(buf) if t_np is not None else None
    if b_np is None or not idx.is_contiguous():
        return None
    return [(_compiled_copy, (scatter, t_np, idx[a:b], b_np[a:b], what), {})
            for a, b in bounds]


def gather_rows(table, idx, out, pool=None, *, min_chunk=MIN_CHUNK_ROWS, compiled=True):
    """``out[:n] = table[idx]`` with ``n = len(idx)``, in parallel chunks on ``pool``.

    Parameters
    ----------
    table : tensor ``[R, D]`` in host memory (any dtype; ``float32`` in the driver)
    idx : int64 (or int32) tensor ``[n]`` on the CPU; duplicates are fine
    out : tensor ``[>= n, D]`` in host memory, same dtype as ``table`` (the staging buffer)
    pool : ``ThreadPoolExecutor`` or ``None`` (one chunk per worker; ``None`` = this thread)
    min_chunk : smallest chunk worth handing to another thread
    compiled : use the compiled copy where it applies (float32/float64, contiguous rows)

    Returns ``out[:n]``. An index outside ``[0, R)`` raises ``IndexError`` (torch's
    ``IndexError`` / ``RuntimeError`` on the torch path; other chunks may have been copied
    by then).
    """
    n = _check_pair(table, out, "out", idx)
    dst = out[:n]
    bounds = chunk_bounds(n, _pool_width(pool), min_chunk)
    calls = _compiled_calls(False, table, idx, dst, bounds, "gather_rows") \
        if compiled and n else None
    if calls is None:
        calls = [(torch.index_select, (table, 0, idx[a:b]), {"out": dst[a:b]})
                 for a, b in bounds]
    _run(pool, calls)
    return dst


def scatter_rows(table, idx, rows, pool=None, *, min_chunk=MIN_CHUNK_ROWS, compiled=True):
    """``table[idx] = rows[:len(idx)]`` (``index_copy_``), in parallel chunks on ``pool``.

    ``idx`` should be duplicate-free (the driver's cold lists are): with a duplicate in two
    chunks, which copy lands is unspecified, as for ``index_copy_`` itself (within one chunk
    the compiled copy lets the last one win). An index outside the table raises
    ``IndexError`` (rows before it in its chunk written). ``rows`` is
    ``[>= n, D]`` in host memory with ``table``'s dtype. Returns ``table``.
    """
    n = _check_pair(table, rows, "rows", idx)
    src = rows[:n]
    bounds = chunk_bounds(n, _pool_width(pool), min_chunk)
    calls = _compiled_calls(True, table, idx, src, bounds, "scatter_rows") \
        if compiled and n else None
    if calls is None:
        calls = [(table.index_copy_, (0, idx[a:b], src[a:b]), {}) for a, b in bounds]
    _run(pool, calls)
    return table


# ---------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------

def _interleaved_times(fns, repeat):
    """Run every ``fn`` of ``fns`` (a dict) once per round, ``repeat`` rounds, interleaved so
    that a noisy machine's drift hits all of them alike; returns ``{label: [seconds]}``."""
    times = {label: [] for label in fns}
    for fn in fns.values():
        fn()  # warm up (page faults, thread start)
    for _ in range(repeat):
        for label, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    return times


def bench_gather(rows=1_000_000, dim=64, n=100_000, threads=(1, 2, 4), repeat=15, seed=0,
                 verbose=True):
    """Rows/s of :func:`gather_rows` and :func:`scatter_rows` with 1, 2, ... threads against
    a plain single ``torch.index_select`` / ``index_copy_`` (torch's own intra-op threads,
    ``torch.get_num_threads()``), on a ``float32 [rows, dim]`` table with ``n`` random
    distinct indices. The variants run interleaved, ``repeat`` rounds. Returns
    ``{label: {"median": rows_per_s, "best": rows_per_s}}`` and prints a table when
    ``verbose``."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, dim, generator=g)
    idx = torch.randperm(rows, generator=g)[:n]
    out = torch.empty(n, dim)
    upd = torch.randn(n, dim, generator=g)
    pools = {t: make_pool(t) for t in threads}
    try:
        gathers = {"index_select (baseline)": lambda: torch.index_select(table, 0, idx, out=out)}
        for t in threads:
            gathers[f"gather_rows threads={t}"] = (
                lambda p=pools[t]: gather_rows(table, idx, out, p))
        scatters = {"index_copy_ (baseline)": lambda: table.index_copy_(0, idx, upd)}
        for t in threads:
            scatters[f"scatter_rows threads={t}"] = (
                lambda p=pools[t]: scatter_rows(table, idx, upd, p))
        ref = table[idx]
        times = _interleaved_times(gathers, repeat)
        if not torch.equal(out, ref):
            raise AssertionError("gather_rows gave a wrong result")
        times.update(_interleaved_times(scatters, repeat))
        if not torch.equal(table[idx], upd):
            raise AssertionError("scatter_rows gave a wrong result")
    finally:
        for p in pools.values():
            if p is not None:
                p.shutdown()
    results = {}
    if verbose:
        print(f"gather/scatter: table float32 [{rows}, {dim}], {n} distinct random indices, "
              f"{os.cpu_count()} CPUs, torch intra-op threads {torch.get_num_threads()}, "
              f"{repeat} interleaved rounds")
        print(f"  {'':34s} {'median':>14s} {'best':>14s}")
    for label, ts in times.items():
        ts = sorted(ts)
        med, best = ts[len(ts) // 2], ts[0]
        results[label] = {"median": n / med, "best": n / best}
        if verbose:
            print(f"  {label:34s} {n / med / 1e6:8.2f} Mrow/s {n / best / 1e6:8.2f} Mrow/s"
                  f"   ({n * dim * table.element_size() / med / 1e9:.2f} GB/s median)")
    return results


def main(argv=None):
    """Command line of ``python -m sw_driver.gather``."""
    p = argparse.ArgumentParser(description=bench_gather.__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads for the run (default: torch's choice)")
    a = p.parse_args(argv)
    if a.torch_threads:
        torch.set_num_threads(a.torch_threads)
    bench_gather(rows=a.rows, dim=a.dim, n=a.n, threads=tuple(a.threads), repeat=a.repeat)


if __name__ == "__main__":
    main()

"""Host software speed (CPU): learning, the ``model`` transport's row mover, table init.

``python -m sw_driver.bench_software`` times three host paths and prints what it measures:

* ``learn`` -- :meth:`HotlineDevice.learn` of a mini-batch (default 4096 x 26, tables of
  1 M rows, the default EAL) on the ``model`` transport, with ``torch.set_num_threads(1)``
  and ``2``, idle and with a busy loop in another process loading a core (``--load``);
* ``move`` -- :meth:`HotlineDevice.gather` / :meth:`HotlineDevice.write_back` on the
  ``model`` transport against a plain ``torch.index_select`` / ``index_copy_`` of the same
  rows (default 26 x 100 K rows of dim 64 fp32, about 20 K cold rows a working set);
* ``init`` -- :func:`sw_driver.training.modes.init_table` with 1 thread and with all cores.

Every figure is the median of ``--repeat`` runs (interleaved where two variants are
compared); the machine, thread counts and load are printed with them.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

import torch

from sw_driver.training.resources import cpu_model

__all__ = ["bench_learn", "bench_move", "bench_init", "main"]


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


class _Load:
    """A busy loop in another process (``python -c 'while 1: pass'``) while in the block."""

    def __init__(self, on):
        self.on = on
        self.proc = None

    def __enter__(self):
        if self.on:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def bench_learn(batch=4096, tables=26, rows=1_000_000, repeat=15, threads=(1, 2), load=True,
                seed=0, verbose=True):
    """ms per :meth:`HotlineDevice.learn` of a ``batch x tables`` mini-batch (skewed rows:
    ``rows * u**4``, scrambled), ``model`` transport, default EAL. Each setting
    also runs the proposed driver change (its range check compiled,
    :func:`sw_driver.device_checks.first_bad_lookup`). Returns
    ``{(threads, loaded, variant): median_ms}``."""
    from sw_driver.driver import HotlineDevice

    g = torch.Generator().manual_seed(seed)
    n_batches = 4
    # Skewed rows (a few popular ones, as in click logs): rows * u**4, scrambled.
    u = torch.rand(n_batches, batch, tables, generator=g, dtype=torch.float64)
    sparse = ((u.pow(4) * rows).to(torch.int64) * 2654435761) % rows
    results = {}
    old = torch.get_num_threads()
    loads = (False, True) if load else (False,)
    from sw_driver.device_checks import first_bad_lookup

    def learn_checked(dev, s):
        # HotlineDevice.learn with its range check compiled (the driver change proposed in
        # docs/benchmarks.md): the same calls otherwise.
        s = dev._as_sparse(s, "sparse", "cpu")
        if first_bad_lookup(s, dev._rows_cpu) >= 0:
            dev._raise_first_bad(s, dev._bad_lookups(s), "sparse")
        keys = sparse_keys(s, dev.config)
        hit, slot = dev._transport.learn(keys.reshape(-1))
        return hit.reshape(s.shape), slot.reshape(s.shape)

    from verif.golden import sparse_keys
    variants = {"HotlineDevice.learn": lambda dev, s: dev.learn(s),
                "with compiled range check": learn_checked}
    try:
        for loaded in loads:
            with _Load(loaded):
                for t in threads:
                    torch.set_num_threads(t)
                    for label, call in variants.items():
                        dev = HotlineDevice([rows] * tables, 64, transport="model",
                                            gather_threads=1)
                        call(dev, sparse[0])      # compile / warm up
                        times = []
                        for i in range(repeat):
                            t0 = time.perf_counter()
                            call(dev, sparse[i % n_batches])
                            times.append(time.perf_counter() - t0)
                        dev.close()
                        med = results[(t, loaded, label)] = _median(times) * 1e3
                        if verbose:
                            print(f"  {label:26s} {batch} x {tables}: torch threads {t}, "
                                  f"{'loaded' if loaded else 'idle  '}: median {med:7.2f} ms "
                                  f"(best {min(times) * 1e3:.2f}, worst {max(times) * 1e3:.2f})")
    finally:
        torch.set_num_threads(old)
    return results


def bench_move(tables=26, rows=100_000, dim=64, cold=20_000, repeat=15, threads=(1, 2),
               gather_threads=None, seed=0, verbose=True):
    """Rows/s of :meth:`HotlineDevice.gather` / :meth:`write_back` (``model`` transport)
    against ``torch.index_select`` / ``index_copy_`` of the same rows, interleaved, with as
    many threads on each side (torch's intra-op threads ``t``; the driver's
    ``gather_threads``, default ``t`` too). The
    schedule is a real one: ``cold`` distinct random rows missed after a small learned hot
    set. Returns ``{(threads, name): median_s}``."""
    from sw_driver.driver import HotlineDevice

    g = torch.Generator().manual_seed(seed)
    total = tables * rows
    host = torch.randn(total, dim, generator=g)
    results = {}
    old = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            gt = gather_threads or t
            dev = HotlineDevice([rows] * tables, dim, transport="model", gather_threads=gt)
            dev.learn(torch.zeros(1, tables, dtype=torch.int64))
            dev.freeze()
            per_table = max(1, cold // tables)
            sparse = torch.stack([torch.randperm(rows, generator=g)[:per_table]
                                  for _ in range(tables)], 1)
            sched = dev.schedule(sparse, sparse.shape[0])
            n = sched.n_cold
            idx = sched.cold_global_rows
            staging = dev.new_staging(n)
            out = torch.empty(n, dim)
            upd = torch.randn(n, dim, generator=g)
            pairs = [
                {"index_select": lambda: torch.index_select(host, 0, idx, out=out),
                 "gather": lambda: dev.gather(sched, host, staging)},
                {"index_copy_": lambda: host.index_copy_(0, idx, upd),
                 "write_back": lambda: dev.write_back(sched, upd, host)},
            ]
            times = {}
            for fns in pairs:   # each pair interleaved, the order swapped every round
                times.update({k: [] for k in fns})
                for fn in fns.values():
                    fn()
                for r in range(repeat):
                    for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                        t0 = time.perf_counter()
                        fns[k]()
                        times[k].append(time.perf_counter() - t0)
            dev.gather(sched, host, staging)
            assert torch.equal(staging[:n], host[idx])
            dev.close()
            for k, ts in times.items():
                results[(t, k)] = _median(ts)
            if verbose:
                print(f"  {n} cold rows of {dim} x fp32 from {tables} x {rows} rows, torch "
                      f"threads {t}, gather_threads {gt}:")
                for a, b in (("gather", "index_select"), ("write_back", "index_copy_")):
                    ra, rb = results[(t, a)], results[(t, b)]
                    print(f"    {a:10s} {ra * 1e6:8.0f} us ({n / ra / 1e6:6.2f} Mrow/s)   "
                          f"{b:12s} {rb * 1e6:8.0f} us ({n / rb / 1e6:6.2f} Mrow/s)   "
                          f"ratio {rb / ra:.2f}")
    finally:
        torch.set_num_threads(old)
    return results


def bench_init(tables=26, rows=1_000_000, dim=64, repeat=3, threads=None, verbose=True):
    """Seconds of :func:`init_table` for ``tables x rows x dim`` (fp32) with 1 thread and
    with ``threads`` (default: all cores). Returns ``{threads: median_s}``."""
    from sw_driver.training import modes

    sizes = [rows] * tables
    out = torch.empty(tables * rows, dim)
    threads = threads or [1, os.cpu_count() or 1]
    results = {}
    has_threads = "threads" in modes.init_table.__code__.co_varnames
    for t in dict.fromkeys(threads):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            if has_threads:
                modes.init_table(sizes, dim, 0, out=out, threads=t)
            else:
                modes.init_table(sizes, dim, 0, out=out)
            times.append(time.perf_counter() - t0)
        results[t] = _median(times)
        if verbose:
            print(f"  init_table {tables} x {rows} x {dim} fp32 ({out.numel() * 4 / 2**30:.1f} "
                  f"GiB): threads {t}: median {results[t]:.2f} s (best {min(times):.2f})")
    return results


def main(argv=None):
    """Command line of ``python -m sw_driver.bench_software``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["learn", "move", "init"],
                   choices=["learn", "move", "init"])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--no-load", action="store_true", help="skip the loaded learn runs")
    p.add_argument("--init-rows", type=int, default=1_000_000)
    p.add_argument("--move-rows", type=int, default=100_000)
    p.add_argument("--cold", type=int, default=20_000)
    a = p.parse_args(argv)
    cpu = cpu_model() or platform.processor() or "unknown CPU"
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    if "learn" in a.parts:
        print("learn (HotlineDevice.learn, model transport, default EAL):")
        bench_learn(repeat=a.repeat, load=not a.no_load)
    if "move" in a.parts:
        print("row mover (HotlineDevice.gather / write_back, model transport):")
        bench_move(rows=a.move_rows, cold=a.cold, repeat=a.repeat)
    if "init" in a.parts:
        print("table initialisation (init_table):")
        bench_init(rows=a.init_rows, repeat=max(1, a.repeat // 5))


if __name__ == "__main__":
    main()

"""Time the three modes on synthetic, Criteo-shaped data: ms per mini-batch and the phase
breakdown of Hotline working sets.

``python -m sw_driver.training.bench --device cuda`` (defaults: 26 tables x 2**20 rows x 64,
batch 4096, working set 4, 75 % hot samples, hot budget 2**20 rows). The same code is the API a
benchmark script can call: :func:`bench_modes`.

Method, per mode, on one shared host table (pinned on CUDA; values are irrelevant to timing):
build a :class:`~sw_driver.training.Trainer`; ``hotline`` first learns popularity from
``learn_batches`` mini-batches (:meth:`Trainer.learn`, no training) and freezes; then
``warmup`` mini-batches are trained and discarded; then ``batches`` mini-batches are timed
wall-clock between two device synchronisations, and :meth:`Trainer.step_timings` gives the
phase breakdown of the timed part.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time

import torch

from sw_driver.data import SyntheticClickGenerator

from .modes import MODES, init_table
from .trainer import Trainer

__all__ = ["bench_modes", "synthetic_criteo"]


def synthetic_criteo(table_rows=(2**20,) * 26, n=4096 * 40, p_hot=0.75, head_rows=1024,
                     seed=0):
    """``n`` synthetic samples (13 dense, one row per table) with ``p_hot`` of the samples
    drawn from the ``head_rows`` most popular rows of each table (see docs/data.md)."""
    gen = SyntheticClickGenerator(tuple(table_rows), p_hot=p_hot, head_rows=head_rows,
                                  seed=seed)
    return gen.batch(n)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def bench_modes(modes=MODES, *, device="cuda", table_rows=(2**20,) * 26, dim=64,
                batch_size=4096, working_set=4, hot_budget=2**20, p_hot=0.75, head_rows=1024,
                learn_batches=8, warmup=8, batches=32, hybrid_batches=8, bottom=(512, 256),
                top=(512, 256), gather_threads=8, lr=0.1, seed=0, data=None, verbose=True):
    """Time ``modes`` and return ``{mode: {"ms_per_batch", "samples_per_s", "timings",
    ...}}`` (hotline adds ``popular_pct``, ``hot_rows``, ``counters``).

    ``batches`` mini-batches are timed (``hybrid_batches`` for the slow hybrid mode; the hotline
    count is rounded up to whole working sets). ``data``: a ClickDataset to use instead of
    :func:`synthetic_criteo`; it must hold ``learn_batches + warmup + batches`` mini-batches.
    """
    table_rows = tuple(int(r) for r in table_rows)
    n_batches = learn_batches + warmup + max(batches, hybrid_batches)
    n_batches = learn_batches + math.ceil((n_batches - learn_batches) / working_set) * working_set
    t0 = time.perf_counter()
    if data is None:
        data = synthetic_criteo(table_rows, n_batches * batch_size, p_hot, head_rows, seed)
    cuda = torch.device(device).type == "cuda"
    host = init_table(table_rows, dim, seed, pin=cuda)
    if verbose:
        print(f"bench: {len(table_rows)} tables, {sum(table_rows):,} rows x {dim} "
              f"({host.numel() * 4 / 2**30:.2f} GiB), batch {batch_size}, W {working_set}, "
              f"{len(data)} samples; setup {time.perf_counter() - t0:.1f} s", flush=True)
    N = batch_size
    out = {}
    for mode in modes:
        t_mode = time.perf_counter()
        tr = Trainer(table_rows, data.n_dense, mode, device, dim=dim, bottom=bottom, top=top,
                     lr=lr, batch_size=N, working_set=working_set, hot_budget=hot_budget,
                     seed=seed, gather_threads=gather_threads, host_table=host,
                     trace_working_set=1)
        try:
            start = learn_batches * N
            if mode == "hotline":
                tr.learn(data.sparse[:start])
                tr.freeze()
                w = math.ceil(warmup / working_set) * working_set
                b = math.ceil(batches / working_set) * working_set
            else:
                w, b = warmup, (hybrid_batches if mode == "hybrid" else batches)
            tr.train_range(data, start, start + w * N)
            tr.reset_timings()
            if mode == "hotline":
                tr.store.dev.reset_counters()
            _sync(device)
            t1 = time.perf_counter()
            tr.train_range(data, start + w * N, start + (w + b) * N)
            _sync(device)
            sec = time.perf_counter() - t1
            r = {"ms_per_batch": sec * 1e3 / b, "samples_per_s": b * N / sec, "batches": b,
                 "timings": tr.step_timings()}
            if mode == "hotline":
                c = tr.counters()
                r["counters"] = c
                r["popular_pct"] = 100.0 * c["popular_inputs"] / max(1, c["inputs"])
                r["hot_rows"] = tr.store.hot_rows
                r["timeline"] = tr.timeline()
            out[mode] = r
            if verbose:
                extra = (f", popular {r['popular_pct']:.1f} %, hot rows {r['hot_rows']:,}"
                         if mode == "hotline" else "")
                print(f"{mode:9s} {r['ms_per_batch']:8.2f} ms/mini-batch "
                      f"({r['samples_per_s']:,.0f} samples/s){extra}; mode total "
                      f"{time.perf_counter() - t_mode:.1f} s", flush=True)
                for kind, v in r["timings"].items():
                    ph = " ".join(f"{p}={x['mean_ms']:.2f}" for p, x in v["phases"].items())
                    print(f"    {kind} (n={v['count']}, mean ms): {ph}")
        finally:
            tr.close()
            del tr
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    if verbose and "gpu-only" in out:
        g = out["gpu-only"]["ms_per_batch"]
        for m, r in out.items():
            print(f"  {m:9s} {r['ms_per_batch'] / g:6.2f} x gpu-only", end="")
            if "hybrid" in out and m != "hybrid":
                print(f", {out['hybrid']['ms_per_batch'] / r['ms_per_batch']:6.2f} x faster "
                      f"than hybrid", end="")
            print()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--tables", type=int, default=26)
    p.add_argument("--rows", type=int, default=2**20, help="rows per table")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--working-set", type=int, default=4)
    p.add_argument("--hot-budget", type=int, default=2**20)
    p.add_argument("--p-hot", type=float, default=0.75)
    p.add_argument("--head-rows", type=int, default=1024)
    p.add_argument("--learn-batches", type=int, default=8)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--batches", type=int, default=32)
    p.add_argument("--hybrid-batches", type=int, default=8)
    p.add_argument("--bottom", default="512,256")
    p.add_argument("--top", default="512,256")
    p.add_argument("--gather-threads", type=int, default=8)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    res = bench_modes(tuple(a.modes.split(",")), device=a.device,
                      table_rows=(a.rows,) * a.tables, dim=a.dim, batch_size=a.batch_size,
                      working_set=a.working_set, hot_budget=a.hot_budget, p_hot=a.p_hot,
                      head_rows=a.head_rows, learn_batches=a.learn_batches, warmup=a.warmup,
                      batches=a.batches, hybrid_batches=a.hybrid_batches,
                      bottom=tuple(int(x) for x in a.bottom.split(",")),
                      top=tuple(int(x) for x in a.top.split(",")),
                      gather_threads=a.gather_threads)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return res


if __name__ == "__main__":
    main()

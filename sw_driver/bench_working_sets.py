"""Working sets at the paper's scale: how often the de-dup rule ends a working set early, and
what the hot table costs, with the RTL's default de-dup table and with the table sized from
the working set (``hotline_spec.config.fragmenter_for_working_set``, the driver's default
when it is given a working-set hint). Driver only (``model`` transport, no training).

Workload (defaults): 26 tables x 1,000,000 rows, mini-batches of 4096, working sets of 4
mini-batches, the synthetic generator calibrated (``calibrate``, as ``bench_training`` does:
hot budget 2**21, rows seen twice) to 75 % popular inputs. The EAL learns the first
``--learn-batches`` mini-batches and freezes; then ``--working-sets`` working sets' worth of
fresh inputs are scheduled one after another, each starting at the first input the previous
one left (docs/spec.md 7.5), once per de-dup table and policy.

    python -m sw_driver.bench_working_sets [--rows 1000000 --tables 26 --batch-size 4096
        --working-set 4 --target-popular 0.75 --hot-budget 2097152 --learn-batches 8
        --working-sets 32 --policies lfu,srrip --cold-shares 1.0,0.1 --dim 64 --json PATH]

Prints one line per (policy, de-dup table): working sets, early ends (count and rate),
inputs and cold rows per working set, the fullest bank as a share of the rule's limit, and
ms per schedule; and per policy the hot rows and the hot table's device memory with the
``entry`` layout (``entries`` rows) and the ``compact`` one (``n_hot`` rows).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from hotline_spec.config import FragmenterConfig, fragmenter_for_working_set
from verif.golden import dedup_bank, make_keys

from sw_driver.data.synthetic import calibrate
from sw_driver.driver import HotlineDevice
from sw_driver.training.modes import eal_config_for_budget

__all__ = ["main", "run"]


def _mib(n_bytes):
    return n_bytes / 2**20


def schedule_stream(dev, stream, ws_inputs, micro_batch_size):
    """Schedule ``stream`` (``[n, T]``) as consecutive working sets of at most ``ws_inputs``
    inputs, each starting where the previous one ended; returns per-working-set records."""
    out, pos, n = [], 0, stream.shape[0]
    fr, T = dev.fragmenter, stream.shape[1]
    limit = fr.bank_capacity - T
    while pos < n:
        ws = stream[pos:pos + ws_inputs]
        t0 = time.perf_counter()
        s = dev.schedule(ws, micro_batch_size)
        ms = (time.perf_counter() - t0) * 1e3
        banks = dedup_bank(make_keys(s.cold_tables, s.cold_rows, dev.config), fr)
        fullest = int(torch.bincount(banks, minlength=fr.dedup_banks).max()) if s.n_cold else 0
        out.append({"inputs": s.n_inputs, "given": int(ws.shape[0]), "early": s.ended_early,
                    "cold": s.n_cold, "popular": s.n_popular, "fullest": fullest / limit,
                    "ms": ms})
        pos += s.n_inputs
    return out


def run(args, say=print):
    sizes = (args.rows,) * args.tables
    N, W, T = args.batch_size, args.working_set, args.tables
    n_learn = args.learn_batches * N
    t0 = time.perf_counter()
    cal = calibrate(args.target_popular, args.hot_budget, sizes, n_learn=n_learn,
                    n_measure=max(4096, n_learn // 2), min_count=2, seed=args.seed)
    say(f"calibrated: p_hot {cal.p_hot:.3f}, head_rows {cal.head_rows}, held-out oracle share "
        f"{cal.share:.3f} at hot budget {args.hot_budget} ({time.perf_counter() - t0:.1f} s)")
    gen = cal.generator.replace(stream=1)
    learn = torch.from_numpy(gen.sparse(n_learn))
    stream = torch.from_numpy(gen.sparse(args.working_sets * W * N))
    results = {"settings": {k: getattr(args, k) for k in (
        "rows", "tables", "batch_size", "working_set", "target_popular", "hot_budget",
        "learn_batches", "working_sets", "dim", "seed")},
        "calibration": {"p_hot": cal.p_hot, "head_rows": cal.head_rows, "share": cal.share},
        "machine": platform.processor() or platform.machine(), "runs": []}
    for policy in args.policies.split(","):
        eal = eal_config_for_budget(args.hot_budget, sizes, policy=policy)
        tables = {"default": FragmenterConfig(eal=eal)}
        for share in (float(x) for x in args.cold_shares.split(",")):
            name = "sized" if share == 1.0 else f"sized_share{share:g}"
            tables[name] = fragmenter_for_working_set(eal, W * N, T, cold_share=share)
        hot_n = None
        for name, frag in tables.items():
            with HotlineDevice(sizes, args.dim, config=eal, fragmenter=frag,
                               gather_threads=1) as dev:
                for a in range(0, n_learn, N):
                    dev.learn(learn[a:a + N])
                hot = dev.freeze()
                hot_n = hot.n
                recs = schedule_stream(dev, stream, W * N, N)
            n_ws = len(recs)
            early = sum(r["early"] for r in recs)
            full = [r for r in recs if r["given"] == W * N]   # not the stream's tail
            row = {"policy": policy, "dedup": name, "cold_capacity": frag.cold_capacity,
                   "dedup_sets": frag.dedup_sets, "working_sets": n_ws, "early_ends": early,
                   "early_rate": early / n_ws,
                   "early_rate_full": sum(r["early"] for r in full) / max(1, len(full)),
                   "inputs_per_ws": sum(r["inputs"] for r in recs) / n_ws,
                   "mini_batches_per_ws": sum(r["inputs"] for r in recs) / n_ws / N,
                   "cold_per_ws": sum(r["cold"] for r in recs) / n_ws,
                   "max_cold": max(r["cold"] for r in recs),
                   "popular_share": sum(r["popular"] for r in recs) / stream.shape[0],
                   "fullest_bank": max(r["fullest"] for r in recs),
                   "ms_per_schedule": sum(r["ms"] for r in recs) / n_ws,
                   "hot_rows": hot_n}
            results["runs"].append(row)
            say(f"policy={policy} dedup={name} cold_capacity={frag.cold_capacity} "
                f"working_sets={n_ws} early_ends={early} early_rate={row['early_rate']:.3f} "
                f"mini_batches_per_ws={row['mini_batches_per_ws']:.2f} "
                f"cold_rows_per_ws={row['cold_per_ws']:.0f} max_cold={row['max_cold']} "
                f"popular={row['popular_share']:.3f} "
                f"fullest_bank={row['fullest_bank']:.2f}_of_limit "
                f"ms_per_schedule={row['ms_per_schedule']:.1f}")
        row_bytes = args.dim * 4
        mem = {"policy": policy, "entries": eal.entries, "hot_rows": hot_n,
               "entry_layout_mib": _mib(eal.entries * row_bytes),
               "compact_layout_mib": _mib(hot_n * row_bytes)}
        results.setdefault("hot_table", []).append(mem)
        say(f"policy={policy} hot_rows={hot_n} hot_table entry_layout="
            f"{mem['entry_layout_mib']:.1f}MiB ({eal.entries} entries) compact_layout="
            f"{mem['compact_layout_mib']:.1f}MiB (dim {args.dim}, float32)")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sw_driver.bench_working_sets",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows per table")
    p.add_argument("--tables", type=int, default=26)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--working-set", type=int, default=4)
    p.add_argument("--target-popular", type=float, default=0.75)
    p.add_argument("--hot-budget", type=int, default=2**21)
    p.add_argument("--learn-batches", type=int, default=8)
    p.add_argument("--working-sets", type=int, default=32,
                   help="working sets' worth of inputs to schedule")
    p.add_argument("--policies", default="lfu,srrip")
    p.add_argument("--cold-shares", default="1.0,0.1",
                   help="cold_share values of the sized de-dup tables (1.0: the driver's "
                        "default, every lookup cold)")
    p.add_argument("--dim", type=int, default=64, help="for the hot-table memory figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = run(args)
    results["seconds"] = time.perf_counter() - t0
    print(f"seconds={results['seconds']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()

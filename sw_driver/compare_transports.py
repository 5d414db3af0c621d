"""Run the same driver calls on two transports and compare every row: ``python -m
sw_driver.compare_transports``.

Learns popularity on a sample of the Criteo sample's mini-batches (synthetic data when it is
absent), freezes, and for the first working sets schedules, gathers the cold rows, changes
them as a training step would and writes them back; once on ``model`` (the golden model and
CPU threads) and once on ``sim`` (the Verilated accelerator, its DMA engines moving the rows
in simulated host memory). Prints whether every learn result, hot row, schedule, gathered
row, the final host table and the device counters are identical, and how long each took.
The categorical values are hashed into tables of ``--table-rows`` rows so that the tables fit
the simulated host memory.
"""

import argparse
import sys
import time

import torch

from hotline_spec.config import DEFAULT_DEVICE
from verif.golden import iter_working_sets
from verif.workload import load_criteo_or_synthetic, split_learn_sample

from .driver import HotlineDevice


def run(transport, data, args):
    """The driver calls on one transport; returns everything they produced."""
    n_tables = data.sparse.shape[1]
    table_rows = [min(args.table_rows, int(r)) for r in data.table_sizes]
    learn_ids, rest_ids = split_learn_sample(len(data), args.batch_size, args.sample_rate,
                                             args.seed)
    rows_of = lambda ids: torch.cat([torch.arange(b * args.batch_size,
                                                  min(len(data), (b + 1) * args.batch_size))
                                     for b in ids])
    sparse = data.sparse
    out = {"gathered": [], "schedules": []}
    started = time.perf_counter()
    with HotlineDevice(table_rows, args.dim, config=DEFAULT_DEVICE, transport=transport,
                       transport_options={"shm_size": args.memory_mb << 20}
                       if transport == "sim" else None) as dev:
        host = dev.alloc_host((sum(table_rows), args.dim))
        g = torch.Generator().manual_seed(args.seed)
        host.copy_(torch.randn(sum(table_rows), args.dim, generator=g))
        hit, slot = dev.learn(sparse[rows_of(learn_ids)])
        out["learn"] = (hit.clone(), slot.clone())
        out["hot"] = dev.freeze().global_rows.clone()
        sets = list(iter_working_sets(sparse[rows_of(rest_ids)], args.batch_size,
                                      args.working_set))[:args.working_sets]
        for ws in sets:
            sched = dev.schedule(ws, args.batch_size)
            out["schedules"].append((sched.cold_global_rows.clone(), sched.remapped.clone()))
            staging = dev.new_staging(sched.n_cold)
            rows = dev.gather(sched, host, staging).clone()
            out["gathered"].append(rows)
            dev.write_back(sched, rows * 0.5 + 1.0, host)      # a stand-in training step
        out["table"] = host.clone()
        out["counters"] = dev.counters().as_dict()
        out["device_counters"] = {k: v for k, v in dev.device_counters().items()
                                  if "cycles" not in k and k != "bytes_read"}
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transports", default="model,sim", help="two transports (default model,sim)")
    p.add_argument("--max-rows", type=int, default=2400, help="inputs of the sample to use")
    p.add_argument("--table-rows", type=int, default=8192, help="rows per table at most")
    p.add_argument("--dim", type=int, default=16, help="embedding dimension (fp32)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--working-set", type=int, default=4, help="mini-batches per working set")
    p.add_argument("--working-sets", type=int, default=2, help="working sets to move")
    p.add_argument("--sample-rate", type=float, default=0.1)
    p.add_argument("--memory-mb", type=int, default=64, help="simulated host memory (sim)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    names = args.transports.split(",")
    if len(names) != 2:
        p.error(f"--transports needs two names, not {args.transports!r}")
    data, description, _ = load_criteo_or_synthetic(max_rows=args.max_rows, seed=args.seed)
    data.sparse = data.sparse % torch.tensor([min(args.table_rows, int(r))
                                              for r in data.table_sizes])
    print(f"compare transports {names[0]} and {names[1]} on {description}: {len(data)} inputs, "
          f"tables of at most {args.table_rows} rows, dim {args.dim}")
    results = [run(name, data, args) for name in names]
    a, b = results
    checks = {
        "learn results": all(torch.equal(x, y) for x, y in zip(a["learn"], b["learn"])),
        "hot rows": torch.equal(a["hot"], b["hot"]),
        "schedules": all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
                         for x, y in zip(a["schedules"], b["schedules"])),
        "gathered rows": all(torch.equal(x, y) for x, y in zip(a["gathered"], b["gathered"])),
        "host table after write-back": torch.equal(a["table"], b["table"]),
        "driver counters": a["counters"] == b["counters"],
        "device counters (lookups, hits, rows, bytes written, commands)":
            a["device_counters"] == b["device_counters"],
    }
    rows = sum(x.shape[0] for x in a["gathered"])
    for what, same in checks.items():
        print(f"  {what:64s} {'identical' if same else 'DIFFERENT'}")
    print(f"  {rows} cold rows gathered and written back in {len(a['gathered'])} working sets; "
          f"{names[0]} {a['seconds']:.1f} s, {names[1]} {b['seconds']:.1f} s")
    if not all(checks.values()):
        print(f"  {names[0]} counters {a['device_counters']}\n  {names[1]} counters "
              f"{b['device_counters']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

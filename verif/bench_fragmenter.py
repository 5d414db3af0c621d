"""Throughput of the fragment chain (lookup engine -> classifier -> fragmenter):
``python -m verif.bench_fragmenter`` (``make bench-fragmenter``).

Runs the committed default RTL (``rtl/hotline_fragment_chain.v``; ``--config``/``--dedup``
generate another), cocotb + Verilator, every
output checked against the golden model as in the tests, no idle cycles and no
back-pressure) on:

* ``calibrated``: 4 x 4096 Criteo-like inputs, 26 tables, one working set, from the
  generator calibrated so that the EAL (4096 entries) learned on 4096 inputs finds about
  75 % of them popular (``verif.fragment_workload``);
* ``criteo`` / ``avazu``: the real samples (learn on 3000 inputs, fragment the next 5000 in
  working sets of 4 x 512);
* ``uniform``: 2048 inputs of uniformly random rows, nothing learned: every lookup is cold
  (the worst case for the de-dup banks).

Prints, per workload, lookups per cycle (and per lane), cycles per working set, the drain
latency (last key in -> last summary out), what the cycles went to (the fragmenter's stall
counters), and the on-chip memory of the de-dup table and the buffers.
"""

import argparse
import json
import sys
import time

import torch

from hotline_spec.config import DEFAULT_FRAGMENTER, FRAGMENTER_CONFIGS
from hotline_hw.fragmenter.layouts import (classified_beat, cold_lane, index_lane, lanes_of,
                                           remap_lane, summary_layout)
from hotline_hw.layouts import lookup_beat
from verif.fragment_workload import calibrated_criteo_like
from verif.golden import AccessLogger, fragment, sparse_keys
from verif.tb.runner import run_fragment_case


def memory_bits(fcfg=DEFAULT_FRAGMENTER):
    """On-chip bits: the de-dup table and every FIFO of the chain."""
    outs = {name: lanes_of(layout(fcfg), fcfg).size * fcfg.out_depth
            for name, layout in (("remapped", remap_lane), ("cold", cold_lane),
                                 ("popular", index_lane), ("non_popular", index_lane))}
    outs["summary"] = summary_layout(fcfg).size * fcfg.out_depth
    return {"dedup_table": fcfg.dedup_memory_bits, **{f"fifo_{k}": v for k, v in outs.items()},
            "fifo_keys": lookup_beat(fcfg.eal).size * fcfg.key_fifo_depth,
            "fifo_input": classified_beat(fcfg).size * 4}


def workloads(names, calibrated_inputs=4 * 4096):
    out = {}
    if "calibrated" in names:
        learn, job = calibrated_criteo_like(4096, calibrated_inputs)
        out["calibrated"] = (learn, job, calibrated_inputs)
    for name in ("criteo", "avazu"):
        if name in names:
            from sw_driver.data import read_avazu, read_criteo
            from sw_driver.data.locate import find_shared_data
            folder = find_shared_data("criteo_kaggle_8k" if name == "criteo" else "avazu_9k")
            if folder is None:
                print(f"{name}: the real sample is missing; skipped", file=sys.stderr)
                continue
            reader = read_criteo if name == "criteo" else read_avazu
            data = reader(folder, split="train", max_rows=8000)
            out[name] = (data.sparse[:3000], data.sparse[3000:8000], 4 * 512)
    if "uniform" in names:
        g = torch.Generator().manual_seed(0)
        out["uniform"] = (None, torch.randint(0, 1 << 20, (2048, 26), generator=g), 2048)
    return out


def run(names, fcfg=DEFAULT_FRAGMENTER, calibrated_inputs=4 * 4096, seed=1):
    lanes = fcfg.eal.lanes
    rows = []
    for name, (learn, job, ws) in workloads(names, calibrated_inputs).items():
        logger = AccessLogger(fcfg.eal)
        if learn is not None:
            logger.learn(sparse_keys(learn, fcfg.eal))
        share = fragment(job, logger, 1).n_popular / len(job)
        started = time.perf_counter()
        report = run_fragment_case(fcfg, learn, [{"sparse": job, "ws_inputs": ws}], seed=seed,
                                   name=f"bench_{name}")
        wall = time.perf_counter() - started
        if report["mismatches"]:
            raise AssertionError(f"{name}: the RTL disagreed with the golden model: "
                                 f"{report['first_mismatches'][:2]}")
        r = report["jobs"][0]
        c = r["counters"]
        per_ws = [b - a for a, b in zip([0] + r["summary_cycles"][:-1], r["summary_cycles"])]
        rows.append({
            "workload": name, "inputs": r["inputs"], "tables": r["n_tables"],
            "popular_share": round(share, 3), "working_sets": r["working_sets"],
            "early_ends": r["early_ends"], "cold_rows": r["golden_cold"],
            "lookups": r["lookups"], "cycles": r["cycles"],
            "lookups_per_cycle": round(r["lookups"] / r["cycles"], 3),
            "share_of_lanes": round(r["lookups"] / r["cycles"] / lanes, 3),
            "cycles_per_working_set": per_ws, "drain_cycles": r["drain_cycles"],
            "stalls": {k: c[k] for k in ("stall_input", "stall_bank", "stall_probe",
                                         "stall_output")},
            "run_cycles": c["run_cycles"], "sim_cycles_per_s": round(report["total_cycles"] / wall),
            "build_s": round(report["build_seconds"], 1)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="calibrated,criteo,avazu,uniform",
                   help="comma-separated subset of calibrated, criteo, avazu, uniform")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--config", default="default", choices=sorted(FRAGMENTER_CONFIGS),
                   help="named FragmenterConfig (default: the committed RTL's)")
    p.add_argument("--dedup", metavar="BANKS,SETS,WAYS",
                   help="override the de-dup geometry (generates and builds that RTL)")
    p.add_argument("--calibrated-inputs", type=int, default=4 * 4096,
                   help="inputs of the calibrated working set (default 4 x 4096)")
    args = p.parse_args(argv)
    fcfg = FRAGMENTER_CONFIGS[args.config]
    if args.dedup:
        try:
            banks, sets, ways = (int(v) for v in args.dedup.split(","))
            fcfg = fcfg.replace(dedup_banks=banks, dedup_sets=sets, dedup_ways=ways)
        except ValueError as exc:
            p.error(f"--dedup {args.dedup}: {exc}")
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = set(names) - {"calibrated", "criteo", "avazu", "uniform"}
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    rows = run(names, fcfg, args.calibrated_inputs)
    mem = memory_bits(fcfg)
    if args.json:
        print(json.dumps({"config": fcfg.describe(), "rows": rows,
                          "memory_bits": mem}, indent=1))
        return 0
    print(f"fragment chain, {fcfg.describe()}")
    for r in rows:
        ws = r["cycles_per_working_set"]
        print(f"{r['workload']:>10}: {r['inputs']} inputs x {r['tables']} tables, popular "
              f"{100 * r['popular_share']:.1f} %, {r['working_sets']} working sets "
              f"({r['early_ends']} ended early), cold rows {r['cold_rows'][:4]}"
              f"{' ...' if len(r['cold_rows']) > 4 else ''}")
        print(f"{'':>12}{r['lookups']} lookups in {r['cycles']} cycles = "
              f"{r['lookups_per_cycle']} lookups/cycle ({100 * r['share_of_lanes']:.1f} % of "
              f"{fcfg.eal.lanes} lanes); cycles per working set {ws[:4]}"
              f"{' ...' if len(ws) > 4 else ''}; drain {r['drain_cycles']} cycles")
        print(f"{'':>12}stall cycles {r['stalls']} of {r['run_cycles']}; "
              f"sim {r['sim_cycles_per_s']} cycles/s, build {r['build_s']} s")
    total = sum(mem.values())
    print("on-chip memory: " + ", ".join(f"{k} {v / 8192:.1f} KiB" for k, v in mem.items())
          + f"; total {total / 8192:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

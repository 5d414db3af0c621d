"""``make sim``: the RTL under Verilator on the Criteo sample, with a report.

The RTL's every output is checked against the golden model.

1. The lookup engine: learns popularity on a sample of mini-batches (5 % by default),
   freezes, classifies every other mini-batch, reads the learned tag store back, and prints
   lookups, cycles, lookups per cycle, the share of popular inputs (from the RTL's own hit
   flags) and the agreement with the golden model.
2. The whole device (``rtl/hotline_accelerator.v``) driven through its registers, with the
   tables in simulated host memory: LEARN the same sample, DUMP, then for the first working
   sets LOOKUP their keys, GATHER the cold rows the device's hit flags name and WRITE_BACK
   them; prints rows, bytes and cycles per command and the gather bandwidth as a share of
   the AXI data-bus peak.
3. The classifier and fragmenter (``rtl/hotline_fragment_chain.v``): learn the same sample,
   then fragment every other input in working sets of ``working_set`` mini-batches; every
   remapped lookup, cold row, input index and summary is compared with the golden model;
   prints working sets, popular share, cold rows and lookups per cycle.

Without the real sample it runs on synthetic data and says so.
"""

import argparse
import sys
import time

import numpy as np

from hotline_spec.config import CONFIGS, DEFAULT_DEVICE
from hotline_hw.generate import ACCELERATOR_NAME
from verif.device_workload import device_workload, run_device_workload
from verif.tb.runner import run_scenario, ScenarioFailed
from verif.workload import LookupWorkload, load_criteo_or_synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", choices=sorted(CONFIGS),
                        help="named EALConfig (hotline_spec/config.py)")
    parser.add_argument("--sample-rate", type=float, default=0.05,
                        help="share of mini-batches used to learn popularity (default 0.05)")
    parser.add_argument("--batch-size", type=int, default=128, help="inputs per mini-batch")
    parser.add_argument("--max-rows", type=int, default=None, help="read at most this many inputs")
    parser.add_argument("--popular-max-rrpv", type=int, default=None,
                        help="frozen-mode popularity threshold (default: the config's)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the learn sample and stimulus")
    parser.add_argument("--stall-prob", type=float, default=0.0,
                        help="probability of back-pressure on the result stream per cycle")
    parser.add_argument("--working-sets", type=int, default=2,
                        help="working sets the device gathers and writes back (default 2)")
    parser.add_argument("--working-set", type=int, default=4,
                        help="mini-batches per working set (default 4)")
    parser.add_argument("--dim", type=int, default=16,
                        help="embedding dimension of the device's rows, fp32 (default 16: 64 B)")
    parser.add_argument("--latency", type=int, default=200,
                        help="host memory read and write latency in cycles (default 200)")
    parser.add_argument("--no-device", action="store_true",
                        help="only the lookup engine, not the device run")
    parser.add_argument("--no-fragmenter", action="store_true",
                        help="skip part 3, the classifier/fragmenter chain")
    args = parser.parse_args(argv)
    cfg = CONFIGS[args.config]
    threshold = cfg.popular_max_rrpv if args.popular_max_rrpv is None else args.popular_max_rrpv

    data, description, is_real = load_criteo_or_synthetic(max_rows=args.max_rows, seed=args.seed)
    work = LookupWorkload.from_sparse(data.sparse, cfg, args.batch_size, args.sample_rate,
                                      args.seed)
    print("Hotline make sim: lookup-engine RTL (Verilator) against the golden model")
    print(f"  data    : {description}{'' if is_real else '  <-- not the real data'}")
    print(f"  config  : {args.config}: {cfg.describe()}")
    print(f"  workload: {len(data)} inputs x {work.tables} tables, mini-batch {args.batch_size}; "
          f"learn on {work.learn_batches} sampled mini-batches ({args.sample_rate:.1%}), "
          f"classify the other {work.frozen_batches}")
    started = time.perf_counter()
    try:
        report = run_scenario(cfg, [
            {"op": "learn", "keys": work.learn_keys},
            {"op": "dump"},
            {"op": "frozen", "keys": work.frozen_keys, "popular_max_rrpv": threshold},
        ], seed=args.seed, stall_prob=args.stall_prob, name="make_sim")
    except ScenarioFailed as exc:
        print(f"  FAILED: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    learn, dump, frozen = report["phases"]
    rtl_hits = np.load(frozen["rtl_hits_file"]).reshape(work.frozen_inputs, work.tables)
    popular = int(rtl_hits.all(axis=1).sum())
    lookups = learn["lookups"] + frozen["lookups"]
    cycles = learn["cycles"] + frozen["cycles"]
    agreement = 100.0 * (report["compared"] - report["mismatches"]) / max(1, report["compared"])
    rows = [
        ("phase", "lookups", "cycles", "lookups/cycle", "hits"),
        ("learn", learn["lookups"], learn["cycles"], learn["lookups"] / max(1, learn["cycles"]),
         learn["golden_hits"]),
        ("frozen", frozen["lookups"], frozen["cycles"],
         frozen["lookups"] / max(1, frozen["cycles"]), frozen["golden_hits"]),
        ("total", lookups, cycles, lookups / max(1, cycles), ""),
    ]
    print()
    for row in rows:
        cells = [f"{c:.3f}" if isinstance(c, float) else str(c) for c in row]
        print("  " + cells[0].ljust(8) + "".join(c.rjust(15) for c in cells[1:]))
    print()
    print(f"  tag store after learning: {dump['valid_entries']} of {cfg.entries} entries valid, "
          f"{dump['popular_entries_at_default_threshold']} popular "
          f"(RRPV <= {cfg.popular_max_rrpv}); dump took {dump['cycles']} cycles")
    print(f"  popular inputs (frozen phase, threshold {threshold}): {popular} of "
          f"{work.frozen_inputs} = {100.0 * popular / max(1, work.frozen_inputs):.1f} %")
    print(f"  agreement with the golden model: {agreement:.2f} % "
          f"({report['compared'] - report['mismatches']} of {report['compared']} result and "
          f"dump beats identical)")
    sim_cycles = report["total_cycles"]
    print(f"  simulation: {sim_cycles} cycles in {report['wall_seconds']:.1f} s "
          f"({sim_cycles / report['wall_seconds']:.0f} cycles/s incl. start-up); Verilator "
          f"build {report['build_seconds']:.1f} s; total {wall:.1f} s")
    ok = report["mismatches"] == 0
    if not args.no_device and args.config == "default":
        ok = device_report(data, work, args) and ok
    if not args.no_fragmenter and args.config == "default":
        ok = fragmenter_report(work, args) and ok
    if not is_real:
        print("  NOTE: synthetic data was used because the real Criteo sample is absent.")
    return 0 if ok else 1


def device_report(data, work, args):
    """Part 2: the device on the same workload; returns whether everything agreed."""
    dcfg = DEFAULT_DEVICE
    arrays = device_workload(data, dcfg.eal, args.batch_size, args.sample_rate, args.seed,
                             args.working_set, args.working_sets)
    print()
    print(f"  device: {ACCELERATOR_NAME} (rtl/, {dcfg.describe().split(' | ')[0]}), host memory "
          f"latency {args.latency} cycles, rows of {4 * args.dim} B")
    try:
        rep = run_device_workload(dcfg, arrays, dim=args.dim, latency=args.latency,
                                  seed=args.seed, name="make_sim_device")
    except ScenarioFailed as exc:
        print(f"  FAILED: {exc}", file=sys.stderr)
        return False
    wall, build_s = rep["sim_seconds"], rep["build_seconds"]
    bb = rep["bus_bytes"]
    print()
    print("  " + "command".ljust(12) + "".join(h.rjust(13) for h in
                                             ("commands", "items", "cycles", "bytes moved", "of bus peak")))
    for op, st in rep["stats"].items():
        share = (f"{100.0 * st['bytes'] / (st['cycles'] * bb):.1f} %"
                 if st["bytes"] and st["cycles"] else "")
        moved = f"{st['bytes'] / 1e6:.2f} MB" if st["bytes"] else ""
        print("  " + op.ljust(12) + "".join(str(v).rjust(13) for v in
                                           (st["commands"], st["count"], st["cycles"], moved, share)))
    g, wb = rep["stats"]["GATHER"], rep["stats"]["WRITE_BACK"]
    pops = sum(w["popular_inputs"] for w in rep["working_sets"])
    inputs = sum(w["inputs"] for w in rep["working_sets"])
    print()
    print(f"  working sets: {len(rep['working_sets'])} of {args.working_set} x {args.batch_size} "
          f"inputs; {pops} of {inputs} inputs popular; {g['count']} cold rows gathered, "
          f"{wb['count']} written back")
    if g["cycles"]:
        print(f"  gather bandwidth: {g['bytes'] / g['cycles']:.1f} B/cycle = "
              f"{100.0 * g['bytes'] / (g['cycles'] * bb):.1f} % of the {8 * bb}-bit bus peak; "
              f"write-back {100.0 * wb['bytes'] / max(1, wb['cycles'] * bb):.1f} %")
    c = rep["counters"]
    print(f"  device counters: {c['LOOKUPS']} lookups, {c['HITS']} hits, {c['ROWS_GATHERED']} rows "
          f"gathered, {c['ROWS_WRITTEN']} written, {c['BYTES_READ']} B read, "
          f"{c['BYTES_WRITTEN']} B written, {c['CYCLES']} cycles")
    agreement = 100.0 * (rep["compared"] - rep["mismatches"]) / max(1, rep["compared"])
    print(f"  agreement with the golden model: {agreement:.2f} % ({rep['compared'] - rep['mismatches']} "
          f"of {rep['compared']} result words, dump entries, hit flags, cold lists and rows identical)")
    print(f"  simulation: {c['CYCLES']} cycles in {wall:.1f} s ({c['CYCLES'] / wall:.0f} cycles/s "
          f"incl. start-up); Verilator build {build_s:.1f} s")
    return rep["mismatches"] == 0


def fragmenter_report(work, args):
    """Part 3: the classifier/fragmenter chain on the same workload; True if all agreed."""
    from hotline_spec.config import DEFAULT_FRAGMENTER
    from verif.tb.runner import run_fragment_case
    fcfg = DEFAULT_FRAGMENTER
    mask = (1 << fcfg.eal.row_bits) - 1
    learn = (work.learn_keys & mask).view(-1, work.tables)
    frozen = (work.frozen_keys & mask).view(-1, work.tables)
    ws = args.working_set * args.batch_size
    print()
    print(f"  fragmenter: rtl/hotline_fragment_chain.v ({fcfg.describe().split(' | ')[0]})")
    print(f"  learn the same {len(learn)} inputs, fragment {len(frozen)} in working sets of "
          f"{args.working_set} x {args.batch_size}")
    started = time.perf_counter()
    try:
        rep = run_fragment_case(fcfg, learn, [{"sparse": frozen, "ws_inputs": ws}],
                                seed=args.seed, stall_prob=args.stall_prob, name="make_sim_frag")
    except ScenarioFailed as exc:
        print(f"  FAILED: {exc}", file=sys.stderr)
        return False
    wall = time.perf_counter() - started
    j = rep["jobs"][0]
    agreement = 100.0 * (rep["compared"] - rep["mismatches"]) / max(1, rep["compared"])
    pop = sum(j["golden_popular"])
    print(f"  {j['working_sets']} working sets ({j['early_ends']} ended early by the de-dup "
          f"rule), popular inputs {pop} of {j['inputs']} = {100.0 * pop / max(1, j['inputs']):.1f} %, "
          f"cold rows per working set {min(j['golden_cold'])}..{max(j['golden_cold'])}")
    print(f"  {j['lookups']} lookups in {j['cycles']} cycles = {j['lookups'] / max(1, j['cycles']):.3f} "
          f"lookups/cycle ({fcfg.eal.lanes} lanes); stalls {j['counters']['stall_bank']} bank, "
          f"{j['counters']['stall_probe']} probe, {j['counters']['stall_output']} output, "
          f"{j['counters']['stall_input']} input cycles")
    print(f"  agreement with the golden model: {agreement:.2f} % ({rep['compared'] - rep['mismatches']}"
          f" of {rep['compared']} remapped lookups, cold rows and input indices identical)")
    print(f"  simulation: {rep['total_cycles']} cycles in {rep['wall_seconds']:.1f} s; Verilator "
          f"build {rep['build_seconds']:.1f} s; total {wall:.1f} s")
    return rep["mismatches"] == 0


if __name__ == "__main__":
    sys.exit(main())

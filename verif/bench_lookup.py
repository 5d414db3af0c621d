"""Lookup-engine benchmark: sustained lookups per cycle, simulation speed, build time.

``python -m verif.bench_lookup`` (``make bench``) runs keys through the RTL of the 1-, 4-
and 16-lane configurations (4 banks per lane) under Verilator, checks every result against
the golden model, and prints a table; ``--record`` appends it to docs/benchmarks.md with the
date, machine and command. ``--keys`` picks the key streams: ``random`` (uniform),
``zipf`` (Zipf-distributed ranks, ``--zipf-exponent``) and ``criteo`` (the Criteo sample's
keys in input order, synthetic when ../shared/data is absent). ``--set FIELD=VALUE`` changes
a configuration field (e.g. ``queue_depth=8``) to see what a parameter buys.
``--amaranth`` simulates the elaborated design in the Amaranth simulator instead of
Verilator (no build; slow, for short traces of configurations too large to build quickly,
such as ``paper``), checking every result lane against the golden model too; its rates
count from the first result beat, leaving out the pipeline's fill latency.

Beside the measured rate the table gives the *bank bound*: a bank makes one access per
cycle, so a stream whose busiest bank needs ``a`` accesses over ``n`` beats cannot exceed
``n / a`` lookups per lane per cycle, whatever the queues (hot keys); with srrip a lookup that
repeats the nearest earlier lookup of its set in its beat needs no access of its own.
"""

import argparse
import collections
import dataclasses
import datetime
import os
import platform
import shutil
import sys
import time

import numpy as np
import torch

from hotline_spec.config import CONFIGS
from sw_driver.training.resources import cpu_model
from verif.golden import hash_fields
from verif.tb.runner import REPO_ROOT, SIM_BUILD, _config_tag, run_scenario
from verif.workload import load_criteo_or_synthetic, lookup_keys

KEY_STREAMS = ("random", "zipf", "criteo")


def stream_keys(kind, cfg, n, key_space, zipf_exponent, seed=2024):
    """``n`` keys of the named stream for ``cfg``."""
    rng = np.random.default_rng(seed)
    key_space = min(key_space, 1 << cfg.key_bits)
    if kind == "random":
        return rng.integers(0, key_space, n).tolist()
    if kind == "zipf":
        # Ranks 1, 2, ... of a Zipf law over key_space keys, scattered over the key space
        # (a fixed permutation), so that popularity and key value are unrelated.
        ranks = np.arange(1, key_space + 1, dtype=np.float64)
        weights = ranks ** -zipf_exponent
        picks = rng.choice(key_space, size=n, p=weights / weights.sum())
        return rng.permutation(key_space)[picks].tolist()
    data, _, _ = load_criteo_or_synthetic()
    keys = lookup_keys(data.sparse, cfg).reshape(-1).tolist()   # input by input, table order
    return (keys * (n // len(keys) + 1))[:n]


def bank_bound(keys, cfg):
    """Lookups per lane per cycle that the busiest bank allows: one bank access per cycle,
    and (srrip) a lookup repeating the nearest earlier lookup of its set in its beat costs
    no access (docs/architecture.md, repeat marker)."""
    banks, sets, _ = hash_fields(torch.tensor(keys, dtype=torch.int64), cfg)
    accesses = collections.Counter()
    for start in range(0, len(keys), cfg.lanes):
        last_key_of_set = {}
        for i in range(start, min(start + cfg.lanes, len(keys))):
            where = (banks[i].item(), sets[i].item())
            if cfg.policy == "srrip" and last_key_of_set.get(where) == keys[i]:
                continue
            last_key_of_set[where] = keys[i]
            accesses[where[0]] += 1
    beats = -(-len(keys) // cfg.lanes)
    return min(1.0, beats / max(accesses.values()))


def amaranth_run(cfg, keys):
    """Learn then frozen over ``keys`` in the Amaranth simulator, the engine always fed
    and drained; every result lane checked against the golden model. Returns the report
    fields the Verilator runner gives (phases with lookups and cycles, totals)."""
    from amaranth.sim import Simulator
    from hotline_hw.lookup_engine import LookupEngine
    from verif.golden import AccessLogger

    started = time.perf_counter()
    dut = LookupEngine(cfg)
    golden = AccessLogger(cfg)
    beats = [keys[i:i + cfg.lanes] for i in range(0, len(keys), cfg.lanes)]
    phases, mismatches = [], []

    async def bench(ctx):
        ctx.set(dut.results.ready, 1)
        for mode in ("learn", "frozen"):
            expected = (golden.learn if mode == "learn" else golden.lookup)(
                torch.tensor(keys, dtype=torch.int64))
            while ctx.get(dut.busy):
                await ctx.tick()
            ctx.set(dut.learn, mode == "learn")
            sent = got = cycles = 0
            first_result = None
            while got < len(beats):
                ctx.set(dut.lookups.valid, sent < len(beats))
                if sent < len(beats):
                    for l in range(cfg.lanes):
                        lane = dut.lookups.payload[l]
                        ctx.set(lane.valid, l < len(beats[sent]))
                        ctx.set(lane.key, beats[sent][l] if l < len(beats[sent]) else 0)
                if ctx.get(dut.results.valid):
                    first_result = cycles if first_result is None else first_result
                    for l in range(len(beats[got])):
                        i = got * cfg.lanes + l
                        out = dut.results.payload[l]
                        want = (1, int(expected.hit[i]), int(expected.slot[i]))
                        have = (ctx.get(out.valid), ctx.get(out.hit), ctx.get(out.slot))
                        if have != want and len(mismatches) < 5:
                            mismatches.append(f"{mode} lookup {i}: {have} != {want}")
                        elif have != want:
                            mismatches.append("...")
                    got += 1
                if sent < len(beats) and ctx.get(dut.lookups.ready):
                    sent += 1
                await ctx.tick()
                cycles += 1
            # A short trace: count from the first result beat, so that the pipeline's fill
            # latency does not hide the rate (the beat in that cycle is not counted either).
            phases.append({"lookups": len(keys) - len(beats[0]),
                           "cycles": cycles - first_result - 1, "latency": first_result})

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    built = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - built
    if mismatches:
        raise SystemExit(f"error: {len(mismatches)} result lanes differ from the golden model, "
                         f"first: {mismatches[0]}")
    return {"phases": phases, "total_cycles": sum(p["cycles"] for p in phases),
            "wall_seconds": wall, "build_seconds": built - started}


def configured(name, overrides):
    """The named configuration with ``FIELD=VALUE`` overrides applied."""
    cfg = CONFIGS[name]
    changes = {}
    for item in overrides:
        field, _, value = item.partition("=")
        if field not in {f.name for f in dataclasses.fields(cfg)} or not value:
            raise SystemExit(f"error: --set {item}: expected FIELD=VALUE with a field of EALConfig")
        changes[field] = value if field == "policy" else int(value)
    try:
        return cfg.replace(**changes)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {exc}")


def machine():
    cpu = cpu_model() or platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="lanes1,default,lanes16",
                        help="comma-separated named configs (default: lanes1,default,lanes16)")
    parser.add_argument("--keys", default="random",
                        help=f"comma-separated key streams from {', '.join(KEY_STREAMS)}")
    parser.add_argument("--zipf-exponent", type=float, default=1.05)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="change a configuration field; repeatable")
    parser.add_argument("--lookups", type=int, default=40000, help="lookups per mode")
    parser.add_argument("--key-space", type=int, default=1 << 20,
                        help="keys are drawn uniformly from 0..key_space-1")
    parser.add_argument("--clean", action="store_true", help="time a clean Verilator build")
    parser.add_argument("--amaranth", action="store_true",
                        help="simulate in the Amaranth simulator (no build; slow, short traces)")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    kinds = args.keys.split(",")
    for kind in kinds:
        if kind not in KEY_STREAMS:
            parser.error(f"--keys: unknown stream {kind!r} (choose from {', '.join(KEY_STREAMS)})")
    rows = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"--configs: unknown configuration {name!r} ({', '.join(CONFIGS)})")
        cfg = configured(name, args.overrides)
        if args.clean:
            shutil.rmtree(SIM_BUILD / _config_tag(cfg), ignore_errors=True)
        for kind in kinds:
            try:
                keys = stream_keys(kind, cfg, args.lookups, args.key_space, args.zipf_exponent)
            except ValueError as exc:
                raise SystemExit(f"error: {kind} keys do not fit {name}: {exc}")
            started = time.perf_counter()
            if args.amaranth:
                report = amaranth_run(cfg, keys)
            else:
                report = run_scenario(cfg, [{"op": "learn", "keys": keys},
                                            {"op": "frozen", "keys": keys}],
                                      name=f"bench_{name}_{kind}")
            total = time.perf_counter() - started
            learn, frozen = report["phases"]
            per_cycle = [p["lookups"] / p["cycles"] for p in (learn, frozen)]
            rows.append({
                "config": name, "keys": kind, "lanes": cfg.lanes, "banks": cfg.banks,
                "learn_lpc": per_cycle[0], "frozen_lpc": per_cycle[1],
                "per_lane": min(per_cycle) / cfg.lanes, "bound": bank_bound(keys, cfg),
                "cycles_per_s": report["total_cycles"] / report["wall_seconds"],
                "build_s": report["build_seconds"], "total_s": total,
            })
            print(f"{name}/{kind}: {rows[-1]}", flush=True)
    header = ("| config | keys | lanes | banks | lookups/cycle learn | lookups/cycle frozen | "
              "per lane (min) | bank bound per lane | sim cycles/s | Verilator build s |")
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['config']} | {r['keys']} | {r['lanes']} | {r['banks']} | "
                     f"{r['learn_lpc']:.3f} | {r['frozen_lpc']:.3f} | {r['per_lane']:.3f} | "
                     f"{r['bound']:.3f} | {r['cycles_per_s']:.0f} | "
                     f"{r['build_s']:.1f}{' (clean)' if args.clean else ''}"
                     f"{' (Amaranth: elaboration)' if args.amaranth else ''} |")
    table = "\n".join(lines)
    print(table)
    if args.record:
        command = "python -m verif.bench_lookup " + " ".join(argv if argv is not None else sys.argv[1:])
        entry = (f"\n### Lookup engine, {datetime.date.today().isoformat()}\n\n"
                 f"Machine: {machine()}. Command: `{command.strip()}`. {args.lookups} keys "
                 f"per mode and stream (random: uniform over {args.key_space}; zipf: exponent "
                 f"{args.zipf_exponent} over {args.key_space}; criteo: the sample's keys in "
                 f"order), no idle or back-pressure cycles, every result checked against the "
                 f"golden model.\n\n{table}\n")
        with open(REPO_ROOT / "docs" / "benchmarks.md", "a") as f:
            f.write(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())

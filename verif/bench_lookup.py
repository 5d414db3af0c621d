"""Lookup-engine benchmark: sustained lookups per cycle, simulation speed, build time.

``python -m verif.bench_lookup`` (``make bench``) runs random keys through the RTL of the
1-, 4- and 16-lane configurations (4 banks per lane) under Verilator, checks every result
against the golden model, and prints a table; ``--record`` appends it to docs/benchmarks.md
with the date, machine and command.
"""

import argparse
import datetime
import os
import platform
import random
import shutil
import sys
import time

from hotline_hw.config import CONFIGS
from verif.tb.runner import REPO_ROOT, SIM_BUILD, _config_tag, run_scenario


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="lanes1,default,lanes16",
                        help="comma-separated named configs (default: lanes1,default,lanes16)")
    parser.add_argument("--lookups", type=int, default=40000, help="random lookups per mode")
    parser.add_argument("--key-space", type=int, default=1 << 20,
                        help="keys are drawn uniformly from 0..key_space-1")
    parser.add_argument("--clean", action="store_true", help="time a clean Verilator build")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    rng = random.Random(2024)
    rows = []
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        keys = [rng.randrange(args.key_space) for _ in range(args.lookups)]
        if args.clean:
            shutil.rmtree(SIM_BUILD / _config_tag(cfg), ignore_errors=True)
        started = time.perf_counter()
        report = run_scenario(cfg, [{"op": "learn", "keys": keys},
                                    {"op": "frozen", "keys": keys}], name=f"bench_{name}")
        total = time.perf_counter() - started
        learn, frozen = report["phases"]
        per_cycle = [p["lookups"] / p["cycles"] for p in (learn, frozen)]
        rows.append({
            "config": name, "lanes": cfg.lanes, "banks": cfg.banks,
            "learn_lpc": per_cycle[0], "frozen_lpc": per_cycle[1],
            "per_lane": min(per_cycle) / cfg.lanes,
            "cycles_per_s": report["total_cycles"] / report["wall_seconds"],
            "build_s": report["build_seconds"], "total_s": total,
        })
        print(f"{name}: {rows[-1]}", flush=True)
    header = ("| config | lanes | banks | lookups/cycle learn | lookups/cycle frozen | per lane "
              "(min) | sim cycles/s | Verilator build s |")
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['config']} | {r['lanes']} | {r['banks']} | {r['learn_lpc']:.3f} | "
                     f"{r['frozen_lpc']:.3f} | {r['per_lane']:.3f} | {r['cycles_per_s']:.0f} | "
                     f"{r['build_s']:.1f}{' (clean)' if args.clean else ''} |")
    table = "\n".join(lines)
    print(table)
    if args.record:
        command = "python -m verif.bench_lookup " + " ".join(argv if argv is not None else sys.argv[1:])
        entry = (f"\n### Lookup engine, {datetime.date.today().isoformat()}\n\n"
                 f"Machine: {machine()}. Command: `{command.strip()}`. {args.lookups} uniformly "
                 f"random keys from {args.key_space} per mode, no idle or back-pressure cycles, "
                 f"every result checked against the golden model.\n\n{table}\n")
        with open(REPO_ROOT / "docs" / "benchmarks.md", "a") as f:
            f.write(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())

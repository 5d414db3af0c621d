"""Gather bandwidth of the row mover and of the whole device: ``python -m verif.bench_dma``.

Runs gathers of random rows on the default :class:`~hotline_spec.config.DeviceConfig` (cocotb
+ Verilator, :class:`verif.tb.host_memory.HostMemory` without stalls, read and write latency
equal) for each read latency and row size, and prints the bandwidth as a share of the bus
peak: row bytes moved / (cycles from ``start`` to ``done`` x ``bus_bytes``). Every gathered
byte is checked as in the tests. Also prints the simulation speed and the Verilator build
time.

Then (unless ``--engine-only``) the same sweep through the whole accelerator
(``rtl/hotline_accelerator.v``, registers and commands): each GATHER command's cycles run from
its ``CMD_SUBMIT`` to its completion and include the decode, the key list's read (once: the
check is inline) and the register polling, so it is what a host gets.
"""

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from hotline_spec.config import DEVICE_CONFIGS
from verif.tb.test_row_mover import build_row_mover, run_row_mover

LATENCIES = (200, 500, 1000)
ROW_SIZES = (64, 256, 1024)


def bench(device="default", latencies=LATENCIES, row_sizes=ROW_SIZES, beats=20000, seed=1):
    """Run the gathers; returns ``(rows, report)`` with one dict per (latency, row size)."""
    dcfg = DEVICE_CONFIGS[device]
    started = time.perf_counter()
    build_row_mover(device)
    build_wall = time.perf_counter() - started
    table_rows = 4096
    mem_size = table_rows * (max(row_sizes) + 3 * dcfg.bus_bytes) + 2 * beats * dcfg.bus_bytes \
        + (1 << 20)
    report = run_row_mover(device, "bench", seed=seed, name=f"bench_{device}",
                           latencies=list(latencies), row_sizes=list(row_sizes), beats=beats,
                           table_rows=table_rows, mem_size=mem_size)
    if report["failures"]:
        raise AssertionError(f"benchmark gathers failed: {report['failures'][:3]}")
    rows = []
    for c in report["commands"]:
        rows.append({"latency": c["read_latency"], "row_bytes": c["row_bytes"],
                     "rows": c["count"], "cycles": c["cycles"],
                     "share": c["bytes"] / (c["cycles"] * dcfg.bus_bytes),
                     "cycles_per_s": c["cycles"] / c["wall"]})
    report["build_wall"] = build_wall
    return rows, report


def bench_device(latencies=LATENCIES, row_sizes=ROW_SIZES, beats=20000, seed=1):
    """GATHER commands on the committed default accelerator; returns ``(runs, build_s, wall_s)``."""
    from hotline_spec.config import DEFAULT_DEVICE
    from hotline_hw.generate import ACCELERATOR_NAME
    from verif.tb.runner import REPO_ROOT, build_accelerator, run_cocotb
    started = time.perf_counter()
    runner, build_dir = build_accelerator(DEFAULT_DEVICE)
    build_s = time.perf_counter() - started
    work = Path(tempfile.mkdtemp(prefix="bench_device_", dir=build_dir))
    spec = {"config": dataclasses.asdict(DEFAULT_DEVICE), "case": "gather_bench", "seed": seed,
            "latencies": list(latencies), "row_sizes": list(row_sizes), "beats": beats,
            "report": str(work / "report.json")}
    (work / "case.json").write_text(json.dumps(spec))
    started = time.perf_counter()
    run_cocotb(runner, build_dir, ACCELERATOR_NAME, "verif.tb.test_accelerator",
               REPO_ROOT / "verif" / "tb" / "test_accelerator.py",
               {"HOTLINE_CASE": work / "case.json"}, name="bench_device")
    wall = time.perf_counter() - started
    rep = json.loads((work / "report.json").read_text())
    bad = sum(r["bad_rows"] for r in rep["runs"])
    if bad:
        raise AssertionError(f"{bad} gathered rows differ from the table")
    for r in rep["runs"]:
        r["share"] = r["bytes"] / (r["cycles"] * rep["bus_bytes"])
    return rep["runs"], build_s, wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="default", choices=sorted(DEVICE_CONFIGS))
    parser.add_argument("--beats", type=int, default=20000,
                        help="bus beats per gather (rows = beats / row beats)")
    parser.add_argument("--engine-only", action="store_true",
                        help="only the row mover, not the whole device")
    args = parser.parse_args(argv)
    dcfg = DEVICE_CONFIGS[args.device]
    rows, report = bench(args.device, beats=args.beats)
    print(f"RowMover gather bandwidth, DeviceConfig {args.device}: {dcfg.describe()}")
    print(f"{'read latency':>12} {'row B':>6} {'rows':>6} {'cycles':>8} {'of peak':>8} "
          f"{'sim cycles/s':>12}")
    for r in rows:
        print(f"{r['latency']:>12} {r['row_bytes']:>6} {r['rows']:>6} {r['cycles']:>8} "
              f"{100 * r['share']:>7.1f}% {r['cycles_per_s']:>12.0f}")
    print(f"simulation: {report['cycles']} cycles in {report['sim_seconds']:.1f} s "
          f"({report['cycles'] / report['sim_seconds']:.0f} cycles/s); Verilog + Verilator "
          f"build {report['build_wall']:.1f} s (a few seconds when sim_build/row_mover_"
          f"{args.device} is current)")
    if args.engine_only:
        return 0
    runs, build_s, wall = bench_device(beats=args.beats)
    print()
    print("Whole device (rtl/hotline_accelerator.v, default DeviceConfig): GATHER commands, "
          "cycles from CMD_SUBMIT to completion")
    print(f"{'read latency':>12} {'row B':>6} {'rows':>6} {'cycles':>8} {'of peak':>8}")
    for r in runs:
        print(f"{r['latency']:>12} {r['row_bytes']:>6} {r['rows']:>6} {r['cycles']:>8} "
              f"{100 * r['share']:>7.1f}%")
    total = sum(r["cycles"] for r in runs)
    print(f"simulation: about {total} cycles of gathers in {wall:.1f} s incl. start-up "
          f"({total / wall:.0f} cycles/s); Verilator build {build_s:.1f} s (cached when "
          f"sim_build/accel_rtl_default is current)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

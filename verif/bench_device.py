"""LEARN / LOOKUP / DUMP rates of the whole device (issue 21): ``python -m verif.bench_device``.

For each device configuration (default: ``default`` and ``small``) one cocotb + Verilator
simulation of ``hotline_accelerator`` (:func:`verif.tb.test_accelerator.case_rate_bench`)
runs, at each host latency (read and write response latency equal, no random pauses), a
LEARN and a LOOKUP of ``--keys`` keys (default :data:`DEFAULT_KEYS`) and a DUMP of the tag
store; every result word and dump entry is checked against the golden model. Three cycle counts per command, all on the
DUT clock:

- ``stream``: first key beat returned (R) to last result beat written (W); for DUMP, first to
  last W beat. The steady rate, without the command's fixed latencies; the goal is judged
  on it: LEARN/LOOKUP >= 0.9 x min(lanes, 64-bit words per bus beat) keys per cycle, DUMP
  >= 0.9 write beats per cycle.
- ``bus``: first list read request (AR; DUMP: the ``CMD_SUBMIT``) to the last write response
  (B): adds one read and one write latency.
- ``end-to-end``: ``CMD_SUBMIT`` accepted to ``CMD_COMPLETED`` seen by polling every cycle:
  what a host gets, the command's fixed cost included.

A second table gives the bus activity behind each rate: read beats outstanding (requested,
not returned: the list reader's FIFO credit is its limit) and write bursts outstanding (AW
taken, B not yet: the burst writer's ``bursts_in_flight`` is its limit), averaged over the
bus window, with the share of cycles at the limit. Uses the shared Verilator builds under
``sim_build/`` (``HOTLINE_SIM_BUILD``); not part of ``make test``.
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cocotb

LATENCIES = (200, 500, 1000)
# Keys per LEARN / LOOKUP: enough that the two host latencies of a command are < 5 % of its
# cycles at the rate it reaches (the small device, write-bound at about 0.3 keys per cycle
# and below, gets there with far fewer keys, and simulates 8x faster with them).
DEFAULT_KEYS = {"default": 65536, "small": 8192}


def _rate(count, cycles):
    return count / cycles if cycles > 0 else float("nan")


def summarise(run, rep):
    """Cycle counts, rates, goal and bus activity of one command of a report."""
    f, last, n = run["first"], run["last"], run["handshakes"]
    dump = run["command"] == "DUMP"
    unit = run["beats"] if dump else run["n"]
    if dump:
        stream = last["w"] - f["w"] + 1
        bus = last["b"] - run["submitted"] + 1
        goal = 0.9
    else:
        stream = last["w"] - f["r"] + 1
        bus = last["b"] - f["ar"] + 1
        goal = 0.9 * min(rep["lanes"], rep["words_per_beat"])
    e2e = run["done"] - run["submitted"]
    cyc = max(1, run["cycles"])
    return {
        "command": run["command"], "latency": run["latency"], "n": run["n"], "unit": unit,
        "stream_cycles": stream, "stream_rate": _rate(unit, stream),
        "bus_cycles": bus, "bus_rate": _rate(unit, bus),
        "e2e_cycles": e2e, "e2e_rate": _rate(unit, e2e),
        "goal": goal, "met": _rate(unit, stream) >= goal, "bad": run["bad"],
        "r_rate": _rate(n["r"], last["r"] - f["r"] + 1) if n["r"] else 0.0,
        "w_rate": _rate(n["w"], stream),
        "read_out_avg": run["read_out_sum"] / cyc, "read_out_max": run["read_out_max"],
        "at_read_cap": run["at_read_cap"] / cyc,
        "write_out_avg": run["write_out_sum"] / cyc, "write_out_max": run["write_out_max"],
        "at_write_cap": run["at_write_cap"] / cyc,
        "w_beats": n["w"], "aw": n["aw"], "ar": n["ar"],
    }


def bench(device, keys, latencies=LATENCIES, seed=1, changes=None):
    """Run the rate case on ``device`` (a name of ``DEVICE_CONFIGS``), with the
    ``DeviceConfig`` fields in ``changes`` replaced (a what-if: a generated, separately
    cached build); returns ``(report, build_s, wall_s)``."""
    from hotline_spec.config import DEVICE_CONFIGS
    from hotline_hw.generate import ACCELERATOR_NAME
    from verif.tb.runner import REPO_ROOT, build_accelerator, run_cocotb
    dcfg = DEVICE_CONFIGS[device]
    if changes:
        dcfg = dcfg.replace(**changes)
        device = device + "".join(f" {k}={v}" for k, v in changes.items())
    started = time.perf_counter()
    runner, build_dir = build_accelerator(dcfg)
    build_s = time.perf_counter() - started
    work = Path(tempfile.mkdtemp(prefix="rate_bench_", dir=build_dir))
    spec = {"config": dataclasses.asdict(dcfg), "case": "rate_bench", "seed": seed,
            "latencies": list(latencies), "n": keys, "report": str(work / "report.json")}
    (work / "case.json").write_text(json.dumps(spec))
    started = time.perf_counter()
    run_cocotb(runner, build_dir, ACCELERATOR_NAME, "verif.bench_device",
               REPO_ROOT / "verif" / "bench_device.py",
               {"HOTLINE_CASE": work / "case.json"},
               name="rate_bench_" + device.replace(" ", "_").replace("=", ""))
    wall = time.perf_counter() - started
    rep = json.loads((work / "report.json").read_text())
    if rep["mismatches"]:
        raise AssertionError(f"{device}: {rep['mismatches']} result words / dump entries "
                             f"differ from the golden model")
    rep["device"] = device
    rep["n"] = keys
    rep["rows"] = [summarise(r, rep) for r in rep["runs"]]
    return rep, build_s, wall


def print_tables(reps, out=sys.stdout):
    """The rate table and the bus-activity table (Markdown) of the reports ``reps``."""
    p = lambda s="": print(s, file=out)
    p("| config | command | latency | N | stream cycles | per cycle (stream) | bus cycles | "
      "per cycle (bus) | end-to-end cycles | per cycle (end-to-end) | goal | met? |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rep in reps:
        for r in rep["rows"]:
            what = "beats" if r["command"] == "DUMP" else "keys"
            n = f"{r['n']} entries = {r['unit']} beats" if what == "beats" else str(r["n"])
            p(f"| {rep['device']} | {r['command']} | {r['latency']} | {n} | "
              f"{r['stream_cycles']} | {r['stream_rate']:.3f} {what} | {r['bus_cycles']} | "
              f"{r['bus_rate']:.3f} | {r['e2e_cycles']} | {r['e2e_rate']:.3f} | "
              f">= {r['goal']:.2f} | {'yes' if r['met'] else '**no**'} |")
    p()
    p("| config | command | latency | R beats/cycle | read beats outstanding avg / max "
      "(credit) | at credit | W beats/cycle | write bursts outstanding avg / max "
      "(bursts_in_flight) | at limit |")
    p("|---|---|---|---|---|---|---|---|---|")
    for rep in reps:
        for r in rep["rows"]:
            rd = (f"{r['read_out_avg']:.0f} / {r['read_out_max']} ({rep['read_cap']})"
                  if r["command"] != "DUMP" else "-")
            at_r = f"{100 * r['at_read_cap']:.0f} %" if r["command"] != "DUMP" else "-"
            r_rate = f"{r['r_rate']:.3f}" if r["command"] != "DUMP" else "-"
            p(f"| {rep['device']} | {r['command']} | {r['latency']} | {r_rate} | {rd} | "
              f"{at_r} | {r['w_rate']:.3f} | {r['write_out_avg']:.1f} / {r['write_out_max']} "
              f"({rep['write_cap']}) | {100 * r['at_write_cap']:.0f} % |")


def main(argv=None):
    from hotline_spec.config import DEVICE_CONFIGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", choices=sorted(DEVICE_CONFIGS),
                        help="configuration(s) to run (default: default and small)")
    parser.add_argument("--keys", type=int, help="keys per LEARN / LOOKUP (default: "
                        + ", ".join(f"{d} {k}" for d, k in DEFAULT_KEYS.items()) + ")")
    parser.add_argument("--latency", type=int, action="append",
                        help=f"host latencies in cycles (default {' '.join(map(str, LATENCIES))})")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=INT",
                        help="what-if: change a DeviceConfig field (e.g. word_writes=2048)")
    parser.add_argument("--json", help="also write the reports to this file")
    args = parser.parse_args(argv)
    devices = args.device or ["default", "small"]
    reps = []
    for device in devices:
        keys = args.keys or DEFAULT_KEYS.get(device, 65536)
        changes = {k: int(v) for k, v in (s.split("=", 1) for s in args.set)}
        rep, build_s, wall = bench(device, keys, args.latency or LATENCIES, changes=changes)
        cycles = sum(r["e2e_cycles"] for r in rep["rows"])
        print(f"{rep['device']}: {DEVICE_CONFIGS[device].replace(**changes).describe()}",
              flush=True)
        print(f"  simulation {wall:.0f} s (about {cycles / wall:.0f} command cycles/s incl. "
              f"start-up), Verilator build step {build_s:.1f} s", flush=True)
        reps.append(rep)
    print()
    print_tables(reps)
    if args.json:
        Path(args.json).write_text(json.dumps(reps, indent=1))
    return 0


@cocotb.test()
async def rate_bench(dut):
    """The simulator side: plays ``case_rate_bench`` with the spec in ``HOTLINE_CASE``."""
    from verif.tb.device import DeviceBench
    from verif.tb.test_accelerator import case_rate_bench, finish
    with open(os.environ["HOTLINE_CASE"]) as f:
        spec = json.load(f)
    report = await case_rate_bench(dut, spec)
    report["case"] = "rate_bench"
    finish(DeviceBench.last, report)
    with open(spec["report"], "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    sys.exit(main())

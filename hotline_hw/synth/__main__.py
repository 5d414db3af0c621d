"""``python -m hotline_hw.synth`` (``make synth SYNTH_ARGS=...``): synthesize, place and
route a design for an ECP5 out of context and print its resources and Fmax.

Examples::

    python -m hotline_hw.synth                                  # 1-lane lookup engine, 85k
    python -m hotline_hw.synth --config default --xilinx        # 4 lanes, + UltraScale+
    python -m hotline_hw.synth --design accelerator --part 45k
    python -m hotline_hw.synth --set banks=2 --set sets=16 --limit LUT4=500 --json out.json

Exit status: 0 done, 1 an error (one line on stderr), 3 the design does not fit the part or
the ``--limit`` budget (one line naming each resource that ran out and by how much).
"""

import argparse
import json
import re
import sys
from pathlib import Path

from .designs import DESIGNS
from .errors import DoesNotFit, SynthError
from .flow import (DEFAULT_FREQ_MHZ, DEFAULT_PACKAGE, DEFAULT_PART, ECP5_PARTS, XILINX_FAMILY,
                   synthesize)

PROG = "python -m hotline_hw.synth"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message):
        print(f"{PROG}: error: {message} (--help lists the options)", file=sys.stderr)
        sys.exit(2)


def _limit(text):
    name, sep, value = text.partition("=")
    try:
        most = int(value, 0)
    except ValueError:
        most = -1
    if not sep or not name or most < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not RESOURCE=COUNT (LUT4=20000)")
    return name, most


def _n(value):
    return f"{value:,}"


def _memory_lines(memories):
    """One line per memory, memories that differ only in an index (``bank0.mem``,
    ``bank1.mem``...) and map alike folded into one (``bank*.mem x16``)."""
    groups = {}
    for mem in memories:
        key = (re.sub(r"\d+", "*", mem["name"]), mem["width"], mem["depth"], mem["kind"],
               mem["mapped_via"], tuple(sorted(mem["primitives"].items())), mem["tag_store"])
        groups.setdefault(key, []).append(mem)
    names = {key: members[0]["name"] if len(members) == 1 else f"{key[0]} x{len(members)}"
             for key, members in groups.items()}
    column = max(map(len, names.values()), default=0)
    lines = []
    for key, members in groups.items():
        _pattern, width, depth, kind, via, prims, tag = key
        name = names[key]
        size = f"{depth} x {width} b" if width else "size unknown"
        via_text = f" via {via}" if via not in (None, "logic") else ""
        prim_text = ", ".join(f"{n} {kind}" for kind, n in prims)
        each = " each" if prim_text and len(members) > 1 else ""
        lines.append(f"    {name:{column}s} {size:>14s} -> {kind}{via_text}"
                     f"{': ' + prim_text + each if prim_text else ''}"
                     f"{'  (tag store)' if tag else ''}")
    return lines


def _tag_store_line(verdict, block_ram_name):
    n = verdict["memories"]
    if not n:
        return "  tag store: no EAL tag-store memory found in this design"
    prims = ", ".join(f"{c} {kind}" for kind, c in verdict["primitives"].items())
    where = ", ".join(f"{c} of {n} in {kind}" for kind, c in verdict["kinds"].items())
    if verdict["in_block_ram"]:
        return f"  tag store: in block RAM ({n} bank memories, {prims})"
    return (f"  tag store: NOT in block RAM ({where}{'; ' + prims if prims else ''}): "
            f"the issue requires {block_ram_name}")


def print_report(result, out=sys.stdout):
    """Print a :func:`~hotline_hw.synth.flow.synthesize` result as a short report."""
    p = lambda line="": print(line, file=out)
    overrides = " ".join(result["overrides"])
    p(f"{result['design']} '{result['config']}'{' with ' + overrides if overrides else ''}: "
      f"{result['description']}")
    p(f"  Verilog {_n(result['verilog_lines'])} lines "
      f"(elaborated in {result['elaborate_s']:.1f} s);"
      f" work folder {result['work_dir']}")
    ecp5 = result.get("ecp5")
    if ecp5:
        s = ecp5["summary"]
        p()
        p(f"ECP5 {ecp5['device']} ({ecp5['package']}), Yosys synth_ecp5: {ecp5['yosys_s']:.1f} s")
        p(f"  LUT4 {_n(s['luts'])}   TRELLIS_FF {_n(s['ffs'])}   DP16KD {_n(s['bram'])}   "
          f"MULT18X18D {_n(s['dsp'])}   TRELLIS_DPR16X4 {_n(s['lutram'])}   "
          f"CCU2C {_n(s['carry'])}   Yosys cells {_n(s['cells'])}")
        if ecp5["memories"]:
            p("  memories:")
            for line in _memory_lines(ecp5["memories"]):
                p(line)
        p(_tag_store_line(ecp5["tag_store"], "DP16KD block RAM"))
        pnr = ecp5.get("nextpnr")
        if pnr:
            p(f"nextpnr-ecp5 --{ecp5['part']} --out-of-context"
              f"{''.join(' ' + a for a in pnr['extra_args'])}, "
              f"seed {pnr['seed']}, "
              f"target {pnr['target_mhz']:g} MHz: {pnr['seconds']:.1f} s")
            used = [f"{res} {_n(u['used'])}/{_n(u['available'])} "
                    f"({100 * u['used'] / u['available']:.1f} %)"
                    for res, u in pnr["utilisation"].items() if u["used"] and u["available"]]
            p("  " + "   ".join(used))
            stage = "" if pnr["routed"] else " estimated after placement"
            p(f"  Fmax '{pnr['clock']}': {pnr['fmax_mhz']:.2f} MHz{stage} "
              f"({'meets' if pnr['timing_met'] else 'misses'} the {pnr['target_mhz']:g} MHz "
              f"target)")
            if not pnr["routed"]:
                p(f"  {pnr['note']}")
            cp = pnr["critical_path"]
            if cp:
                p(f"  critical path {cp['delay_ns']:.2f} ns ({cp['logic_ns']:.2f} logic, "
                  f"{cp['routing_ns']:.2f} routing, {cp['logic_levels']} logic cells): "
                  f"{cp['from']} -> {cp['to']}")
                p(f"    [{cp['from_cell']}.{cp['from_port']} -> {cp['to_cell']}.{cp['to_port']}]")
    x = result.get("xilinx")
    if x:
        s = x["summary"]
        p()
        p(f"Xilinx UltraScale+ estimate, Yosys synth_xilinx -family {x['family']} "
          f"(no place and route): {x['yosys_s']:.1f} s")
        p(f"  LUTs {_n(s['luts'])}   FFs {_n(s['ffs'])}   RAMB36E2 {_n(s['ramb36'])}   "
          f"RAMB18E2 {_n(s['ramb18'])}   URAM288 {_n(s['uram'])}   DSP48E2 {_n(s['dsp'])}   "
          f"LUTRAM cells {_n(s['lutram'])}   Yosys cells {_n(s['cells'])}")
        p(_tag_store_line(x["tag_store"], "RAMB18E2/RAMB36E2 block RAM"))


def main(argv=None):
    """The command line; returns the exit status."""
    parser = _Parser(prog=PROG, description="Synthesize, place and route a Hotline design for "
                     "an ECP5 out of context (Yosys + nextpnr-ecp5) and print its resources, "
                     "where its memories went and its Fmax.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--design", default="lookup_engine", choices=sorted(DESIGNS),
                        help="top level (default: lookup_engine)")
    parser.add_argument("--config", help="configuration name (`python -m hotline_hw` lists "
                        "them); default: the design's smallest useful one ("
                        + ", ".join(f"{d}: {v.default_config}" for d, v in DESIGNS.items()) + ")")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="change a configuration field (the "
                        "design's own or its EAL's), e.g. --set banks=2; repeatable")
    parser.add_argument("--part", default=DEFAULT_PART, choices=list(ECP5_PARTS),
                        help=f"ECP5 device, as nextpnr-ecp5 names it (default {DEFAULT_PART})")
    parser.add_argument("--package", default=DEFAULT_PACKAGE,
                        help=f"ECP5 package (default {DEFAULT_PACKAGE})")
    parser.add_argument("--freq", type=float, default=DEFAULT_FREQ_MHZ, metavar="MHZ",
                        help=f"nextpnr frequency target (default {DEFAULT_FREQ_MHZ:g})")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--xilinx", action="store_true",
                        help=f"also a Yosys synth_xilinx -family {XILINX_FAMILY} estimate")
    parser.add_argument("--nextpnr-arg", dest="nextpnr_args", action="append", default=[],
                        metavar="ARG", help="pass ARG to nextpnr-ecp5 (--nextpnr-arg=--router "
                        "--nextpnr-arg=router2); repeatable")
    parser.add_argument("--no-pnr", dest="pnr", action="store_false",
                        help="Yosys only: skip nextpnr (no Fmax)")
    parser.add_argument("--limit", action="append", type=_limit, default=[],
                        metavar="RESOURCE=N", help="fail (exit 3) before place and route when "
                        "Yosys counts more than N of RESOURCE (LUT4, TRELLIS_FF, DP16KD, "
                        "MULT18X18D, TRELLIS_DPR16X4, CCU2C, cells); repeatable")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures "
                        "(or the error) as JSON")
    parser.add_argument("--work", type=Path, metavar="DIR",
                        help="work folder (default build/synth/<design>-<config>-<part>)")
    parser.add_argument("--timeout", type=float, metavar="S", help="seconds allowed per tool "
                        "run; nextpnr past it reports the Fmax it estimated after placement")
    args = parser.parse_args(argv)

    def progress(line):
        print(f"- {line}", flush=True)

    try:
        result = synthesize(args.design, args.config, args.overrides, part=args.part,
                            package=args.package, freq_mhz=args.freq, seed=args.seed,
                            xilinx=args.xilinx, place_and_route=args.pnr,
                            limits=dict(args.limit), work_dir=args.work,
                            timeout=args.timeout, progress=progress,
                            nextpnr_args=args.nextpnr_args)
    except SynthError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        if args.json:
            failure = {"ok": False, "error": str(exc)}
            if isinstance(exc, DoesNotFit):
                failure["does_not_fit"] = [{"resource": r, "used": u, "available": a}
                                           for r, u, a in exc.overflows]
            _write_json(args.json, failure)
        return 3 if isinstance(exc, DoesNotFit) else 1
    except OSError as exc:  # the work folder or a log could not be written
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print()
    print_report(result)
    if args.json and not _write_json(args.json, {"ok": True, **result}):
        return 1
    return 0


def _write_json(path: Path, data):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        return True
    except OSError as exc:
        print(f"{PROG}: error: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return False


if __name__ == "__main__":
    sys.exit(main())

"""The synthesis flow: Verilog -> Yosys ``synth_ecp5`` -> nextpnr-ecp5 out of context, and
Yosys ``synth_xilinx`` for an UltraScale+ estimate, with the figures gathered in a dict."""

import json
import re
import time
from pathlib import Path

from . import parse
from .designs import DESIGNS, design_verilog, resolve_config, verilog_memories
from .errors import DoesNotFit, SynthError
from .tools import NEXTPNR_ECP5, YOSYS, ToolRun, ToolTimeout, find_tool, run_tool

__all__ = ["ECP5_PARTS", "DEFAULT_PART", "DEFAULT_FREQ_MHZ", "LIMIT_NAMES", "synthesize",
           "check_limits", "ecp5_summary", "xilinx_summary", "is_tag_store", "WORK_ROOT"]

WORK_ROOT = Path(__file__).resolve().parents[2] / "build" / "synth"

# nextpnr-ecp5's device flags and the parts they name.
ECP5_PARTS = {
    "12k": "LFE5U-12F", "25k": "LFE5U-25F", "45k": "LFE5U-45F", "85k": "LFE5U-85F",
    "um-25k": "LFE5UM-25F", "um-45k": "LFE5UM-45F", "um-85k": "LFE5UM-85F",
    "um5g-25k": "LFE5UM5G-25F", "um5g-45k": "LFE5UM5G-45F", "um5g-85k": "LFE5UM5G-85F",
}
DEFAULT_PART = "85k"
DEFAULT_PACKAGE = "CABGA381"  # every ECP5 size comes in it
# A target to place and route for; the report gives the achieved Fmax whether or not it is
# met (--timing-allow-fail), so it steers the timing-driven placer but fails nothing.
DEFAULT_FREQ_MHZ = 100.0
XILINX_FAMILY = "xcup"

# What each nextpnr resource is, for the one-line "does not fit" message.
_NEXTPNR_RESOURCE = {
    "TRELLIS_COMB": "TRELLIS_COMB (LUT4 and carry)", "TRELLIS_FF": "TRELLIS_FF (flip-flops)",
    "TRELLIS_RAMW": "TRELLIS_RAMW (LUTRAM)", "DP16KD": "DP16KD (block RAM)",
    "MULT18X18D": "MULT18X18D (DSP)",
}

# Primitives that hold memories, whose cell names say which memory they implement.
_ECP5_MEMORY_CELLS = ("DP16KD", "TRELLIS_DPR16X4")
_XILINX_MEMORY_CELLS = ("RAMB36E2", "RAMB18E2", "URAM288", "RAM32M", "RAM32M16", "RAM64M",
                        "RAM64M8", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM256X1D",
                        "RAM32X1S", "RAM64X1S", "RAM128X1S", "RAM256X1S", "RAM512X1S")

_TAG_STORE = re.compile(r"(^|\.)bank\d+\.bank\.mem$")


def is_tag_store(memory: str):
    """Whether a flattened memory name is an EAL tag-store bank: ``TagBank`` (and the lfu
    bank) name their memory ``mem``; the engine's ``bank<N>`` pipeline names its bank ``bank``."""
    return bool(_TAG_STORE.search(memory))


def ecp5_summary(counts: dict):
    """The headline ECP5 figures from Yosys' cell counts."""
    return {
        "luts": counts.get("LUT4", 0),
        "ffs": counts.get("TRELLIS_FF", 0),
        "bram": counts.get("DP16KD", 0),
        "dsp": counts.get("MULT18X18D", 0) + counts.get("ALU54B", 0),
        "lutram": counts.get("TRELLIS_DPR16X4", 0),
        "carry": counts.get("CCU2C", 0),
        "cells": sum(counts.values()),
    }


def xilinx_summary(counts: dict):
    """The headline UltraScale+ figures from Yosys' cell counts (``synth_xilinx``)."""
    def total(prefixes):
        return sum(n for kind, n in counts.items() if kind.startswith(prefixes))
    return {
        "luts": sum(n for kind, n in counts.items() if re.fullmatch(r"LUT[1-6](_2)?", kind)),
        "ffs": total(("FDRE", "FDSE", "FDCE", "FDPE")),
        "ramb36": counts.get("RAMB36E2", 0),
        "ramb18": counts.get("RAMB18E2", 0),
        "uram": counts.get("URAM288", 0),
        "dsp": counts.get("DSP48E2", 0),
        "lutram": sum(n for kind, n in counts.items()
                      if kind.startswith("RAM") and not kind.startswith("RAMB")),
        "carry": total(("CARRY4", "CARRY8")),
        "cells": sum(counts.values()),
    }


# --limit names: the summary keys and their primitive names.
LIMIT_NAMES = {"luts": "LUT4", "ffs": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D",
               "lutram": "TRELLIS_DPR16X4", "carry": "CCU2C", "cells": "cells"}


def check_limits(summary: dict, limits: dict):
    """Raise :class:`DoesNotFit` naming every resource of ``summary`` (see
    :func:`ecp5_summary`) above its limit; ``limits`` maps a summary key or a primitive name
    (``LUT4``, ``DP16KD``...) to the most allowed."""
    by_name = {prim: key for key, prim in LIMIT_NAMES.items()}
    over = []
    for name, most in limits.items():
        key = name if name in summary else by_name.get(name)
        if key is None:
            raise SynthError(f"unknown --limit resource {name!r}: use one of "
                             f"{', '.join(sorted(set(LIMIT_NAMES) | set(LIMIT_NAMES.values())))}")
        if summary[key] > most:
            over.append((LIMIT_NAMES[key], summary[key], most))
    if over:
        raise DoesNotFit("the --limit budget", over)


def _yosys_script(verilog: str, top: str, synth: str, memory_cells, extra=""):
    """A Yosys script: read, synthesize, write the cell counts and, per memory primitive,
    the cells' names (they carry the name of the memory they implement)."""
    lines = [f"read_verilog {verilog}", f"{synth} -top {top}{extra}",
             "tee -q -o stat.json stat -json"]
    lines += [f"tee -q -o cells_{kind}.txt select -list t:{kind}" for kind in memory_cells]
    return "\n".join(lines) + "\n"


def _memories(work: Path, log: str, top: str, sizes: dict, memory_cells):
    """Per memory: size, where Yosys put it and how many primitives it took; plus the tag
    store's verdict (all of it in block RAM or not)."""
    mapped = parse.memory_mappings(log, top)
    prims = {}
    for kind in memory_cells:
        path = work / f"cells_{kind}.txt"
        if path.exists():
            for cell in parse.selected_cells(path.read_text()):
                prims.setdefault(kind, []).append(cell)
    rows = []
    for name in sorted(set(sizes) | set(mapped)):
        width, depth = sizes.get(name, (0, 0))
        via = mapped.get(name)
        used = {}
        for kind, cells in prims.items():
            n = sum(1 for cell in cells if cell == name or cell.startswith(name + "."))
            if n:
                used[kind] = n
        rows.append({"name": name, "width": width, "depth": depth, "bits": width * depth,
                     "mapped_via": via,
                     # A memory no mapping pass logged was optimised away or into plain
                     # registers before memory mapping (small FIFOs, for instance).
                     "kind": parse.memory_kind(via) if via else "registers or removed",
                     "primitives": used, "tag_store": is_tag_store(name)})
    tags = [r for r in rows if r["tag_store"]]
    kinds = {}
    for r in tags:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    verdict = {"memories": len(tags), "kinds": kinds,
               "in_block_ram": bool(tags) and all(r["kind"] == "block RAM" for r in tags),
               "primitives": {}}
    for r in tags:
        for kind, n in r["primitives"].items():
            verdict["primitives"][kind] = verdict["primitives"].get(kind, 0) + n
    return rows, verdict


def _run_yosys(work: Path, name: str, script: str, timeout):
    """Run a Yosys script in ``work``; returns (log text, seconds)."""
    (work / f"{name}.ys").write_text(script)
    # Yosys' standard output is its whole log (what -l would write).
    status, seconds = run_tool(YOSYS, ["-s", f"{name}.ys"], work / f"{name}.log", work, timeout)
    log = _read(work / f"{name}.log")
    if status != 0:
        raise SynthError(f"Yosys failed: {parse.first_error(log, f'exit status {status}')} "
                         f"(log: {work / f'{name}.log'})")
    return log, seconds


def _read(path: Path):
    return path.read_text(errors="replace") if path.exists() else ""


def _slug(design, config, overrides, part):
    text = "-".join([design, config, *overrides, part])
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).replace("=", "")


def synthesize(design="lookup_engine", config=None, overrides=(), part=DEFAULT_PART,
               package=DEFAULT_PACKAGE, freq_mhz=DEFAULT_FREQ_MHZ, seed=1, xilinx=False,
               place_and_route=True, limits=None, work_dir=None, timeout=None, progress=None,
               nextpnr_args=()):
    """Synthesize ``design`` (see :data:`~hotline_hw.synth.designs.DESIGNS`) in configuration
    ``config`` (a name; ``None``: the design's smallest useful one) with ``overrides``
    (``"field=value"``) for the ECP5 ``part`` (a nextpnr device flag, :data:`ECP5_PARTS`):
    Yosys ``synth_ecp5``, then nextpnr-ecp5 out of context (no pins, no global clock
    network) aiming at ``freq_mhz``; with ``xilinx`` also Yosys ``synth_xilinx -family xcup``
    (run beside the ECP5 flow: the two are independent).

    ``limits`` (``{resource: most}``, see :func:`check_limits`) are checked on Yosys' counts
    before place and route. ``nextpnr_args`` go to nextpnr as they are (``--router
    router2``). Each tool gets ``timeout`` seconds; nextpnr past it still yields the Fmax it
    estimated after placement (``"routed": False``). ``progress`` is called with
    a line of text as steps finish. Returns a JSON-ready dict of the figures; raises
    :class:`SynthError` (or :class:`DoesNotFit`, naming the resource that ran out and by how
    much) with a one-line message.
    """
    say = progress or (lambda line: None)
    if part not in ECP5_PARTS:
        raise SynthError(f"unknown ECP5 part {part!r}: choose one of {', '.join(ECP5_PARTS)}")
    if not freq_mhz > 0:
        raise SynthError(f"the frequency target must be positive, not {freq_mhz}")
    config = config or DESIGNS.get(design, DESIGNS["lookup_engine"]).default_config
    cfg = resolve_config(design, config, overrides)
    # Find the tools before elaborating, so a missing one fails at once.
    find_tool(YOSYS)
    if place_and_route:
        find_tool(NEXTPNR_ECP5)
    work = Path(work_dir) if work_dir else WORK_ROOT / _slug(design, config, overrides, part)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    top, text = design_verilog(design, cfg)
    (work / "design.v").write_text(text)
    sizes = verilog_memories(top, text)
    result = {
        "design": design, "config": config, "overrides": list(overrides),
        "description": cfg.describe(), "top": top, "verilog_lines": len(text.splitlines()),
        "elaborate_s": round(time.perf_counter() - started, 2), "work_dir": str(work),
    }
    say(f"{design} {config}{' ' + ' '.join(overrides) if overrides else ''}: "
        f"{result['verilog_lines']} lines of Verilog in {result['elaborate_s']:.1f} s ({work})")

    xilinx_run = None
    if xilinx:
        xwork = work / "xilinx"
        xwork.mkdir(exist_ok=True)
        (xwork / "xilinx.ys").write_text(_yosys_script(
            "../design.v", top, f"synth_xilinx -family {XILINX_FAMILY}", _XILINX_MEMORY_CELLS,
            # Flattened (hierarchical synth_xilinx trips an assertion in Yosys 0.70's ABC
            # re-integration); no I/O or clock buffers: an estimate of the core alone.
            " -flatten -noiopad -noclkbuf"))
        xilinx_run = ToolRun(YOSYS, ["-s", "xilinx.ys"], xwork / "xilinx.log", xwork)
    try:
        script = _yosys_script("design.v", top, "synth_ecp5", _ECP5_MEMORY_CELLS,
                               " -json netlist.json")
        log, seconds = _run_yosys(work, "ecp5", script, timeout)
        counts = parse.yosys_cell_counts((work / "stat.json").read_text())
        memories, tag_store = _memories(work, log, top, sizes, _ECP5_MEMORY_CELLS)
        ecp5 = {"part": part, "device": ECP5_PARTS[part], "package": package,
                "yosys_s": round(seconds, 1), "cells_by_type": counts,
                "summary": ecp5_summary(counts), "memories": memories, "tag_store": tag_store}
        result["ecp5"] = ecp5
        s = ecp5["summary"]
        say(f"synth_ecp5 {seconds:.1f} s: LUT4 {s['luts']}, TRELLIS_FF {s['ffs']}, "
            f"DP16KD {s['bram']}, MULT18X18D {s['dsp']}, cells {s['cells']}")
        if limits:
            check_limits(ecp5["summary"], limits)
        if place_and_route:
            pnr = _place_and_route(work, part, package, freq_mhz, seed, timeout, memories,
                                   nextpnr_args)
            ecp5["nextpnr"] = pnr
            say(f"nextpnr-ecp5 {pnr['seconds']:.1f} s: Fmax {pnr['fmax_mhz']:.2f} MHz"
                + ("" if pnr["routed"] else " (after placement; routing unfinished)"))
        if xilinx_run:
            run, xilinx_run = xilinx_run, None
            result["xilinx"] = _finish_xilinx(run, xwork, top, sizes, timeout)
    finally:
        if xilinx_run:  # the ECP5 flow failed: the Xilinx run is not wanted any more
            xilinx_run.abandon()
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


def _finish_xilinx(run: ToolRun, xwork: Path, top, sizes, timeout):
    """Collect the ``synth_xilinx`` run that went beside the ECP5 flow."""
    status = run.finish(timeout)
    seconds = run.seconds
    log = _read(xwork / "xilinx.log")
    if status != 0:
        raise SynthError(f"Yosys synth_xilinx failed: "
                         f"{parse.first_error(log, f'exit status {status}')} "
                         f"(log: {xwork / 'xilinx.log'})")
    counts = parse.yosys_cell_counts((xwork / "stat.json").read_text())
    memories, tag_store = _memories(xwork, log, top, sizes, _XILINX_MEMORY_CELLS)
    return {"family": XILINX_FAMILY, "yosys_s": round(seconds, 1), "cells_by_type": counts,
            "summary": xilinx_summary(counts), "memories": memories, "tag_store": tag_store}


def _place_and_route(work: Path, part, package, freq_mhz, seed, timeout, memories,
                     extra_args=()):
    """nextpnr-ecp5 out of context; returns utilisation, Fmax and critical path, or raises
    :class:`DoesNotFit` when a resource of the part ran out.

    When routing does not finish within ``timeout``, the Fmax that nextpnr estimated after
    placement is returned instead, marked ``"routed": False``: a congested design still
    gets a figure (an optimistic one: routing only adds delay).
    """
    args = [f"--{part}", "--package", package, "--out-of-context", "--json", "netlist.json",
            "--freq", f"{freq_mhz:g}", "--timing-allow-fail", "--seed", str(seed),
            "--report", "report.json", *extra_args]
    report_path = work / "report.json"
    report_path.unlink(missing_ok=True)
    try:
        status, seconds = run_tool(NEXTPNR_ECP5, args, work / "nextpnr.log", work, timeout)
        timed_out = None
    except ToolTimeout as exc:
        status, seconds, timed_out = None, timeout, exc
    log = _read(work / "nextpnr.log")
    usage = parse.nextpnr_utilisation(log)
    over = parse.overflows(usage)
    if over:
        raise DoesNotFit(f"{ECP5_PARTS[part]} (nextpnr-ecp5 --{part})",
                         [(_NEXTPNR_RESOURCE.get(res, res), used, avail)
                          for res, used, avail in over])
    fmax = parse.nextpnr_fmax(log)
    if timed_out and not fmax:  # not even placed
        raise timed_out
    if not timed_out and (status != 0 or not report_path.exists()):
        raise SynthError(f"nextpnr-ecp5 failed: {parse.first_error(log, f'exit status {status}')}"
                         f" (log: {work / 'nextpnr.log'})")
    if not fmax:
        raise SynthError(f"nextpnr-ecp5 reported no Max frequency (log: {work / 'nextpnr.log'})")
    clock = "clk" if "clk" in fmax else sorted(fmax)[0]
    achieved, target, met = fmax[clock]
    result = {"seconds": round(seconds, 1), "seed": seed, "extra_args": list(extra_args),
              "clock": clock, "routed": not timed_out, "fmax_mhz": achieved,
              "target_mhz": target, "timing_met": met,
              "utilisation": {res: {"used": u, "available": a} for res, (u, a) in usage.items()},
              "fmax_report_mhz": None, "critical_path": None}
    if timed_out:
        result["note"] = f"routing unfinished: {timed_out}"
        return result
    report = json.loads(report_path.read_text())
    # nextpnr's own report: the same utilisation as the log's block, the final Fmax, the path.
    if report.get("utilization"):
        result["utilisation"] = {res: {"used": v["used"], "available": v["available"]}
                                 for res, v in report["utilization"].items()}
    result["fmax_report_mhz"] = round(report.get("fmax", {}).get(clock, {}).get("achieved", 0), 2)
    result["critical_path"] = parse.critical_path(report, clock, [m["name"] for m in memories])
    return result

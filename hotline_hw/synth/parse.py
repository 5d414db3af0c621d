"""Readers of what Yosys and nextpnr write: cell counts, memory mapping, utilisation, Fmax,
the critical path. Pure functions of text, so the tests check them on canned logs."""

import json
import re

__all__ = ["yosys_cell_counts", "memory_mappings", "memory_kind", "selected_cells",
           "nextpnr_utilisation", "nextpnr_fmax", "nextpnr_errors", "overflows",
           "critical_path", "describe_endpoint", "first_error"]


def yosys_cell_counts(stat_json: str):
    """``{cell type: count}`` from ``stat -json``, summed over the modules it lists.

    Amaranth's ``$scopeinfo`` cells (hierarchy names, no hardware) are left out.
    """
    stat = json.loads(stat_json)
    counts = {}
    for module in stat.get("modules", {}).values():
        for kind, n in module.get("num_cells_by_type", {}).items():
            if kind != "$scopeinfo":
                counts[kind] = counts.get(kind, 0) + n
    return counts


_LIBMAP = re.compile(r"^mapping memory (\S+) via (\S+)", re.M)
_MEMORY_MAP = re.compile(r"^Mapping memory \\?(\S+) in module \\?(\S+):", re.M)


def memory_mappings(yosys_log: str, top: str):
    """``{memory name: how it was mapped}`` from a Yosys log: the library cell that
    ``memory_libmap`` chose (``$__PDPW16KD_``, ``$__TRELLIS_DPR16X4_``,
    ``$__XILINX_LUTRAM_SDP_`` ...) or ``"logic"`` where ``memory_map`` turned the memory
    into flip-flops and multiplexers. Names are relative to ``top`` (``bank0.mem``)."""
    found = {}
    for name, via in _LIBMAP.findall(yosys_log):
        found[name[len(top) + 1:] if name.startswith(top + ".") else name] = via
    for name, _module in _MEMORY_MAP.findall(yosys_log):
        found[name] = "logic"
    return found


def memory_kind(via: str):
    """What a :func:`memory_mappings` value is: ``"block RAM"``, ``"UltraRAM"``,
    ``"LUTRAM"`` or ``"flip-flops"``."""
    upper = via.upper()
    if via == "logic":
        return "flip-flops"
    # ECP5: $__DP16KD_ / $__PDPW16KD_ (EBR), $__TRELLIS_DPR16X4_ (distributed RAM);
    # Xilinx: $__XILINX_BLOCKRAM_*, $__XILINX_ULTRARAM_*, $__XILINX_LUTRAM_*.
    if "ULTRARAM" in upper:
        return "UltraRAM"
    if "LUTRAM" in upper or "DPR16X4" in upper:
        return "LUTRAM"
    if "BLOCKRAM" in upper or "16KD" in upper:
        return "block RAM"
    return via


def selected_cells(select_list: str):
    """Cell names from ``select -list`` output (``module/cell`` lines)."""
    return [line.split("/", 1)[1] for line in select_list.splitlines() if "/" in line]


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def nextpnr_utilisation(log: str):
    """``{resource: (used, available)}`` from the last "Device utilisation" block of a
    nextpnr log (printed after packing, before placement: present even when placement
    then fails)."""
    blocks = log.split("Device utilisation:")
    if len(blocks) < 2:
        return {}
    usage = {}
    for line in blocks[-1].splitlines()[1:]:
        match = _UTIL_LINE.match(line.strip("\r"))
        if match:
            usage[match.group(1)] = (int(match.group(2)), int(match.group(3)))
        elif not line.strip() or not line.startswith("Info:"):
            break
    return usage


_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz\s+\((PASS|FAIL) at "
                   r"([\d.]+) MHz\)")


def nextpnr_fmax(log: str):
    """``{clock: (achieved MHz, target MHz, passed)}`` from the last "Max frequency for
    clock" line of each clock (nextpnr prints one after placement and a final one after
    routing)."""
    found = {}
    for clock, mhz, verdict, target in _FMAX.findall(log):
        found[clock] = (float(mhz), float(target), verdict == "PASS")
    return found


def nextpnr_errors(log: str):
    """The ``ERROR:`` lines of a nextpnr or Yosys log, without the prefix."""
    return [line.split("ERROR:", 1)[1].strip() for line in log.splitlines() if "ERROR:" in line]


def first_error(log: str, default: str):
    """The first ``ERROR:`` line of a log, or ``default`` when there is none."""
    errors = nextpnr_errors(log)
    return errors[0] if errors else default


def overflows(usage: dict):
    """``[(resource, used, available)]`` of every resource used beyond what there is."""
    return [(res, used, avail) for res, (used, avail) in usage.items() if used > avail]


def describe_endpoint(cell: str, port: str, memories):
    """A reader's name for a timing-path end: the memory a block-RAM/LUTRAM cell belongs
    to and whether the port reads or writes it, or the register a flip-flop holds (Yosys
    names an FF ``<signal>_TRELLIS_FF_Q...``), else the cell itself."""
    for mem in sorted(memories, key=len, reverse=True):
        if cell == mem or cell.startswith(mem + "."):
            if port.startswith("DO"):
                role = "read data"
            elif port.startswith("DI") or port.startswith("WD"):
                role = "write data"
            elif port.startswith("AD") or port.startswith("WAD") or port.startswith("RAD"):
                role = "address"
            else:
                role = f"port {port}"
            return f"{mem} ({role})"
    for marker in ("_TRELLIS_FF_Q", "_FDRE_Q", "_FDSE_Q"):
        if marker in cell:
            return f"register {cell.split(marker, 1)[0]}"
    return f"{cell}.{port}"


def critical_path(report: dict, clock: str | None = None, memories=()):
    """The critical path of ``clock`` (default: the first) from nextpnr's ``--report`` JSON:
    total, logic and routing delay (ns; clock-to-out and setup count as logic, as nextpnr's
    own summary does), logic levels, and both ends named by :func:`describe_endpoint`.
    ``None`` when the report has no path."""
    paths = report.get("critical_paths") or []
    chosen = None
    for path in paths:
        if clock is None or clock in path.get("from", "") or clock in path.get("to", ""):
            chosen = path
            break
    if not chosen or not chosen.get("path"):
        return None
    steps = chosen["path"]
    routing = sum(s["delay"] for s in steps if s.get("type") == "routing")
    total = sum(s["delay"] for s in steps)
    source, sink = steps[0]["from"], steps[-1]["to"]
    return {
        "delay_ns": round(total, 3),
        "logic_ns": round(total - routing, 3),
        "routing_ns": round(routing, 3),
        "logic_levels": sum(1 for s in steps if s.get("type") == "logic"),
        "from_cell": source["cell"], "from_port": source["port"],
        "to_cell": sink["cell"], "to_port": sink["port"],
        "from": describe_endpoint(source["cell"], source["port"], memories),
        "to": describe_endpoint(sink["cell"], sink["port"], memories),
    }

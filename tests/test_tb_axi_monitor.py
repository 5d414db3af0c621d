"""The device testbench's own checkers can fail: the AXI handshake monitor
(verif/tb/axi_monitor.py) and the host memory's n-th-access error injector
(verif/tb/host_memory.py).

The monitor is tested twice: in Python (its rule, :class:`ChannelChecker`, fed hand-made
samples, X/Z included, which a 2-state Verilator never shows) and in simulation, on a tiny
Verilog source that misbehaves on purpose (mode 1 drops ``valid`` before ``ready``, 2 changes
``data`` while stalled, 3 changes ``tag`` while stalled, 0 behaves). The cocotb side records
every cycle's ``(valid, ready, data, tag)`` next to the monitor's findings, and the pytest side
recomputes the violations from that trace with a plain-Python reference.

The cocotb tests live in this file too (named ``monitor_*`` so that pytest does not collect
them); the simulator imports this module as ``test_tb_axi_monitor``.
"""

import json
import os
import random
from pathlib import Path

import pytest

SOURCE = """
module hs_src(input clk, input rst, input [1:0] mode, input ready,
              output reg valid, output reg [7:0] data, output reg [3:0] tag);
  reg [1:0] stall;
  always @(posedge clk) begin
    if (rst) begin
      valid <= 0; data <= 0; tag <= 0; stall <= 0;
    end else if (!valid || ready) begin
      valid <= 1; data <= data + 1; tag <= tag + 1; stall <= 0;
    end else begin
      stall <= stall + 1;
      if (stall == 1 && mode == 1) valid <= 0;
      if (stall == 1 && mode == 2) data <= data ^ 8'h80;
      if (stall == 1 && mode == 3) tag <= ~tag;
    end
  end
endmodule
"""
MODES = {0: None, 1: "valid_dropped", 2: "payload_changed", 3: "payload_changed"}


# ---- Python domain: the rule ------------------------------------------------------------

def test_checker_rules_on_hand_made_samples():
    from verif.tb.axi_monitor import ChannelChecker
    c = ChannelChecker("x.aw", "x_awvalid")
    assert c.sample(1, 1, 0, {"addr": 5}) == []              # offered
    assert c.sample(2, 1, 0, {"addr": 5}) == []              # held, same payload
    assert c.sample(3, 1, 1, {"addr": 5}) == []              # taken
    assert c.sample(4, 0, 0, {"addr": 9}) == []              # idle: anything goes
    assert c.sample(5, 1, 1, {"addr": 6}) == []              # taken at once
    assert c.sample(6, 1, 1, {"addr": 7}) == []              # back to back: may change
    v = c.sample(7, 1, 0, {"addr": 8}) + c.sample(8, 1, 0, {"addr": 3})
    assert [(x.kind, x.signal, x.cycle) for x in v] == [("payload_changed", "addr", 8)]
    assert "x.aw cycle 8: addr" in str(v[0])
    v = c.sample(9, 0, 1, {})
    assert [(x.kind, x.signal, x.cycle) for x in v] == [("valid_dropped", "x_awvalid", 9)]
    c.sample(10, 1, 0, {"addr": 1})
    c.reset()                                                # reset ends the handshake
    assert c.sample(11, 0, 0, {}) == []
    assert c.transfers == 3 and len(c.violations) == 2


def test_checker_reports_x_and_z_only_when_asked():
    from cocotb.types import LogicArray, Logic
    from verif.tb.axi_monitor import ChannelChecker
    payload = {"data": LogicArray("01XZ"), "last": Logic("1")}
    quiet = ChannelChecker("w", "wvalid")
    assert quiet.sample(1, Logic("1"), Logic("1"), payload) == []
    loud = ChannelChecker("w", "wvalid", check_xz=True)
    v = loud.sample(1, Logic("1"), Logic("1"), payload)
    assert [(x.kind, x.signal) for x in v] == [("xz", "data")]
    assert loud.sample(2, Logic("0"), Logic("1"), payload) == []   # not valid: not checked
    v = loud.sample(3, Logic("X"), Logic("0"), {})
    assert [(x.kind, x.signal) for x in v] == [("xz", "wvalid")]


# ---- Python domain: the n-th-access injector ---------------------------------------------

def test_error_injector_nth_and_ranges():
    from verif.tb.host_memory import ErrorInjector, RESP_OKAY, RESP_SLVERR, RESP_DECERR
    inj = ErrorInjector()
    inj.add_nth(0x100, 0x108, 2, RESP_DECERR, kind="read")
    assert inj.pending() == 1
    assert inj.resp_for("read", 0x0, 0x100) == RESP_OKAY       # ends where the range starts
    assert inj.resp_for("write", 0x100, 16) == RESP_OKAY       # other kind: not counted
    assert inj.resp_for("read", 0xF0, 32) == RESP_OKAY          # 1st touching read
    assert inj.resp_for("read", 0x104, 4) == RESP_DECERR        # 2nd: fails
    assert inj.resp_for("read", 0x100, 8) == RESP_OKAY          # 3rd: one-shot
    assert inj.pending() == 0
    assert inj.failed == [("read", 0x104, 4, RESP_DECERR)]
    inj.add_nth(0, 16, 1, RESP_SLVERR, kind="write", count=2)
    inj.add_range(0x200, 0x210, RESP_DECERR, kind="write")
    got = [inj.resp_for("write", a, 16) for a in (0, 0x200, 0, 0, 0x200)]
    assert got == [RESP_SLVERR, RESP_DECERR, RESP_SLVERR, RESP_OKAY, RESP_DECERR]
    inj.clear()
    assert inj.resp_for("write", 0x200, 16) == RESP_OKAY
    with pytest.raises(ValueError):
        inj.add_nth(0, 8, 0)
    with pytest.raises(ValueError):
        inj.add_range(0, 8, 1)


def test_error_injector_against_a_reference():
    """Random rules and bursts against a direct restatement of the rule."""
    from verif.tb.host_memory import ErrorInjector, RESP_OKAY
    rng = random.Random(5)
    for _ in range(50):
        inj, rules = ErrorInjector(), []
        for _ in range(rng.randrange(1, 4)):
            lo = rng.randrange(0, 512, 8)
            rule = (rng.choice(["read", "write"]), lo, lo + rng.choice([8, 64, 200]),
                    rng.choice([2, 3]), rng.choice([None, 1, 2, 5]), rng.randrange(1, 3))
            rules.append(rule)
            if rule[4] is None:
                inj.add_range(rule[1], rule[2], rule[3], rule[0])
            else:
                inj.add_nth(rule[1], rule[2], rule[4], rule[3], rule[0], rule[5])
        seen = [0] * len(rules)
        for _ in range(40):
            kind, addr, n = rng.choice(["read", "write"]), rng.randrange(0, 600, 16), 16 * rng.randrange(1, 5)
            want = RESP_OKAY
            for i, (k, lo, hi, resp, nth, count) in enumerate(rules):
                if k == kind and addr < hi and lo < addr + n:
                    seen[i] += 1
                    if want == RESP_OKAY and (nth is None or nth <= seen[i] < nth + count):
                        want = resp
            assert inj.resp_for(kind, addr, n) == want


# ---- simulation: the monitor on a misbehaving source ------------------------------------

def reference_violations(trace, names=("data", "tag")):
    """The rules restated over a trace of ``(cycle, rst, valid, ready, data, tag)``."""
    out, held = [], None
    for cycle, rst, valid, ready, *payload in trace:
        if rst:
            held = None
            continue
        if not valid:
            if held is not None:
                out.append((cycle, "valid_dropped", "hs_valid"))
            held = None
            continue
        if held is not None:
            out += [(cycle, "payload_changed", f"hs_{n}") for n, a, b in zip(names, held, payload)
                    if a != b]
        held = None if ready else payload
    return out


def test_monitor_catches_a_misbehaving_source():
    from verif.tb.runner import REPO_ROOT, build_top, run_cocotb
    runner, build_dir = build_top("hs_src", SOURCE, "tb_hs_src")
    work = run_cocotb(runner, build_dir, "hs_src", "test_tb_axi_monitor", Path(__file__),
                      {"HS_REPORT": "report.json"}, name="hs_src")
    report = json.loads((work / "report.json").read_text())
    for mode, kind in MODES.items():
        r = report[str(mode)]
        got = [tuple(v) for v in r["violations"]]
        want = reference_violations(r["trace"])
        assert got == [tuple(w) for w in want], f"mode {mode}"
        assert r["transfers"] > 50, f"mode {mode}: the monitor saw too few handshakes"
        if kind is None:
            assert got == [], f"mode 0 behaves: {got[:3]}"
            continue
        assert len(got) >= 5 and {g[1] for g in got} == {kind}, f"mode {mode}: {got[:3]}"
        signal = {1: "hs_valid", 2: "hs_data", 3: "hs_tag"}[mode]
        assert {g[2] for g in got} == {signal}, f"mode {mode} names {got[:3]}"
        assert r["message"] and signal in r["message"] and "cycle" in r["message"]


try:
    import cocotb
    from cocotb.triggers import RisingEdge, ReadOnly
except ImportError:                                           # pragma: no cover
    cocotb = None

if cocotb is not None and os.environ.get("HS_REPORT"):
    @cocotb.test()
    async def monitor_on_misbehaving_source(dut):
        """Every mode with random ready; records the trace and the monitor's findings."""
        from cocotb.clock import Clock
        from verif.tb.axi_monitor import HandshakeMonitor, HandshakeViolation
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        mon = HandshakeMonitor(dut.clk, dut.rst)
        # Named like a channel's signals in a real bench: valid, ready, payload handles.
        mon.add_channel("hs", dut.valid, dut.ready, {"hs_data": dut.data, "hs_tag": dut.tag})
        mon.channels["hs"].valid_name = "hs_valid"
        mon.start()
        rng = random.Random(3)
        report = {}
        for mode in MODES:
            await RisingEdge(dut.clk)             # leave the read-only phase
            dut.mode.value = mode
            dut.rst.value = 1
            dut.ready.value = 0
            for _ in range(3):
                await RisingEdge(dut.clk)
            mon.clear()
            checker = mon.channels["hs"]
            transfers0 = checker.transfers
            trace = []
            dut.rst.value = 0
            await RisingEdge(dut.clk)
            for _ in range(400):
                dut.ready.value = int(rng.random() < 0.4)
                # Read-only phase: the monitor has sampled this edge (mon.cycle), and the
                # values now are the ones the next edge samples (nothing changes until then).
                await ReadOnly()
                trace.append((mon.cycle + 1, int(dut.rst.value), int(dut.valid.value),
                              int(dut.ready.value), int(dut.data.value), int(dut.tag.value)))
                await RisingEdge(dut.clk)
            await ReadOnly()                  # the monitor has sampled the last edge
            message = ""
            try:
                mon.assert_clean()
            except HandshakeViolation as exc:
                message = str(exc)
            report[str(mode)] = {"violations": [(v.cycle, v.kind, v.signal) for v in mon.violations],
                                 "trace": trace, "message": message,
                                 "transfers": checker.transfers - transfers0}
        with open(os.environ["HS_REPORT"], "w") as f:
            json.dump(report, f)

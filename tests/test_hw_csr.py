"""Amaranth-simulator tests of :class:`hotline_hw.csr.CsrBank` against a plain-Python model
of the register semantics, built from :func:`hotline_spec.registers.register_map` (the
description), not from ``csr.py``.

The model is cycle-level and follows the timing contract of ``CsrBank``'s docstring: a write
is performed in the cycle after both its AW and W handshakes ("g"), answered on B from g + 1;
a read whose AR handshake is in cycle r takes the values of cycle r + 1 and answers from
r + 3; a table read port answers one cycle after its index, with the RAM as it was then.
"""

import random

import pytest
from amaranth import Module, ClockDomain
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from hotline_hw.csr import CsrBank, register_layout
from hotline_spec.config import DEFAULT_DEVICE, SMALL_DEVICE
from hotline_spec.registers import TABLE_REGISTERS, register_map

OKAY, SLVERR = 0, 2
M32 = 0xFFFF_FFFF
READ_PORTS = 2

CONFIGS = {"default": DEFAULT_DEVICE, "small": SMALL_DEVICE,
           "addr40": SMALL_DEVICE.replace(addr_bits=40),
           "addr36": DEFAULT_DEVICE.replace(addr_bits=36)}   # BASE_HI: 4 bits of a byte lane


class Model:
    """What the register description says a register file does, one clock cycle at a time."""

    def __init__(self, rmap):
        self.rmap = rmap
        dcfg = rmap.config
        self.table_at = {}      # offset -> (slot, word index)
        for t in range(dcfg.max_tables):
            for j, (what, _) in enumerate(TABLE_REGISTERS):
                self.table_at[rmap.offset(rmap.table(t, what))] = (t, j)
        # BASE_HI holds only the bits an addr_bits-wide bus address has.
        self.word_mask = [M32, (1 << (dcfg.addr_bits - 32)) - 1, M32, M32]
        self.reset()

    def reset(self):
        self.state = {r.name: r.reset for r in self.rmap
                      if r.access in ("rw", "w1c") and r.name not in self.table_at_names()}
        self.reg_error_addr = 0
        self.tables = [[0, 0, 0, 0] for _ in range(self.rmap.config.max_tables)]

    def table_at_names(self):
        return {r.name for r in self.rmap if r.offset in self.table_at}

    def read(self, offset, ro_inputs):
        """``(resp, data)`` of a read of ``offset`` with the ``ro`` inputs ``ro_inputs``."""
        if offset in self.table_at:
            t, j = self.table_at[offset]
            return OKAY, self.tables[t][j]
        r = self.rmap.at(offset)
        if r is None:
            return SLVERR, 0
        if r.access == "wo":
            return OKAY, 0
        if r.name == "REG_ERROR_ADDR":
            return OKAY, self.reg_error_addr
        if r.access == "ro":
            return OKAY, ro_inputs[r.name] & r.mask
        return OKAY, self.state[r.name]

    def cycle(self, write, read_error, sets, refuse):
        """Advance one cycle. ``write``: ``(offset, data, strb)`` performed this cycle or
        None; ``read_error``: offset of a read recorded as unmapped this cycle, or None;
        ``sets``: ``{w1c name: bits}``; ``refuse``: ``{wo name: bool}``.
        Returns ``(bresp, strobed wo name or None)`` of the write."""
        clears = {}
        err = 0
        err_addr = None
        result = (None, None)
        if write is not None:
            offset, data, strb = write
            bytes_ = sum(0xFF << 8 * k for k in range(4) if strb >> k & 1)
            r = self.rmap.at(offset)
            if offset in self.table_at:
                t, j = self.table_at[offset]
                old = self.tables[t][j]
                self.tables[t][j] = ((old & ~bytes_) | (data & bytes_)) & self.word_mask[j]
                result = (OKAY, None)
            elif r is None:
                err |= 1 << self.rmap["REG_ERROR"].field("unmapped").lsb
                result = (SLVERR, None)
            elif r.access == "ro":
                err |= 1 << self.rmap["REG_ERROR"].field("read_only").lsb
                result = (SLVERR, None)
            elif r.access == "wo":
                if refuse[r.name]:
                    err |= 1 << self.rmap["REG_ERROR"].field("refused").lsb
                    result = (SLVERR, None)
                else:
                    result = (OKAY, r.name)
            elif r.access == "rw":
                old = self.state[r.name]
                self.state[r.name] = ((old & ~bytes_) | (data & bytes_)) & r.mask
                result = (OKAY, None)
            else:  # w1c
                clears[r.name] = data & bytes_
                result = (OKAY, None)
            if result[0] == SLVERR:
                err_addr = offset
        if read_error is not None:
            err |= 1 << self.rmap["REG_ERROR"].field("unmapped").lsb
            if err_addr is None:        # a write's offset wins a tie
                err_addr = read_error
        if err_addr is not None:
            self.reg_error_addr = err_addr
        for r in self.rmap:
            if r.access == "w1c":
                s = err if r.name == "REG_ERROR" else sets.get(r.name, 0)
                self.state[r.name] = ((self.state[r.name] & ~clears.get(r.name, 0)) | s) \
                    & r.mask
        return result


def random_offset(rng, rmap, model, focus):
    x = rng.random()
    if x < 0.3:
        return rng.choice([r.offset for r in rmap if r.offset not in model.table_at])
    if x < 0.5:
        return rmap.offset(rng.choice(focus))
    if x < 0.75:
        return rng.choice(sorted(model.table_at))
    while True:
        offset = rng.randrange(1 << rmap.config.csr_addr_bits) & ~3
        if rmap.at(offset) is None and offset not in model.table_at:
            return offset


BUS_INPUTS = {"awaddr": 16, "awvalid": 1, "wdata": 32, "wstrb": 4, "wvalid": 1, "bready": 1,
              "araddr": 16, "arvalid": 1, "rready": 1}
BUS_OUTPUTS = ("awready", "wready", "bvalid", "bresp", "arready", "rvalid", "rdata", "rresp")


def no_combinational_path(ctx, bus, rng):
    """Every s_axil output stays put whatever the s_axil inputs do within the cycle."""
    saved = {n: ctx.get(getattr(bus, n)) for n in BUS_INPUTS}
    before = [ctx.get(getattr(bus, n)) for n in BUS_OUTPUTS]
    for _ in range(2):
        for n, bits in BUS_INPUTS.items():
            ctx.set(getattr(bus, n), rng.getrandbits(bits))
        assert [ctx.get(getattr(bus, n)) for n in BUS_OUTPUTS] == before
    for n, value in saved.items():
        ctx.set(getattr(bus, n), value)


def run_random(dcfg, seed, cycles, reset_at=()):
    rmap = register_map(dcfg)
    dut = CsrBank(rmap, table_read_ports=READ_PORTS)
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    model = Model(rmap)
    rng = random.Random(seed)
    slots = dcfg.max_tables
    ro = [r for r in rmap if r.access == "ro" and r.name != "REG_ERROR_ADDR"]
    w1c = [r for r in rmap if r.access == "w1c" and r.name != "REG_ERROR"]
    wo = [r for r in rmap if r.access == "wo"]
    q_regs = [r for r in rmap if r.access in ("rw", "w1c") and r.offset not in model.table_at]
    # Registers with behaviour beyond storage, the sticky ones weighted up.
    focus = ["REG_ERROR", "REG_ERROR_ADDR"] + [r.name for r in 3 * w1c + wo]
    bus = dut.bus
    stats = {"reads": 0, "writes": 0, "slverr": 0, "stb": 0, "table_checks": 0,
             "set_and_clear": 0, "resets": 0, "error_ties": 0}

    async def bench(ctx):
        ro_values = {r.name: 0 for r in ro}
        wr = None   # the write in flight: dict
        rd = None   # the read in flight
        table_prev = [None] * READ_PORTS   # (slot, tables snapshot) of the cycle before
        clear_from, clear_end = 0, slots   # cycles of the RAM clear after a reset
        resets = sorted(reset_at)
        for c in range(cycles):
            # ---- inputs of this cycle: a reset waits for an idle bus ---------------------
            in_reset = bool(resets) and c >= resets[0] and wr is None and rd is None
            ctx.set(cd.rst, in_reset)
            if in_reset:
                resets.pop(0)
                stats["resets"] += 1
            for r in rng.sample(ro, 3):
                ro_values[r.name] = rng.getrandbits(32)
                ctx.set(getattr(dut, f"r_{r.name}").as_value(), ro_values[r.name])
            sets = {r.name: (rng.getrandbits(32) if rng.random() < 0.4 else 0) for r in w1c}
            if wr is not None and wr["g"] == c and rmap.at(wr["offset"]) in w1c \
                    and rng.random() < 0.7:     # aim a set at the bits being cleared
                sets[rmap.at(wr["offset"]).name] |= wr["data"]
            for r in w1c:
                ctx.set(getattr(dut, f"set_{r.name}").as_value(), sets[r.name])
            refuse = {r.name: rng.random() < 0.4 for r in wo}
            for r in wo:
                ctx.set(getattr(dut, f"refuse_{r.name}"), refuse[r.name])
            slots_now = [rng.randrange(slots) for _ in range(READ_PORTS)]
            for i in range(READ_PORTS):
                ctx.set(dut.table_reads[i].table, slots_now[i])

            if not in_reset and wr is None and rng.random() < 0.5:
                wr = {"offset": random_offset(rng, rmap, model, focus),
                      "data": rng.getrandbits(32), "strb": rng.choice([0xF, 0xF, 0, 1, 2, 4,
                                                                       8, rng.getrandbits(4)]),
                      "aw_at": c + rng.choice([0, 0, 1, 3]), "w_at": c + rng.choice([0, 0, 2]),
                      "aw": None, "w": None, "g": None}
            if not in_reset and rd is None and rng.random() < 0.5:
                rd = {"offset": random_offset(rng, rmap, model, focus),
                      "ar_at": c + rng.choice([0, 0, 1, 2]), "ar": None, "answer": None}
            awvalid = wr is not None and wr["aw"] is None and c >= wr["aw_at"]
            wvalid = wr is not None and wr["w"] is None and c >= wr["w_at"]
            arvalid = rd is not None and rd["ar"] is None and c >= rd["ar_at"]
            bready = rng.random() < 0.6
            rready = rng.random() < 0.6
            ctx.set(bus.awvalid, awvalid)
            ctx.set(bus.wvalid, wvalid)
            ctx.set(bus.arvalid, arvalid)
            ctx.set(bus.bready, bready)
            ctx.set(bus.rready, rready)
            if wr is not None:
                ctx.set(bus.awaddr, wr["offset"])
                ctx.set(bus.wdata, wr["data"])
                ctx.set(bus.wstrb, wr["strb"])
            if rd is not None:
                ctx.set(bus.araddr, rd["offset"])

            # ---- what the block shows in this cycle -------------------------------------
            if c % 5 == 0:
                no_combinational_path(ctx, bus, rng)
            for r in q_regs:
                got = ctx.get(getattr(dut, f"q_{r.name}").as_value())
                assert got == model.state[r.name], (c, r.name, hex(got),
                                                    hex(model.state[r.name]))
            if c > clear_end:
                for i in range(READ_PORTS):
                    if table_prev[i] is not None:
                        slot, snap = table_prev[i]
                        e = dut.table_reads[i].entry
                        got = (ctx.get(e.base), ctx.get(e.stride), ctx.get(e.rows))
                        want = (snap[0] | snap[1] << 32, snap[2], snap[3])
                        assert got == want, (c, i, slot, got, want)
                        stats["table_checks"] += 1
            if clear_from <= c < clear_end:
                assert not (ctx.get(bus.awready) or ctx.get(bus.wready)
                            or ctx.get(bus.arready)), c
            write = None
            if wr is not None and wr["g"] == c:
                write = (wr["offset"], wr["data"], wr["strb"])
            stb_want = None
            read_error = None
            if rd is not None and rd["ar"] is not None and rd["ar"] + 1 == c:
                rd["answer"] = model.read(rd["offset"], ro_values)
                if rd["answer"][0] == SLVERR:
                    read_error = rd["offset"]
            # Sticky sets meeting a clear in the same cycle: counted to see it is exercised.
            if write is not None and rmap.at(write[0]) in w1c and write[2] & 1 and \
                    sets[rmap.at(write[0]).name] & write[1] & rmap.at(write[0]).mask:
                stats["set_and_clear"] += 1
            table_snap = [list(e) for e in model.tables]
            if in_reset:
                model.reset()
                clear_from, clear_end = c + 1, c + 1 + slots
                table_prev = [None] * READ_PORTS
                wr = rd = None
                await ctx.tick()
                continue
            if write is not None and read_error is not None:
                stats["error_ties"] += 1    # REG_ERROR_ADDR: the write's offset wins
            bresp, stb_want = model.cycle(write, read_error, sets, refuse)
            for r in wo:
                got = ctx.get(getattr(dut, f"stb_{r.name}"))
                assert got == (stb_want == r.name), (c, r.name, got, stb_want)
            if stb_want is not None:
                assert ctx.get(dut.wdata) == wr["data"], c
                stats["stb"] += 1
            if write is not None:
                wr["bresp"] = bresp
                stats["slverr"] += bresp == SLVERR

            # ---- bus handshakes ---------------------------------------------------------
            bvalid = ctx.get(bus.bvalid)
            assert bvalid == (wr is not None and wr["g"] is not None and c > wr["g"]), c
            if awvalid and ctx.get(bus.awready):
                wr["aw"] = c
            if wvalid and ctx.get(bus.wready):
                wr["w"] = c
            if wr is not None and wr["g"] is None and wr["aw"] is not None \
                    and wr["w"] is not None:
                wr["g"] = max(wr["aw"], wr["w"]) + 1
            if bvalid:
                assert ctx.get(bus.bresp) == wr["bresp"], (c, wr)
                if bready:
                    stats["writes"] += 1
                    wr = None
            rvalid = ctx.get(bus.rvalid)
            assert rvalid == (rd is not None and rd["ar"] is not None and c >= rd["ar"] + 3), c
            if arvalid and ctx.get(bus.arready):
                rd["ar"] = c
            if rvalid:
                got = (ctx.get(bus.rresp), ctx.get(bus.rdata))
                assert got == rd["answer"], (c, hex(rd["offset"]), got, rd["answer"])
                if rready:
                    stats["reads"] += 1
                    rd = None
            table_prev = [(slots_now[i], table_snap[slots_now[i]]) for i in range(READ_PORTS)]
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return stats


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_csr_bank_matches_register_model(name):
    """Random reads and writes (random strobes; mapped, unmapped, read-only, write-only and
    table offsets; reads and writes overlapping) with random ro inputs, w1c sets, refusals
    and table-port indices: every response, every q_ port in every cycle, every stb_ and
    every table_reads entry equal the model's."""
    dcfg = CONFIGS[name]
    reset_at = (1200,) if name == "small" else ()
    stats = run_random(dcfg, seed=sorted(CONFIGS).index(name), cycles=3000,
                       reset_at=reset_at)
    assert stats["reads"] > 200 and stats["writes"] > 200, stats
    assert stats["slverr"] > 30 and stats["stb"] > 10 and stats["table_checks"] > 1000, stats
    assert stats["set_and_clear"] > 3 and stats["error_ties"] > 3, stats
    assert stats["resets"] == len(reset_at), stats


def test_ports_are_typed_views_of_the_description():
    """q_/r_/set_ ports carry the description's fields at their bit positions; no table
    register has a port."""
    rmap = register_map(SMALL_DEVICE)
    dut = CsrBank(rmap, table_read_ports=1)
    assert dut.q_CMD_CTRL.opcode.shape().width == 4
    assert dut.r_ERR_CAUSE.engine.shape().width == 4
    for r in rmap:
        layout = register_layout(r)
        assert layout.size == 32
        for f in r.fields:
            assert (layout[f.name].offset, layout[f.name].width) == (f.lsb, f.width)
        names = {f"q_{r.name}", f"r_{r.name}", f"set_{r.name}"}
        if r.group == "table":
            assert not any(hasattr(dut, n) for n in names), r.name
    assert len(dut.table_reads) == 1
    Fragment.get(dut, None)     # and it elaborates

"""The accelerator's testbench harness: clock, reset, register access by name, commands,
host memory. Used by the cocotb tests (:mod:`verif.tb.test_accelerator`), ``make sim`` and
the benchmarks; every offset and field comes from :mod:`hotline_spec.registers`.

Every bench also watches the ten AXI channels (``m_axi`` and ``s_axil``: AW, W, B, AR, R)
with a :class:`~verif.tb.axi_monitor.HandshakeMonitor`; :meth:`DeviceBench.check_protocol`
raises on any handshake violation or host-memory protocol violation. Every wait has a cycle
budget derived from the work it waits for (:meth:`DeviceBench.command_budget`), so a
deadlock fails in seconds naming what was awaited. Completed commands are sampled into
functional coverage bins (:class:`FunctionalCoverage`).
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, ClockCycles
from cocotbext.axi import AxiLiteBus, AxiLiteMaster
from cocotbext.axi.constants import AxiResp

from hotline_spec.commands import Opcode, ErrorCause, Engine
from hotline_spec.config import DeviceConfig, EALConfig
from hotline_spec.registers import register_map

__all__ = ["DeviceBench", "config_from_dict", "CommandFailed", "FunctionalCoverage",
           "BudgetExceeded"]

BUS_ERRORS = frozenset({ErrorCause.READ_SLVERR, ErrorCause.READ_DECERR,
                        ErrorCause.WRITE_SLVERR, ErrorCause.WRITE_DECERR})


class BudgetExceeded(TimeoutError):
    """A wait ran past its cycle budget (a deadlock, or a device far slower than expected)."""


def latency_class(read_latency):
    """The host-memory latency bin of a bench: ``low`` (<= 20 cycles), ``mid`` (<= 100),
    ``high``."""
    return "low" if read_latency <= 20 else "mid" if read_latency <= 100 else "high"


class FunctionalCoverage:
    """Functional bins of the device cases, sampled when a command completes.

    Crosses: ``command`` = opcode x outcome (``ok`` / ``refused`` / ``bus_error``) x host
    latency class, and ``error`` = error cause x engine. Uses ``cocotb-coverage`` when it is
    installed (its ``coverage_db`` then holds the same crosses as ``device.command`` and
    ``device.error``), else a plain counter: both export the same dict.

    Attributes
    ----------
    bins : dict of str -> dict of tuple -> int
        Hits per bin of each cross (every bin listed, 0 when never hit).
    """

    OUTCOMES = ("ok", "refused", "bus_error")
    LATENCIES = ("low", "mid", "high")

    def __init__(self):
        ops = [o.name for o in Opcode]
        self.axes = {"command": (ops, self.OUTCOMES, self.LATENCIES),
                     # every engine, DECODER (0) included: it refuses commands
                     "error": ([c.name for c in ErrorCause if c != 0],
                               [e.name for e in Engine])}
        self.bins = {name: {key: 0 for key in _product(*axes)} for name, axes in self.axes.items()}
        self._cc = None
        try:
            from cocotb_coverage.coverage import CoverPoint, CoverCross
        except ImportError:
            return
        ax = self.axes

        @CoverPoint("device.command.op", xf=lambda op, out, lat: op, bins=list(ax["command"][0]))
        @CoverPoint("device.command.outcome", xf=lambda op, out, lat: out, bins=list(self.OUTCOMES))
        @CoverPoint("device.command.latency", xf=lambda op, out, lat: lat, bins=list(self.LATENCIES))
        @CoverCross("device.command.cross", items=["device.command.op", "device.command.outcome",
                                                   "device.command.latency"])
        def command(op, out, lat):
            pass

        @CoverPoint("device.error.cause", xf=lambda cause, eng: cause, bins=list(ax["error"][0]))
        @CoverPoint("device.error.engine", xf=lambda cause, eng: eng, bins=list(ax["error"][1]))
        @CoverCross("device.error.cross", items=["device.error.cause", "device.error.engine"])
        def error(cause, eng):
            pass

        self._cc = {"command": command, "error": error}

    @property
    def backend(self):
        return "cocotb-coverage" if self._cc else "builtin"

    def sample(self, opcode, err, read_latency):
        """One completed command: ``opcode`` (int or :class:`Opcode`), ``err`` ``None`` or
        the :class:`CommandFailed` it ended with."""
        try:
            op = Opcode(int(opcode)).name
        except ValueError:
            op = None                                  # a bad opcode: only its error counts
        if err is None:
            outcome = "ok"
        else:
            outcome = "bus_error" if err.cause in BUS_ERRORS else "refused"
            key = (err.cause.name, err.engine.name)
            self.bins["error"][key] = self.bins["error"].get(key, 0) + 1
            if self._cc:
                self._cc["error"](*key)
        if op is not None:
            key = (op, outcome, latency_class(read_latency))
            self.bins["command"][key] += 1
            if self._cc:
                self._cc["command"](*key)

    def to_json(self):
        return {name: {"|".join(k): v for k, v in b.items()} for name, b in self.bins.items()}

    def write(self, path):
        with open(path, "w") as f:
            json.dump({"backend": self.backend, "bins": self.to_json()}, f)

    def report(self):
        """Lines: per cross, bins hit / bins, and the hit bins with their counts."""
        return report_bins(self.to_json())


def _product(*axes):
    out = [()]
    for axis in axes:
        out = [t + (v,) for t in out for v in axis]
    return out


def report_bins(bins):
    """Report lines for ``{cross: {"a|b|c": hits}}`` (also used on merged runs)."""
    lines = []
    for name, b in bins.items():
        hit = {k: v for k, v in b.items() if v}
        lines.append(f"functional coverage {name}: {len(hit)}/{len(b)} bins hit")
        lines += [f"  {k}: {v}" for k, v in sorted(hit.items())]
    return lines


def config_from_dict(d):
    """A :class:`DeviceConfig` from its ``dataclasses.asdict`` form."""
    d = dict(d)
    d["eal"] = EALConfig(**d["eal"])
    return DeviceConfig(**d)


class CommandFailed(Exception):
    """A command ended with an error: ``cause``, ``engine``, ``sequence``, ``address``."""

    def __init__(self, cause, engine, sequence, address):
        self.cause, self.engine = ErrorCause(cause), Engine(engine)
        self.sequence, self.address = sequence, address
        super().__init__(f"command {sequence} failed: {self.cause.name} in {self.engine.name} "
                         f"at {address:#x}")


class DeviceBench:
    """Drives one ``hotline_accelerator`` DUT.

    Attributes
    ----------
    memory : HostMemory
    monitor : HandshakeMonitor or None
        Watches the ten AXI channels (``monitor=True``, the default).
    coverage : FunctionalCoverage
        Sampled by :meth:`run` when a command completes.
    last : DeviceBench
        (class attribute) the bench made last in this simulation.

    ``memory`` is the simulated host DRAM (:class:`verif.tb.host_memory.HostMemory`), made
    by :meth:`start` with ``mem_size`` bytes (or over the buffer ``mem``) and the given
    latency / pause / reorder options.
    """

    def __init__(self, dut, dcfg: DeviceConfig, *, mem_size=1 << 20, mem=None, seed=1,
                 read_latency=20, write_latency=20, pause=0.0, reorder=False, monitor=True,
                 budget_scale=None):
        self.dut = dut
        self.cfg = dcfg
        self.rmap = register_map(dcfg)
        self.rng = random.Random(seed)
        self.mem_size = mem_size if mem is None else len(mem)
        self._mem_arg = mem
        self.options = dict(read_latency=read_latency, write_latency=write_latency,
                            pause=pause, reorder=reorder, seed=seed)
        self.axil = None
        self.memory = None
        self.monitor = None
        self.use_monitor = monitor
        # HOTLINE_BUDGET_SCALE stretches every wait's budget (e.g. for a very slow host model).
        self.budget_scale = (budget_scale if budget_scale is not None
                             else float(os.environ.get("HOTLINE_BUDGET_SCALE", "1")))
        self.submitted = 0
        self.outstanding = []         # (seq, opcode, count, budget) submitted, not awaited
        self.row_bytes = dcfg.bus_bytes
        self.coverage = FunctionalCoverage()
        self.budget_use = 0.0         # largest cycles / budget seen by a wait
        DeviceBench.last = self       # the run's bench, for the end-of-case checks

    async def start(self):
        """Start the clock, build the bus models and reset the DUT."""
        from verif.tb.host_memory import HostMemory, random_pauses
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        o = self.options
        self.memory = HostMemory(dut, "m_axi", dut.clk, dut.rst, size=self.mem_size,
                                 mem=self._mem_arg, read_latency=o["read_latency"],
                                 write_latency=o["write_latency"], reorder=o["reorder"],
                                 seed=o["seed"], allow_w_before_aw=True)
        # allow_w_before_aw: the word writer offers a word's AW and W in the same cycle, and
        # AXI4 (A3.3.1) allows W to be taken first; every other host-memory rule is asserted
        # by check_protocol.
        if self.use_monitor:
            from verif.tb.axi_monitor import HandshakeMonitor
            self.monitor = HandshakeMonitor(dut.clk, dut.rst)
            self.monitor.add_axi(dut, "m_axi")
            self.monitor.add_axi(dut, "s_axil")
            self.monitor.start()
        if o["pause"]:
            self.memory.set_pause(o["pause"])
            # The register bus gets random idle and back-pressure too, on all five channels.
            rng = random.Random(o["seed"] + 1)
            axil_channels = (self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                             self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                             self.axil.read_if.r_channel)
            for channel in axil_channels:
                channel.set_pause_generator(random_pauses(o["pause"], random.Random(rng.getrandbits(32))))
        await self.reset()

    async def reset(self, cycles=4):
        """Hold ``rst`` for ``cycles`` cycles (a system reset: the host memory forgets the
        bursts in flight too); the core then clears its tag store."""
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        if self.memory is not None:
            self.memory.abort_in_flight()
        await ClockCycles(self.dut.clk, 1)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.submitted = 0
        self.outstanding = []
        self.row_bytes = self.cfg.bus_bytes

    def check_protocol(self, what="device case"):
        """Raise ``AssertionError`` if the handshake monitor or the host memory saw any AXI
        violation (the message names channel, cycle and signal / the burst)."""
        if self.monitor is not None:
            self.monitor.assert_clean(what)
        if self.memory is not None and self.memory.violations:
            v = self.memory.violations
            raise AssertionError(f"{what}: {len(v)} host-memory protocol violation(s); "
                                 f"first: {v[:5]}")

    def cycles(self):
        """Clock cycles since time 0 (10 ns clock)."""
        return int(cocotb.utils.get_sim_time("ns") // 10)

    # ---- budgets -----------------------------------------------------------------------
    def command_budget(self, opcode, count):
        """Cycles within which one command must complete: a bound per key (list beats,
        lookups, row beats, the bursts of a row that must wait for a free read ID) times
        ``count``, plus a latency margin; stretched for random pauses and ``budget_scale``.
        Generous (a few times the measured cycles) but orders of magnitude below the old
        5 M-cycle limit."""
        cfg, o = self.cfg, self.options
        mem = self.memory                     # its latencies may be changed during a run
        lat = (mem.read_latency + mem.write_latency if mem is not None
               else o["read_latency"] + o["write_latency"])
        margin = 4 * lat + 2_000
        try:
            op = Opcode(int(opcode))
        except ValueError:
            op = None
        if op in (Opcode.LEARN, Opcode.LOOKUP):
            work = count * 16                                    # two list passes + engine
        elif op in (Opcode.GATHER, Opcode.WRITE_BACK):
            beats = -(-self.row_bytes // cfg.bus_bytes)
            work = count * (16 + 6 * beats + 2 * lat // max(1, cfg.read_ids))
        elif op == Opcode.DUMP:
            work = cfg.eal.entries * 4
        else:
            work = 0
        stretch = 1.0 / (1.0 - min(o["pause"], 0.8)) ** 2
        return int((margin + work) * stretch * self.budget_scale)

    async def wait_until(self, predicate, budget, what, poll=1):
        """Poll ``predicate()`` (a plain function) every ``poll`` cycles; raise
        :class:`BudgetExceeded` naming ``what`` after ``budget`` cycles."""
        start = self.cycles()
        while not predicate():
            if self.cycles() - start > budget:
                raise BudgetExceeded(f"waited {self.cycles() - start} cycles (budget {budget}) "
                                     f"for {what}")
            await ClockCycles(self.dut.clk, poll)
        return self.cycles() - start

    # ---- registers ---------------------------------------------------------------------
    def _offset(self, name_or_offset):
        if isinstance(name_or_offset, int):
            return name_or_offset
        return self.rmap.offset(name_or_offset)

    async def read(self, reg):
        """Read a register (by name or offset) -> ``(value, resp)``."""
        r = await self.axil.read(self._offset(reg), 4)
        return int.from_bytes(r.data, "little"), AxiResp(r.resp)

    async def read_value(self, reg):
        """Read a register that must answer OKAY -> its value."""
        value, resp = await self.read(reg)
        assert resp == AxiResp.OKAY, f"read of {reg} answered {resp.name}"
        return value

    async def write_ok(self, reg, value):
        resp = await self.write(reg, value)
        assert resp == AxiResp.OKAY, f"write of {reg} answered {resp.name}"

    async def field(self, reg, name):
        """One field of a register."""
        f = self.rmap[reg].field(name)
        return (await self.read_value(reg) >> f.lsb) & ((1 << f.width) - 1)

    async def read64(self, name):
        """A 64-bit counter ``<name>_LO``/``_HI``, read HI, LO, HI until HI is stable."""
        while True:
            hi = await self.read_value(f"{name}_HI")
            lo = await self.read_value(f"{name}_LO")
            if await self.read_value(f"{name}_HI") == hi:
                return hi << 32 | lo

    async def write(self, reg, value):
        """Write a register -> the AXI response."""
        r = await self.axil.write(self._offset(reg), int(value & 0xFFFF_FFFF).to_bytes(4, "little"))
        if reg == "ROW_BYTES" and r.resp == AxiResp.OKAY:
            self.row_bytes = int(value) & 0xFFFF or self.cfg.bus_bytes   # for budgets only
        return AxiResp(r.resp)

    async def wait_ready(self, max_cycles=None):
        """Wait until the reset clear is done (``STATUS.init`` low); the budget is the clear
        (``sets`` cycles) plus a margin."""
        budget = max_cycles or int((8 * self.cfg.eal.sets + 2_000) * self.budget_scale)
        start = self.cycles()
        while await self.field("STATUS", "init"):
            if self.cycles() - start > budget:
                raise BudgetExceeded(f"STATUS.init still high after {self.cycles() - start} "
                                     f"cycles (budget {budget}): the reset clear did not end")
            await ClockCycles(self.dut.clk, 8)

    # ---- tables and commands ------------------------------------------------------------
    async def set_table(self, t, base, stride, rows):
        await self.write_ok(f"TABLE{t}_BASE_LO", base & 0xFFFF_FFFF)
        await self.write_ok(f"TABLE{t}_BASE_HI", base >> 32)
        await self.write_ok(f"TABLE{t}_STRIDE", stride)
        await self.write_ok(f"TABLE{t}_ROWS", rows)

    async def submit(self, opcode, count=0, addr0=0, addr1=0, irq=False):
        """Stage and submit a command; returns ``(sequence, resp of CMD_SUBMIT)``."""
        ctrl = self.rmap["CMD_CTRL"]
        value = (int(opcode) << ctrl.field("opcode").lsb) | (int(irq) << ctrl.field("irq").lsb)
        await self.write_ok("CMD_CTRL", value)
        await self.write_ok("CMD_COUNT", count)
        await self.write_ok("CMD_ADDR0_LO", addr0 & 0xFFFF_FFFF)
        await self.write_ok("CMD_ADDR0_HI", addr0 >> 32)
        await self.write_ok("CMD_ADDR1_LO", addr1 & 0xFFFF_FFFF)
        await self.write_ok("CMD_ADDR1_HI", addr1 >> 32)
        resp = await self.write("CMD_SUBMIT", 1)
        seq = self.submitted
        if resp == AxiResp.OKAY:
            self.submitted += 1
            self.outstanding.append((seq, int(opcode), count, self.command_budget(opcode, count)))
        return seq, resp

    def _describe(self, commands):
        names = []
        for seq, op, count, _ in commands:
            try:
                name = Opcode(op).name
            except ValueError:
                name = f"opcode {op}"
            names.append(f"{name} x{count} (seq {seq})")
        return ", ".join(names) or "nothing submitted"

    async def wait_completed(self, n, max_cycles=None, poll=16):
        """Poll until ``CMD_COMPLETED + CMD_DROPPED`` reaches ``n`` (commands dropped behind
        a failed one never complete); returns the cycles waited. The budget (unless
        ``max_cycles``) is the sum of :meth:`command_budget` over the commands awaited;
        past it :class:`BudgetExceeded` names them and the device's status."""
        awaited = [c for c in self.outstanding if c[0] < n]
        budget = max_cycles or (sum(c[3] for c in awaited) or self.command_budget(None, 0))
        start = self.cycles()
        while True:
            done = await self.read_value("CMD_COMPLETED") + await self.read_value("CMD_DROPPED")
            waited = self.cycles() - start
            if done >= n:
                self.outstanding = [c for c in self.outstanding if c[0] >= n]
                self.budget_use = max(self.budget_use, waited / budget)
                return waited
            if waited > budget:
                status = await self.read_value("STATUS")
                raise BudgetExceeded(
                    f"waited {waited} cycles (budget {budget}) for CMD_COMPLETED + CMD_DROPPED "
                    f"to reach {n}, still {done}; awaited: {self._describe(awaited)}; STATUS "
                    f"{status:#x}; host memory: {self.memory.reads_in_flight} reads, "
                    f"{self.memory.writes_pending} writes in flight")
            await ClockCycles(self.dut.clk, poll)

    async def error(self):
        """``None`` or the :class:`CommandFailed` the core reports (does not acknowledge)."""
        if not await self.field("STATUS", "halted"):
            return None
        cause = await self.read_value("ERR_CAUSE")
        f_cause, f_engine = self.rmap["ERR_CAUSE"].field("cause"), self.rmap["ERR_CAUSE"].field("engine")
        seq = await self.read_value("ERR_COMMAND")
        addr = await self.read_value("ERR_ADDR_LO") | await self.read_value("ERR_ADDR_HI") << 32
        return CommandFailed((cause >> f_cause.lsb) & 0xFF, (cause >> f_engine.lsb) & 0xF, seq, addr)

    async def acknowledge(self):
        await self.write_ok("ERR_ACK", 1)
        # DROP pops one queued command per cycle: cmd_depth cycles and a margin.
        budget = int((4 * self.cfg.cmd_depth + 200) * self.budget_scale)
        start = self.cycles()
        while await self.field("STATUS", "halted"):
            if self.cycles() - start > budget:
                raise BudgetExceeded(f"STATUS.halted still high {self.cycles() - start} cycles "
                                     f"(budget {budget}) after ERR_ACK")

    async def run(self, opcode, count=0, addr0=0, addr1=0):
        """Submit one command, wait for it, raise :class:`CommandFailed` (acknowledged) on an
        error; returns the cycles it took."""
        seq, resp = await self.submit(opcode, count, addr0, addr1)
        assert resp == AxiResp.OKAY, f"CMD_SUBMIT answered {resp.name}"
        cycles = await self.wait_completed(seq + 1)
        err = await self.error()
        self.coverage.sample(opcode, err, self.options["read_latency"])
        if err is not None:
            await self.acknowledge()
            raise err
        return cycles

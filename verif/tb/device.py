"""The accelerator's testbench harness: clock, reset, register access by name, commands,
host memory. Used by the cocotb tests (:mod:`verif.tb.test_accelerator`), ``make sim`` and
the benchmarks; every offset and field comes from :mod:`hotline_spec.registers`.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, ClockCycles
from cocotbext.axi import AxiLiteBus, AxiLiteMaster
from cocotbext.axi.constants import AxiResp

from hotline_spec.commands import Opcode, ErrorCause, Engine
from hotline_spec.config import DeviceConfig, EALConfig
from hotline_spec.registers import register_map

__all__ = ["DeviceBench", "config_from_dict", "CommandFailed"]


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

    ``memory`` is the simulated host DRAM (:class:`verif.tb.host_memory.HostMemory`), made
    by :meth:`start` with ``mem_size`` bytes (or over the buffer ``mem``) and the given
    latency / pause / reorder options.
    """

    def __init__(self, dut, dcfg: DeviceConfig, *, mem_size=1 << 20, mem=None, seed=1,
                 read_latency=20, write_latency=20, pause=0.0, reorder=False):
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
        self.submitted = 0

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
                                 seed=o["seed"])
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

    async def write(self, reg, value):
        """Write a register -> the AXI response."""
        r = await self.axil.write(self._offset(reg), int(value & 0xFFFF_FFFF).to_bytes(4, "little"))
        return AxiResp(r.resp)

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

    async def wait_ready(self, max_cycles=100_000):
        """Wait until the reset clear is done (``STATUS.init`` low)."""
        for _ in range(max_cycles // 8):
            if not await self.field("STATUS", "init"):
                return
            await ClockCycles(self.dut.clk, 8)
        raise TimeoutError("STATUS.init did not fall")

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
        return seq, resp

    async def wait_completed(self, n, max_cycles=5_000_000, poll=16):
        """Poll until ``CMD_COMPLETED + CMD_DROPPED`` reaches ``n`` (commands dropped behind
        a failed one never complete); returns the cycles waited."""
        start = cocotb.utils.get_sim_time("ns") // 10
        while True:
            done = await self.read_value("CMD_COMPLETED") + await self.read_value("CMD_DROPPED")
            if done >= n:
                return int(cocotb.utils.get_sim_time("ns") // 10 - start)
            if cocotb.utils.get_sim_time("ns") // 10 - start > max_cycles:
                raise TimeoutError(f"CMD_COMPLETED stayed at {done}, expected {n}")
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
        for _ in range(1000):
            if not await self.field("STATUS", "halted"):
                return
        raise TimeoutError("STATUS.halted did not fall after ERR_ACK")

    async def run(self, opcode, count=0, addr0=0, addr1=0):
        """Submit one command, wait for it, raise :class:`CommandFailed` (acknowledged) on an
        error; returns the cycles it took."""
        seq, resp = await self.submit(opcode, count, addr0, addr1)
        assert resp == AxiResp.OKAY, f"CMD_SUBMIT answered {resp.name}"
        cycles = await self.wait_completed(seq + 1)
        err = await self.error()
        if err is not None:
            await self.acknowledge()
            raise err
        return cycles

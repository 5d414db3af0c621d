"""The Hotline accelerator as a device: registers, command sequencer, executors, DMA, lookup
engine.

``HotlineAccelerator`` is the top level (``rtl/hotline_accelerator.v``): an AXI4-Lite
subordinate for the registers (``s_axil_*``), an AXI4 manager for DMA (``m_axi_*``) and an
interrupt (``irq``). The register map is :mod:`hotline_spec.registers`, the command set
:mod:`hotline_spec.commands`; the behaviour is written down in ``docs/device.md``.

This module only joins the blocks: :class:`~hotline_hw.csr.CsrBank` (registers, table RAM),
:class:`~hotline_hw.device.sequencer.Sequencer` (pop, decode, dispatch, complete or halt),
one executor per kind of command (``hotline_hw/device/``), the lookup engine they share, the
AXI arbiter in front of every DMA port, and the event counters.
"""

from amaranth import Signal, Module, Cat, Const, Mux, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from hotline_spec.commands import Opcode
from hotline_spec.config import DeviceConfig
from hotline_spec.registers import register_map, COUNTERS
from .axi import axi4_signature, axil_signature, flat_members, connect_flat
from .csr import CsrBank, register_layout
from .device.counters import EventCounter
from .device.dump_executor import DumpExecutor, ClearExecutor
from .device.lookup_executor import LookupExecutor
from .device.row_executor import RowExecutor
from .device.sequencer import Sequencer
from .dma.axi_mux import AxiArbiter, read_id_bits
from .layouts import dump_word
from .lookup_engine import LookupEngine

__all__ = ["HotlineAccelerator"]


class HotlineAccelerator(wiring.Component):
    """The accelerator top level for ``dcfg`` (a :class:`~hotline_spec.config.DeviceConfig`).

    Attributes
    ----------
    s_axil_* : AXI4-Lite subordinate, ``csr_addr_bits`` address bits, 32-bit data.
    m_axi_* : AXI4 manager, ``addr_bits`` / ``bus_bits``, ``log2(read_ids) + 1`` ID bits.
    irq : Out(1)
        High while ``CONTROL.irq_enable`` and a bit of ``IRQ_STATUS`` are set (level).

    Clock ``clk`` and synchronous active-high reset ``rst`` (Amaranth's ``sync`` domain).
    After reset the tag store is cleared (``STATUS.init``) before the first command runs.
    """

    def __init__(self, dcfg: DeviceConfig):
        if not isinstance(dcfg, DeviceConfig):
            raise TypeError(f"dcfg must be a DeviceConfig, not {type(dcfg).__name__}")
        tag_room = Shape.cast(dump_word(dcfg.eal.policy)["tag"].shape).width
        if dcfg.eal.tag_bits > tag_room:
            raise ValueError(f"HotlineAccelerator: {dcfg.eal.tag_bits}-bit tags do not fit the "
                             f"{tag_room}-bit tag field of the {dcfg.eal.policy} DUMP word")
        self.dcfg = dcfg
        self.rmap = register_map(dcfg)
        members = {}
        members.update(flat_members("s_axil", axil_signature(dcfg.csr_addr_bits), flipped=True))
        members.update(flat_members("m_axi", axi4_signature(dcfg.addr_bits, dcfg.bus_bits,
                                                            read_id_bits(dcfg) + 1)))
        members["irq"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        c = self.dcfg
        W = c.words_per_beat
        m = Module()
        m.submodules.csr = csr = CsrBank(self.rmap, table_read_ports=W + 1)
        m.submodules.sequencer = seq = Sequencer(c)
        m.submodules.engine = engine = LookupEngine(c.eal)
        m.submodules.lookup = lookup = LookupExecutor(c)
        m.submodules.rows = rows = RowExecutor(c)
        m.submodules.dump = dump = DumpExecutor(c)
        m.submodules.clear = clear = ClearExecutor(c)
        rb = read_id_bits(c)
        # Every DMA port of every executor; the outer ID width stays log2(read_ids) + 1.
        m.submodules.arbiter = arbiter = AxiArbiter(
            c, readers={"rows": rb, "lookup_lists": 1, "row_lists": 1},
            writers={"rows": rb, "results": 1, "dump": 1}, out_id_bits=rb + 1)
        connect_flat(m, self, "s_axil", csr.bus)
        connect_flat(m, self, "m_axi", arbiter.out)

        # ---- executors: jobs, the engine's ports, the table RAM, the bus ------------------
        for name, executor in (("lookup", lookup), ("rows", rows), ("dump", dump),
                               ("clear", clear)):
            wiring.connect(m, getattr(seq, name), executor.job)
            if name != "rows":
                m.d.comb += executor.engine_busy.eq(engine.busy)
        wiring.connect(m, lookup.lookups, engine.lookups)
        wiring.connect(m, engine.results, lookup.results)
        wiring.connect(m, engine.dump, dump.dump)
        m.d.comb += [engine.learn.eq(lookup.learn), engine.popular_max_rrpv.eq(lookup.threshold),
                     engine.start_dump.eq(dump.start_dump), engine.clear.eq(clear.clear),
                     seq.engine_busy.eq(engine.busy)]
        for k in range(W + 1):
            wiring.connect(m, rows.tables[k], csr.table_reads[k])
        wiring.connect(m, lookup.list_axi, arbiter.lookup_lists)
        wiring.connect(m, lookup.write_axi, arbiter.results)
        wiring.connect(m, rows.list_axi, arbiter.row_lists)
        wiring.connect(m, rows.row_axi, arbiter.rows)
        wiring.connect(m, dump.write_axi, arbiter.dump)

        # ---- registers ----------------------------------------------------------------------
        for name, value in self.rmap.id_values().items():
            m.d.comb += getattr(csr, f"r_{name}").eq(value)
        # The data of a write to an action register, read through that register's fields.
        written = {name: register_layout(self.rmap[name])(csr.wdata)
                   for name in ("ERR_ACK", "COUNTER_RESET")}
        staged = seq.staged
        m.d.comb += [
            staged.opcode.eq(csr.q_CMD_CTRL.opcode), staged.irq.eq(csr.q_CMD_CTRL.irq),
            staged.count.eq(csr.q_CMD_COUNT.value),
            staged.addr0.eq(Cat(csr.q_CMD_ADDR0_LO.value, csr.q_CMD_ADDR0_HI.value)),
            staged.addr1.eq(Cat(csr.q_CMD_ADDR1_LO.value, csr.q_CMD_ADDR1_HI.value)),
            seq.submit.eq(csr.stb_CMD_SUBMIT), csr.refuse_CMD_SUBMIT.eq(seq.full),
            seq.row_bytes.eq(csr.q_ROW_BYTES.value),
            seq.threshold.eq(csr.q_POPULAR_MAX_RRPV.value),
            seq.err_ack.eq(csr.stb_ERR_ACK & written["ERR_ACK"].ack),
            csr.r_CMD_FREE.eq(seq.free), csr.r_CMD_SUBMITTED.eq(seq.submitted),
            csr.r_CMD_COMPLETED.eq(seq.completed), csr.r_CMD_DROPPED.eq(seq.dropped),
            csr.r_ERR_CAUSE.cause.eq(seq.error.cause), csr.r_ERR_CAUSE.engine.eq(seq.error.engine),
            csr.r_ERR_COMMAND.eq(seq.err_command),
            csr.r_ERR_ADDR_LO.eq(seq.error.addr[:32]), csr.r_ERR_ADDR_HI.eq(seq.error.addr[32:]),
            csr.set_IRQ_STATUS.done.eq(seq.irq_done), csr.set_IRQ_STATUS.error.eq(seq.failed),
            self.irq.eq(csr.q_CONTROL.irq_enable & (csr.q_IRQ_STATUS.as_value() != 0)),
            csr.r_STATUS.busy.eq(seq.busy), csr.r_STATUS.init.eq(seq.init),
            csr.r_STATUS.halted.eq(seq.halted),
            csr.r_STATUS.reg_error.eq(csr.q_REG_ERROR.as_value() != 0),
        ]

        # ---- counters (each registers its increment; the strobes are registered before
        # their popcount, which would otherwise sit behind the arbiter's W mux) -------------
        strobes = Signal(c.bus_bytes)
        m.d.sync += strobes.eq(Mux(self.m_axi_wvalid & self.m_axi_wready, self.m_axi_wstrb, 0))
        finished_ok = seq.finished & ~seq.failed
        events = {
            "LOOKUPS": lookup.looked_up,
            "HITS": lookup.hits,
            "ROWS_GATHERED": Mux(finished_ok & (seq.finished_opcode == Opcode.GATHER),
                                 seq.finished_count, 0),
            "ROWS_WRITTEN": Mux(finished_ok & (seq.finished_opcode == Opcode.WRITE_BACK),
                                seq.finished_count, 0),
            "BYTES_READ": Mux(self.m_axi_rvalid & self.m_axi_rready, c.bus_bytes, 0),
            "BYTES_WRITTEN": sum(strobes[i] for i in range(c.bus_bytes)),
            "READ_STALL_CYCLES": self.m_axi_arvalid & ~self.m_axi_arready,
            "WRITE_STALL_CYCLES": (self.m_axi_awvalid & ~self.m_axi_awready)
                                  | (self.m_axi_wvalid & ~self.m_axi_wready),
            "COMMANDS_COMPLETED": seq.finished,
            "ERRORS": seq.failed,
            "CYCLES": Const(1),
        }
        assert set(events) == {name for name, _ in COUNTERS}
        reset_counters = csr.stb_COUNTER_RESET & written["COUNTER_RESET"].reset
        for name, event in events.items():
            width = 32 if name.startswith("ROWS_") else 8
            counter = EventCounter(width)
            m.submodules[f"count_{name.lower()}"] = counter
            m.d.comb += [counter.increment.eq(event), counter.reset.eq(reset_counters),
                         getattr(csr, f"r_{name}_LO").eq(counter.value[:32]),
                         getattr(csr, f"r_{name}_HI").eq(counter.value[32:])]
        return m

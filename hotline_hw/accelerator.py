"""The Hotline accelerator as a device: registers, command sequencer, DMA, lookup engine.

``HotlineAccelerator`` is the top level (``rtl/hotline_accelerator.v``): an AXI4-Lite
subordinate for the registers (``s_axil_*``), an AXI4 manager for DMA (``m_axi_*``) and an
interrupt (``irq``). The register map is :mod:`hotline_spec.registers`, the command set
:mod:`hotline_spec.commands`; the behaviour is written down in ``docs/device.md``.

The command sequencer is this module's ``elaborate``: it pops one command at a time from the
command FIFO, refuses a bad one before anything moves (decode checks, then a pass over the
key list through :class:`~hotline_hw.dma.key_checker.KeyChecker`), runs it, and completes it
only when every write it issued has been acknowledged. Commands therefore never overlap, which
is the ordering rule that makes a gather after a write-back read the written rows.
"""

from amaranth import Signal, Module, Mux, Cat, Const, Shape
from amaranth.lib import wiring, data, fifo
from amaranth.lib.wiring import In, Out

from .axi import axi4_signature, axil_signature, flat_members, connect_flat, RESP_DECERR
from hotline_spec.commands import Opcode, ErrorCause, Engine
from .layouts import dump_word, result_word
from hotline_spec.config import DeviceConfig
from .csr import CsrBank
from .dma.axi_mux import AxiMux, read_id_bits
from .dma.key_checker import KeyChecker
from .dma.list_reader import ListReader, WordSerializer
from .dma.row_mover import RowMover
from .dma.word_writer import WordWriter
from .layouts import lookup_beat
from .lookup_engine import LookupEngine
from hotline_spec.registers import register_map, COUNTERS

__all__ = ["HotlineAccelerator", "command_layout"]


def command_layout(dcfg: DeviceConfig):
    """A command in the FIFO: the staged registers and its sequence number."""
    return data.StructLayout({"opcode": 4, "irq": 1, "count": 32, "addr0": 64, "addr1": 64,
                              "seq": 32})


class HotlineAccelerator(wiring.Component):
    """The accelerator top level for ``dcfg`` (a :class:`~hotline_spec.config.DeviceConfig`).

    Ports (AXI names, so bus models and vendor IP connect without renaming)
    -----
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
        e = c.eal
        rmap = self.rmap
        m = Module()

        m.submodules.csr = csr = CsrBank(rmap)
        m.submodules.engine = eng = LookupEngine(e)
        m.submodules.list_reader = lr = ListReader(c)
        m.submodules.serializer = ser = WordSerializer(c)
        m.submodules.checker = chk = KeyChecker(c)
        m.submodules.word_writer = ww = WordWriter(c)
        m.submodules.row_mover = rm = RowMover(c)
        m.submodules.axi_mux = mux = AxiMux(c)
        connect_flat(m, self, "s_axil", csr.bus)
        connect_flat(m, self, "m_axi", mux.out)
        wiring.connect(m, rm.axi, mux.rows)
        wiring.connect(m, lr.axi, mux.lists)
        wiring.connect(m, ww.axi, mux.words)

        q = lambda name: getattr(csr, f"q_{name}")

        # ---- ID block --------------------------------------------------------------------
        for name, value in rmap.id_values().items():
            m.d.comb += getattr(csr, f"r_{name}").eq(value)

        # ---- table registers as arrays ---------------------------------------------------
        for t in range(c.max_tables):
            base = Cat(q(f"TABLE{t}_BASE_LO"), q(f"TABLE{t}_BASE_HI"))
            m.d.comb += [
                rm.table_base[t].eq(base), chk.table_base[t].eq(base),
                rm.table_stride[t].eq(q(f"TABLE{t}_STRIDE")),
                chk.table_stride[t].eq(q(f"TABLE{t}_STRIDE")),
                chk.table_rows[t].eq(q(f"TABLE{t}_ROWS")),
            ]
        row_bytes = q("ROW_BYTES")[:16]
        m.d.comb += [rm.row_bytes.eq(row_bytes), chk.row_bytes.eq(row_bytes)]

        # ---- command FIFO ------------------------------------------------------------------
        layout = command_layout(c)
        m.submodules.commands = cmdq = fifo.SyncFIFOBuffered(width=layout.size, depth=c.cmd_depth)
        submitted = Signal(32)
        completed = Signal(32)
        dropped = Signal(32)
        staged = Signal(layout)
        m.d.comb += [
            staged.opcode.eq(q("CMD_CTRL")[:4]), staged.irq.eq(q("CMD_CTRL")[8]),
            staged.count.eq(q("CMD_COUNT")),
            staged.addr0.eq(Cat(q("CMD_ADDR0_LO"), q("CMD_ADDR0_HI"))),
            staged.addr1.eq(Cat(q("CMD_ADDR1_LO"), q("CMD_ADDR1_HI"))),
            staged.seq.eq(submitted),
            csr.refuse_CMD_SUBMIT.eq(~cmdq.w_rdy),
            cmdq.w_en.eq(csr.stb_CMD_SUBMIT), cmdq.w_data.eq(staged),
            csr.r_CMD_FREE.eq(c.cmd_depth - cmdq.level),
            csr.r_CMD_SUBMITTED.eq(submitted), csr.r_CMD_COMPLETED.eq(completed),
            csr.r_CMD_DROPPED.eq(dropped),
        ]
        with m.If(csr.stb_CMD_SUBMIT):
            m.d.sync += submitted.eq(submitted + 1)

        # ---- the command being run ----------------------------------------------------------
        cmd = Signal(layout)
        op = cmd.opcode
        is_list = Signal()
        is_rows = Signal()
        is_lookup = Signal()
        m.d.comb += [
            is_rows.eq((op == Opcode.GATHER) | (op == Opcode.WRITE_BACK)),
            is_lookup.eq((op == Opcode.LEARN) | (op == Opcode.LOOKUP)),
            is_list.eq(is_rows | is_lookup),
        ]
        halted = Signal()
        err_cause = Signal(8)
        err_engine = Signal(4)
        err_cmd = Signal(32)
        err_addr = Signal(64)
        m.d.comb += [
            csr.r_ERR_CAUSE.eq(Cat(err_cause, err_engine)), csr.r_ERR_COMMAND.eq(err_cmd),
            csr.r_ERR_ADDR_LO.eq(err_addr[:32]), csr.r_ERR_ADDR_HI.eq(err_addr[32:]),
        ]
        fail_cause = Signal(8)
        fail_engine = Signal(4)
        fail_addr = Signal(64)
        irq_done = Signal()
        irq_error = Signal()
        m.d.comb += csr.set_IRQ_STATUS.eq(Cat(irq_done, irq_error))
        m.d.comb += self.irq.eq(q("CONTROL")[0] & (q("IRQ_STATUS") != 0))

        # Data paths: which consumer the list beats and words go to.
        path_check = Signal()
        path_lookup = Signal()
        path_rows = Signal()
        path_dump = Signal()
        learn_mode = Signal()
        threshold = Signal(2)
        m.d.comb += [eng.learn.eq(learn_mode), eng.popular_max_rrpv.eq(threshold),
                     mux.write_words.eq(~path_rows)]

        # List beats -> checker (check pass) or serializer (move pass).
        m.d.comb += [
            chk.beats.valid.eq(lr.beats.valid & path_check),
            chk.beats.payload.eq(lr.beats.payload),
            ser.beats.valid.eq(lr.beats.valid & ~path_check),
            ser.beats.payload.eq(lr.beats.payload),
            lr.beats.ready.eq(Mux(path_check, chk.beats.ready, ser.beats.ready)),
        ]
        # A word lost to a failed re-read is replaced by the (checked) first key, so that
        # every write still lands inside the command's destination.
        key_word = Signal(64)
        m.d.comb += key_word.eq(Mux(ser.words.payload.error, chk.first_key, ser.words.payload.word))
        lanes = Signal(lookup_beat(e))
        m.d.comb += [lanes[0].valid.eq(1), lanes[0].key.eq(key_word[:e.key_bits])]
        m.d.comb += [
            eng.lookups.valid.eq(ser.words.valid & path_lookup),
            eng.lookups.payload.eq(lanes),
            rm.keys.valid.eq(ser.words.valid & path_rows),
            rm.keys.payload.eq(key_word[:e.key_bits]),
            ser.words.ready.eq(Mux(path_rows, rm.keys.ready, path_lookup & eng.lookups.ready)),
        ]
        # Results / dump entries -> word writer.
        index = Signal(33)                       # words written by this command
        res = Signal(result_word())
        m.d.comb += [res.slot.eq(eng.results.payload[0].slot), res.hit.eq(eng.results.payload[0].hit)]
        dump_way = Signal(range(e.ways))
        way_entry = eng.dump.payload.ways[dump_way]
        dword = Signal(dump_word(e.policy))
        meta = e.meta_name
        m.d.comb += [dword.tag.eq(way_entry.tag), dword[meta].eq(way_entry[meta]),
                     dword.valid.eq(way_entry.valid)]
        dump_slot = Signal(64)
        m.d.comb += dump_slot.eq((eng.dump.payload.bank * e.sets + eng.dump.payload.set) * e.ways
                                 + dump_way)
        with m.If(path_dump):
            m.d.comb += [
                ww.requests.valid.eq(eng.dump.valid),
                ww.requests.payload.addr.eq(cmd.addr1 + (dump_slot << 3)),
                ww.requests.payload.data.eq(dword),
                eng.dump.ready.eq(ww.requests.ready & (dump_way == e.ways - 1)),
            ]
            with m.If(ww.requests.valid & ww.requests.ready):
                m.d.sync += [index.eq(index + 1),
                             dump_way.eq(Mux(dump_way == e.ways - 1, 0, dump_way + 1))]
        with m.Else():
            m.d.comb += [
                ww.requests.valid.eq(eng.results.valid & path_lookup),
                ww.requests.payload.addr.eq(cmd.addr1 + (index << 3)),
                ww.requests.payload.data.eq(res),
                eng.results.ready.eq(ww.requests.ready & path_lookup),
            ]
            with m.If(ww.requests.valid & ww.requests.ready):
                m.d.sync += index.eq(index + 1)
        lookup_done = eng.results.valid & eng.results.ready & path_lookup

        # ---- decode checks --------------------------------------------------------------
        lane_mask = c.bus_bytes - 1
        refuse = Signal()
        refuse_cause = Signal(8)
        refuse_addr = Signal(64)
        bad_count = Signal()
        m.d.comb += bad_count.eq(Mux(op == Opcode.DUMP, cmd.count != e.entries,
                                     is_list & ((cmd.count == 0) | (cmd.count > c.max_count))))
        with m.If(op > max(Opcode)):
            m.d.comb += [refuse.eq(1), refuse_cause.eq(ErrorCause.BAD_OPCODE)]
        with m.Elif(bad_count):
            m.d.comb += [refuse.eq(1), refuse_cause.eq(ErrorCause.BAD_COUNT)]
        with m.Elif(is_list & (cmd.addr0[:3] != 0)):
            m.d.comb += [refuse.eq(1), refuse_cause.eq(ErrorCause.MISALIGNED),
                         refuse_addr.eq(cmd.addr0)]
        with m.Elif((is_lookup | (op == Opcode.DUMP)) & (cmd.addr1[:3] != 0)):
            m.d.comb += [refuse.eq(1), refuse_cause.eq(ErrorCause.MISALIGNED),
                         refuse_addr.eq(cmd.addr1)]
        with m.Elif(is_rows & ((cmd.addr1 & lane_mask) != 0)):
            m.d.comb += [refuse.eq(1), refuse_cause.eq(ErrorCause.MISALIGNED),
                         refuse_addr.eq(cmd.addr1)]
        with m.Elif(is_rows & ((row_bytes == 0) | ((row_bytes & lane_mask) != 0)
                               | (row_bytes > c.max_row_bytes))):
            m.d.comb += [refuse.eq(1), refuse_cause.eq(ErrorCause.BAD_ROW_BYTES)]

        # ---- DMA errors of the move pass, in a fixed order of blame -----------------------
        rm_error = Signal()
        rm_write = Signal()
        rm_resp = Signal(2)
        rm_addr = Signal(c.addr_bits)
        with m.If(rm.done):
            m.d.sync += [rm_error.eq(rm.error), rm_write.eq(rm.err_write),
                         rm_resp.eq(rm.err_resp), rm_addr.eq(rm.err_addr)]

        def resp_cause(write, resp):
            base = Mux(write, ErrorCause.WRITE_SLVERR, ErrorCause.READ_SLVERR)
            return base + (resp == RESP_DECERR)

        move_failed = Signal()
        with m.If(lr.error):
            m.d.comb += [move_failed.eq(1), fail_cause.eq(resp_cause(0, lr.err_resp)),
                         fail_engine.eq(Engine.LIST_READ), fail_addr.eq(lr.err_addr)]
        with m.Elif(rm_error):
            m.d.comb += [move_failed.eq(1), fail_cause.eq(resp_cause(rm_write, rm_resp)),
                         fail_engine.eq(Mux(rm_write, Engine.ROW_WRITE, Engine.ROW_READ)),
                         fail_addr.eq(rm_addr)]
        with m.Elif(ww.error):
            m.d.comb += [move_failed.eq(1), fail_cause.eq(resp_cause(1, ww.err_resp)),
                         fail_engine.eq(Engine.WORD_WRITE), fail_addr.eq(ww.err_addr)]

        # ---- the sequencer -----------------------------------------------------------------
        init = Signal()
        seq_idle = Signal()
        finish_ok = Signal()
        finish_fail = Signal()
        f_cause = Signal(8)
        f_engine = Signal(4)
        f_addr = Signal(64)
        m.d.comb += [lr.addr.eq(cmd.addr0), lr.count.eq(cmd.count),
                     chk.addr.eq(cmd.addr0), chk.check_rows.eq(is_rows),
                     rm.gather.eq(op == Opcode.GATHER), rm.count.eq(cmd.count),
                     rm.buf_addr.eq(cmd.addr1)]
        with m.FSM(init="RESET_CLEAR"):
            with m.State("RESET_CLEAR"):
                m.d.comb += init.eq(1)
                with m.If(~eng.busy):
                    m.next = "IDLE"
            with m.State("IDLE"):
                m.d.comb += seq_idle.eq(1)
                with m.If(halted):
                    with m.If(csr.stb_ERR_ACK & csr.wdata[0]):
                        m.next = "DROP"
                with m.Elif(cmdq.r_rdy):
                    m.d.comb += cmdq.r_en.eq(1)
                    m.d.sync += cmd.eq(cmdq.r_data)
                    m.next = "DECODE"
            with m.State("DROP"):
                with m.If(cmdq.r_rdy):
                    m.d.comb += cmdq.r_en.eq(1)
                    m.d.sync += dropped.eq(dropped + 1)
                with m.Else():
                    m.d.sync += [halted.eq(0), err_cause.eq(0), err_engine.eq(0),
                                 err_cmd.eq(0), err_addr.eq(0)]
                    m.next = "IDLE"
            with m.State("DECODE"):
                m.d.sync += [index.eq(0), dump_way.eq(0), rm_error.eq(0),
                             threshold.eq(q("POPULAR_MAX_RRPV")[:2]),
                             learn_mode.eq(op == Opcode.LEARN)]
                m.d.comb += ww.clear.eq(1)
                with m.If(refuse):
                    m.d.comb += [finish_fail.eq(1), f_cause.eq(refuse_cause),
                                 f_engine.eq(Engine.DECODER), f_addr.eq(refuse_addr)]
                    m.next = "IDLE"
                with m.Elif(op == Opcode.FENCE):
                    m.d.comb += finish_ok.eq(1)
                    m.next = "IDLE"
                with m.Elif(op == Opcode.CLEAR):
                    m.d.comb += eng.clear.eq(1)
                    m.next = "ENGINE_WAIT"
                with m.Elif(op == Opcode.DUMP):
                    m.d.comb += eng.start_dump.eq(1)
                    m.d.sync += path_dump.eq(1)
                    m.next = "DUMP"
                with m.Else():
                    m.d.comb += [lr.start.eq(1), chk.start.eq(1)]
                    m.d.sync += path_check.eq(1)
                    m.next = "CHECK"
            with m.State("ENGINE_WAIT"):
                with m.If(~eng.busy):
                    m.d.comb += finish_ok.eq(1)
                    m.next = "IDLE"
            with m.State("DUMP"):
                with m.If((index == e.entries) & ww.idle & ~eng.busy):
                    m.d.sync += path_dump.eq(0)
                    with m.If(ww.error):
                        m.d.comb += [finish_fail.eq(1), f_cause.eq(fail_cause),
                                     f_engine.eq(fail_engine), f_addr.eq(fail_addr)]
                    with m.Else():
                        m.d.comb += finish_ok.eq(1)
                    m.next = "IDLE"
            with m.State("CHECK"):
                with m.If(~lr.busy):
                    m.d.sync += path_check.eq(0)
                    with m.If(lr.error):
                        m.d.comb += [finish_fail.eq(1), f_cause.eq(resp_cause(0, lr.err_resp)),
                                     f_engine.eq(Engine.LIST_READ), f_addr.eq(lr.err_addr)]
                        m.next = "IDLE"
                    with m.Elif(chk.error):
                        m.d.comb += [finish_fail.eq(1), f_cause.eq(chk.cause),
                                     f_engine.eq(Engine.LIST_CHECK), f_addr.eq(chk.err_addr)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "MOVE_START"
            with m.State("MOVE_START"):
                m.d.comb += lr.start.eq(1)
                with m.If(is_rows):
                    m.d.comb += rm.start.eq(1)
                    m.d.sync += path_rows.eq(1)
                    m.next = "MOVE_ROWS"
                with m.Else():
                    m.d.sync += path_lookup.eq(1)
                    m.next = "MOVE_LOOKUPS"
            with m.State("MOVE_LOOKUPS"):
                with m.If((index == cmd.count) & ww.idle & ~lr.busy & ~eng.busy):
                    m.d.sync += path_lookup.eq(0)
                    m.next = "MOVE_END"
            with m.State("MOVE_ROWS"):
                with m.If(rm.done):
                    m.next = "MOVE_DRAIN"
            with m.State("MOVE_DRAIN"):
                with m.If(~lr.busy):
                    m.d.sync += path_rows.eq(0)
                    m.next = "MOVE_END"
            with m.State("MOVE_END"):
                with m.If(move_failed):
                    m.d.comb += [finish_fail.eq(1), f_cause.eq(fail_cause),
                                 f_engine.eq(fail_engine), f_addr.eq(fail_addr)]
                with m.Else():
                    m.d.comb += finish_ok.eq(1)
                m.next = "IDLE"

        with m.If(finish_ok | finish_fail):
            m.d.sync += completed.eq(completed + 1)
        m.d.comb += irq_done.eq(finish_ok & cmd.irq)
        with m.If(finish_fail):
            m.d.comb += irq_error.eq(1)
            m.d.sync += [halted.eq(1), err_cause.eq(f_cause), err_engine.eq(f_engine),
                         err_cmd.eq(cmd.seq), err_addr.eq(f_addr)]

        busy = Signal()
        m.d.comb += [busy.eq(init | ~seq_idle | (cmdq.r_rdy & ~halted)),
                     csr.r_STATUS.eq(Cat(busy, init, halted, q("REG_ERROR") != 0))]

        # ---- counters ----------------------------------------------------------------------
        out = self                                   # the flat m_axi_* ports
        strobes = Signal(range(c.bus_bytes + 1))
        m.d.comb += strobes.eq(sum(out.m_axi_wstrb[i] for i in range(c.bus_bytes)))
        events = {
            "LOOKUPS": lookup_done,
            "HITS": lookup_done & eng.results.payload[0].hit,
            "ROWS_GATHERED": Mux(finish_ok & (op == Opcode.GATHER), cmd.count, 0),
            "ROWS_WRITTEN": Mux(finish_ok & (op == Opcode.WRITE_BACK), cmd.count, 0),
            "BYTES_READ": Mux(out.m_axi_rvalid & out.m_axi_rready, c.bus_bytes, 0),
            "BYTES_WRITTEN": Mux(out.m_axi_wvalid & out.m_axi_wready, strobes, 0),
            "READ_STALL_CYCLES": out.m_axi_arvalid & ~out.m_axi_arready,
            "WRITE_STALL_CYCLES": (out.m_axi_awvalid & ~out.m_axi_awready)
                                  | (out.m_axi_wvalid & ~out.m_axi_wready),
            "COMMANDS_COMPLETED": finish_ok | finish_fail,
            "ERRORS": finish_fail,
            "CYCLES": Const(1),
        }
        assert set(events) == {name for name, _ in COUNTERS}
        reset_counters = csr.stb_COUNTER_RESET & csr.wdata[0]
        for name, event in events.items():
            counter = Signal(64, name=f"count_{name.lower()}")
            with m.If(reset_counters):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + event)
            m.d.comb += [getattr(csr, f"r_{name}_LO").eq(counter[:32]),
                         getattr(csr, f"r_{name}_HI").eq(counter[32:])]
        return m

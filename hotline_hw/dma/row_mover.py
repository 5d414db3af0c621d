"""The gather / write-back DMA engine: copies rows between tables and a row buffer.

One command moves ``count`` rows of ``row_bytes`` bytes. A gather reads the row of each key
from its table and writes it to the next row of a contiguous buffer; a write-back reads the
buffer and writes each row back to its table. Rows are cut into chunks that are at most
``burst_beats`` beats and cross a 4 KiB boundary neither in the source nor in the destination,
so every read burst has exactly one matching write burst.

Data path::

    keys -> a (table RAM read) -> b (entry) -> c (row address) -> row (chunker) -> AR
    R -> slot buffer (read_ids x burst_beats words) -> ready queue -> AW -> W FIFO -> W
    B -> outstanding-write FIFO (addresses, for the error report)

Each chunk read takes a free AXI ID; the ID also names the buffer slot its R beats land in,
so read data of different IDs may come back in any order, interleaved beat by beat.
"""

from amaranth import Signal, Module, Array, Cat, Const, Mux
from amaranth.lib import wiring, stream, data, fifo, memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..axi import axi4_signature, BURST_INCR
from ..job import error_record, record_first, resp_cause, first_set
from ..tables import table_read_signature
from hotline_spec.commands import Engine
from hotline_spec.config import DeviceConfig

__all__ = ["RowMover"]

#: AXI4: no burst may cross a 4 KiB boundary.
PAGE_BYTES = 4096
#: AxCACHE "normal non-cacheable bufferable": host DRAM, no coherency needed for the rows.
AXCACHE_NORMAL = 0b0011
#: W output FIFO entries: the slot buffer answers one cycle after a read, and the read is
#: issued only when the FIFO has room for it; 4 entries keep one W beat per cycle going
#: without looking at ``wready`` when issuing the read.
W_FIFO_DEPTH = 4


def _min(a, b):
    return Mux(a < b, a, b)


class RowMover(wiring.Component):
    """Gather / write-back DMA engine: rows between tables and a row buffer over AXI4.

    Parameters
    ----------
    dcfg : DeviceConfig
        Bus and address widths, ``read_ids``, ``burst_beats``, ``max_row_bytes`` and the key
        format (``dcfg.eal``).

    Attributes
    ----------
    axi : Out(axi4_signature(addr_bits, bus_bits, log2(read_ids)))
        AXI4 manager for the row reads and writes. Reads use IDs ``0 .. read_ids - 1`` (one
        per chunk in flight); writes all use AWID 0, so B responses come back in order.
        ``rready`` and ``bready`` are always 1. Every valid comes from a register.
    tables : Out(table_read_signature(dcfg))
        Read port of the table RAM (:mod:`hotline_hw.tables`): ``table`` is the table field
        of ``keys.payload`` (driven every cycle, whether or not a key is taken); the entry
        is used the cycle after a key is taken. Only ``base`` and ``stride`` are used: base
        a multiple of ``bus_bytes``, stride a multiple of ``bus_bytes`` and >= ``row_bytes``
        (the key checker refuses keys of other tables). The entries must not change while
        ``busy``.
    start : In(1)
        One-cycle pulse, taken while ``busy`` is 0: latches ``gather``, ``count``,
        ``buf_addr`` and ``row_bytes``; they may change afterwards.
    gather : In(1)
        1: gather (table rows -> buffer); 0: write-back (buffer -> table rows).
    count : In(32)
        Rows (keys) of the command, >= 1.
    buf_addr : In(addr_bits)
        The row buffer: row ``i`` at ``buf_addr + i * row_bytes``; a multiple of
        ``bus_bytes``.
    row_bytes : In(16)
        Bytes per row: a multiple of ``bus_bytes`` in ``bus_bytes .. max_row_bytes``.
    keys : In(stream.Signature(key_bits))
        Up to ``count`` keys ``(table << row_bits) | row`` in list order, already checked
        (``row`` is inside its table). Row ``i`` of the command is the ``i``-th key.
    stop : In(1)
        Level, held until ``done``: the key stream ends before ``count`` keys (upstream cut
        it short: a bad key, a list read error). It may rise as soon as the last key that
        will come is on ``keys`` (valid) or taken; the mover still takes keys offered while
        it is high, and once it is high with ``keys.valid`` low, finishes the rows already
        taken, waits for every B and pulses ``done`` as after ``count`` keys.
    busy : Out(1)
        High from the cycle after ``start``; low again in the cycle ``done`` pulses (a new
        ``start`` may come in that cycle).
    done : Out(1)
        One-cycle pulse: all ``count`` keys consumed (or ``stop``), all writes acknowledged
        (B received).
    error : Out(error_record())
        Cleared by ``start``, set by the first error of the command and held until the next
        ``start``: a read (engine ``ROW_READ``) or write (``ROW_WRITE``) answered SLVERR or
        DECERR; ``cause`` is :func:`~hotline_hw.job.resp_cause` of it, ``addr`` the start
        address of the failing burst, ``index`` 0. The engine then issued no further reads,
        did not write the data of the failed read burst, let the bursts in flight finish and
        discarded the remaining keys.

    Timing: the table RAM's output goes through a 2:1 multiplexer into a register (stage
    ``b``); the row address ``base + row * stride`` is one stage from registers to a
    register (stage ``c``), so the multiply sees no table-index multiplexer in front of it.
    """

    def __init__(self, dcfg: DeviceConfig):
        if not isinstance(dcfg, DeviceConfig):
            raise TypeError(f"RowMover: dcfg must be a DeviceConfig, not {dcfg!r}")
        self.dcfg = dcfg
        id_bits = exact_log2(dcfg.read_ids)
        super().__init__({
            "axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, id_bits=id_bits)),
            "start": In(1),
            "gather": In(1),
            "count": In(32),
            "buf_addr": In(dcfg.addr_bits),
            "row_bytes": In(16),
            "tables": Out(table_read_signature(dcfg)),
            "keys": In(stream.Signature(dcfg.eal.key_bits)),
            "stop": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(error_record()),
        })

    def elaborate(self, platform):
        d = self.dcfg
        m = Module()
        axi = self.axi
        n_ids = d.read_ids
        id_bits = exact_log2(n_ids)
        burst = d.burst_beats
        beat_log = exact_log2(burst)
        size_log = exact_log2(d.bus_bytes)
        page_beats = PAGE_BYTES // d.bus_bytes
        page_log = exact_log2(PAGE_BYTES)
        row_bits = d.eal.row_bits
        max_row_beats = d.max_row_bytes // d.bus_bytes
        addr_bits = d.addr_bits

        len_shape = range(burst + 1)              # chunk length in beats, 1..burst
        beat_width = max(1, beat_log)             # beat index inside a slot

        def beats_to_bytes(beats):
            return beats << size_log

        # ---- command registers --------------------------------------------------------
        busy = self.busy
        c_gather = Signal()
        c_row_bytes = Signal(16)
        c_row_beats = Signal(range(max_row_beats + 1))
        keys_left = Signal(32)
        buf_ptr = Signal(addr_bits)
        # Set on the first bad response: no more reads, drop the keys.
        err = self.error.valid

        with m.If(self.start & ~busy):
            m.d.sync += [
                busy.eq(1), c_gather.eq(self.gather), c_row_bytes.eq(self.row_bytes),
                c_row_beats.eq(self.row_bytes >> size_log), keys_left.eq(self.count),
                buf_ptr.eq(self.buf_addr), self.error.eq(0),
            ]

        # ---- ID / slot allocation -----------------------------------------------------
        # A bitmap, not a free list, so that a reset mid-command leaves a consistent state.
        in_use = Signal(n_ids)
        free_id = Signal(id_bits)
        id_ok, free_index, _ = first_set(m, ~in_use, name="free_id")  # lowest free ID
        m.d.comb += free_id.eq(free_index)

        # Per-ID chunk records, written when the chunk's read is issued: the destination
        # and length (for AW/W) and the source (the address of a failed read).
        meta_layout = data.StructLayout({"dst": addr_bits, "beats": len_shape})
        m.submodules.meta_mem = meta_mem = memory.Memory(shape=meta_layout, depth=n_ids,
                                                         init=[])
        m.submodules.src_mem = src_mem = memory.Memory(shape=addr_bits, depth=n_ids, init=[])
        meta_wr = meta_mem.write_port()
        src_wr = src_mem.write_port()
        meta_rd = meta_mem.read_port(domain="sync")
        src_rd = src_mem.read_port(domain="sync")

        # The slot buffer: slot `id` holds the beats of the chunk read under that ID.
        m.submodules.slots = slots = memory.Memory(shape=d.bus_bits, depth=n_ids * burst,
                                                   init=[])
        slot_wr = slots.write_port()
        slot_rd = slots.read_port(domain="sync")

        def slot_addr(slot_id, beat):
            return Cat(beat[:beat_log], slot_id) if beat_log else slot_id

        # ---- a: take a key; the table RAM reads its entry meanwhile -------------------
        # The RAM address comes straight from the key stream (no dependence on ``ready``);
        # its entry is on the port the cycle after the key was taken (``a_new``). Should
        # stage a stall then, the entry is kept in ``a_base``/``a_stride``.
        a_v = Signal()
        a_new = Signal()
        a_row = Signal(row_bits)
        a_buf = Signal(addr_bits)
        a_base = Signal(addr_bits)
        a_stride = Signal(32)
        b_v = Signal()
        b_row = Signal(row_bits)
        b_buf = Signal(addr_bits)
        b_base = Signal(addr_bits)
        b_stride = Signal(32)
        c_v = Signal()
        c_table = Signal(addr_bits)
        c_buf = Signal(addr_bits)
        row_v = Signal()
        row_free = Signal()
        c_adv = Signal()
        b_adv = Signal()
        a_adv = Signal()
        take = Signal()
        key = self.keys.payload
        m.d.comb += [
            c_adv.eq(c_v & row_free),
            b_adv.eq(b_v & (~c_v | c_adv)),
            a_adv.eq(a_v & (~b_v | b_adv)),
            self.keys.ready.eq(busy & (keys_left != 0) & (~a_v | a_adv)),
            take.eq(self.keys.valid & self.keys.ready),
            self.tables.table.eq(key[row_bits:]),
        ]
        entry = self.tables.entry
        m.d.sync += a_new.eq(take)
        with m.If(a_new):
            m.d.sync += [a_base.eq(entry.base), a_stride.eq(entry.stride)]
        with m.If(take):
            m.d.sync += [
                a_v.eq(1), a_row.eq(key[:row_bits]), a_buf.eq(buf_ptr),
                buf_ptr.eq(buf_ptr + c_row_bytes), keys_left.eq(keys_left - 1),
            ]
        with m.Elif(a_adv):
            m.d.sync += a_v.eq(0)

        # ---- b: the key with its table's base and stride, all in registers ------------
        with m.If(a_adv):
            m.d.sync += [
                b_v.eq(1), b_row.eq(a_row), b_buf.eq(a_buf),
                b_base.eq(Mux(a_new, entry.base, a_base)),
                b_stride.eq(Mux(a_new, entry.stride, a_stride)),
            ]
        with m.Elif(b_adv):
            m.d.sync += b_v.eq(0)

        # ---- c: the table row's address (the multiply gets a stage of its own) --------
        with m.If(b_adv):
            m.d.sync += [c_v.eq(1), c_table.eq(b_base + b_row * b_stride), c_buf.eq(b_buf)]
        with m.Elif(c_adv):
            m.d.sync += c_v.eq(0)

        # ---- row: cut the row into chunks, issue one read per chunk -------------------
        row_src = Signal(addr_bits)
        row_dst = Signal(addr_bits)
        row_left = Signal(range(max_row_beats + 1))  # beats of the row not yet issued
        src_room = Signal(range(page_beats + 1))     # beats to the next 4 KiB boundary
        dst_room = Signal(range(page_beats + 1))
        chunk = Signal(len_shape)
        m.d.comb += [
            src_room.eq(page_beats - row_src[size_log:page_log]),
            dst_room.eq(page_beats - row_dst[size_log:page_log]),
            chunk.eq(_min(_min(row_left, burst), _min(src_room, dst_room))),
        ]
        ar_load = Signal()
        m.d.comb += [
            ar_load.eq(row_v & ~err & id_ok & (~axi.arvalid | axi.arready)),
            # After an error the remaining rows are dropped without a read.
            row_free.eq(~row_v | err | (ar_load & (chunk == row_left))),
        ]
        with m.If(ar_load):
            m.d.sync += [
                axi.arvalid.eq(1), axi.arid.eq(free_id), axi.araddr.eq(row_src),
                axi.arlen.eq(chunk - 1),
                row_src.eq(row_src + beats_to_bytes(chunk)),
                row_dst.eq(row_dst + beats_to_bytes(chunk)),
                row_left.eq(row_left - chunk),
            ]
        with m.Elif(axi.arready):
            m.d.sync += axi.arvalid.eq(0)
        m.d.comb += [
            meta_wr.addr.eq(free_id), meta_wr.en.eq(ar_load),
            meta_wr.data.dst.eq(row_dst), meta_wr.data.beats.eq(chunk),
            src_wr.addr.eq(free_id), src_wr.en.eq(ar_load), src_wr.data.eq(row_src),
        ]
        with m.If(row_free):
            m.d.sync += row_v.eq(c_v)
            with m.If(c_v):
                m.d.sync += [
                    row_src.eq(Mux(c_gather, c_table, c_buf)),
                    row_dst.eq(Mux(c_gather, c_buf, c_table)),
                    row_left.eq(c_row_beats),
                ]
        m.d.comb += [
            axi.arsize.eq(size_log), axi.arburst.eq(BURST_INCR),
            axi.arcache.eq(AXCACHE_NORMAL), axi.arprot.eq(0),
        ]

        # ---- R: beats into their slot; a complete chunk is queued for writing ---------
        m.d.comb += [axi.rready.eq(1), axi.bready.eq(1)]
        r_v = Signal()
        r_id = Signal(id_bits)
        r_data = Signal(d.bus_bits)
        r_bad = Signal()
        r_resp = Signal(2)
        r_last = Signal()
        # Registered first: the per-ID beat counter lookup then starts from a flop.
        m.d.sync += [
            r_v.eq(axi.rvalid), r_id.eq(axi.rid), r_data.eq(axi.rdata),
            r_resp.eq(axi.rresp), r_bad.eq(axi.rresp[1]), r_last.eq(axi.rlast),
        ]
        m.d.comb += [src_rd.addr.eq(axi.rid), src_rd.en.eq(1)]  # aligned with r_id
        r_count = Array(Signal(beat_width, name=f"r_count{i}") for i in range(n_ids))
        r_beat = Signal(beat_width)
        slot_err = Signal(n_ids)  # a beat of the chunk in flight under this ID was bad
        burst_bad = Signal()
        m.d.comb += [
            r_beat.eq(r_count[r_id]),
            burst_bad.eq(slot_err.bit_select(r_id, 1) | r_bad),
            slot_wr.addr.eq(slot_addr(r_id, r_beat)), slot_wr.data.eq(r_data),
            slot_wr.en.eq(r_v),
        ]
        m.submodules.ready_q = ready_q = fifo.SyncFIFO(width=id_bits, depth=n_ids)
        r_free = Signal()  # a failed chunk gives its ID back without writing
        # Each ID's counter and error bit decode the ID themselves: writing through a
        # variable index (``r_count[r_id].eq``) would elaborate one case of every ID per
        # counter, code that grows with the square of read_ids.
        for i in range(n_ids):
            with m.If(r_v & (r_id == i)):
                m.d.sync += r_count[i].eq(Mux(r_last, 0, r_beat + 1))
                with m.If(r_last):
                    m.d.sync += slot_err[i].eq(0)
                with m.Elif(r_bad):
                    m.d.sync += slot_err[i].eq(1)
        with m.If(r_v & r_last):
            m.d.comb += [r_free.eq(burst_bad), ready_q.w_en.eq(~burst_bad)]
        m.d.comb += ready_q.w_data.eq(r_id)

        # ---- AW: one write burst per complete chunk -----------------------------------
        # Writes outstanding (AW accepted, B not yet back), with their addresses.
        m.submodules.wr_q = wr_q = fifo.SyncFIFO(width=addr_bits, depth=n_ids)
        meta_v = Signal()   # meta_rd.data holds the record of meta_id
        meta_id = Signal(id_bits)
        aw_slot = Signal(id_bits)
        aw_beats = Signal(len_shape)
        aw_load = Signal()
        meta_pop = Signal()
        m.d.comb += [
            aw_load.eq(meta_v & (~axi.awvalid | axi.awready)
                       & (wr_q.level + axi.awvalid < n_ids)),
            meta_pop.eq(ready_q.r_rdy & (~meta_v | aw_load)),
            ready_q.r_en.eq(meta_pop),
            meta_rd.addr.eq(ready_q.r_data), meta_rd.en.eq(meta_pop),
        ]
        with m.If(meta_pop):
            m.d.sync += [meta_v.eq(1), meta_id.eq(ready_q.r_data)]
        with m.Elif(aw_load):
            m.d.sync += meta_v.eq(0)
        with m.If(aw_load):
            m.d.sync += [
                axi.awvalid.eq(1), axi.awaddr.eq(meta_rd.data.dst),
                axi.awlen.eq(meta_rd.data.beats - 1), aw_slot.eq(meta_id),
                aw_beats.eq(meta_rd.data.beats),
            ]
        with m.Elif(axi.awready):
            m.d.sync += axi.awvalid.eq(0)
        m.d.comb += [
            axi.awid.eq(0), axi.awsize.eq(size_log), axi.awburst.eq(BURST_INCR),
            axi.awcache.eq(AXCACHE_NORMAL), axi.awprot.eq(0),
        ]
        aw_hs = Signal()
        m.d.comb += aw_hs.eq(axi.awvalid & axi.awready)
        # Chunks whose AW was accepted, in order: W beats never run ahead of their AW.
        wpend_layout = data.StructLayout({"slot": id_bits, "beats": len_shape})
        m.submodules.wpend = wpend = fifo.SyncFIFO(width=wpend_layout.size, depth=n_ids)
        m.d.comb += [
            wpend.w_en.eq(aw_hs), wpend.w_data.eq(Cat(aw_slot, aw_beats)),
            wr_q.w_en.eq(aw_hs), wr_q.w_data.eq(axi.awaddr),
        ]

        # ---- W: slot beats through a small FIFO ---------------------------------------
        m.submodules.w_fifo = w_fifo = fifo.SyncFIFO(width=d.bus_bits + 1, depth=W_FIFO_DEPTH)
        w_active = Signal()
        w_slot = Signal(id_bits)
        w_beat = Signal(beat_width)
        w_beats = Signal(len_shape)
        w_pending = data.View(wpend_layout, wpend.r_data)
        rd_inflight = Signal()
        rd_last = Signal()
        w_issue = Signal()
        w_is_last = Signal()
        w_next = Signal()
        m.d.comb += [
            w_issue.eq(w_active & (w_fifo.level + rd_inflight < W_FIFO_DEPTH)),
            w_is_last.eq(w_beat == w_beats - 1),
            w_next.eq(wpend.r_rdy & (~w_active | (w_issue & w_is_last))),
            wpend.r_en.eq(w_next),
            slot_rd.addr.eq(slot_addr(w_slot, w_beat)), slot_rd.en.eq(w_issue),
            w_fifo.w_en.eq(rd_inflight), w_fifo.w_data.eq(Cat(slot_rd.data, rd_last)),
        ]
        m.d.sync += [rd_inflight.eq(w_issue), rd_last.eq(w_issue & w_is_last)]
        w_free = Signal()  # the slot's last beat has left the buffer: its ID is free again
        m.d.comb += w_free.eq(w_issue & w_is_last)
        with m.If(w_issue):
            m.d.sync += w_beat.eq(w_beat + 1)
        with m.If(w_next):
            m.d.sync += [w_active.eq(1), w_slot.eq(w_pending.slot), w_beats.eq(w_pending.beats),
                         w_beat.eq(0)]
        with m.Elif(w_free):
            m.d.sync += w_active.eq(0)
        m.d.comb += [
            axi.wvalid.eq(w_fifo.r_rdy), axi.wdata.eq(w_fifo.r_data[:d.bus_bits]),
            axi.wlast.eq(w_fifo.r_data[d.bus_bits]), axi.wstrb.eq((1 << d.bus_bytes) - 1),
            w_fifo.r_en.eq(axi.wready),
        ]

        # ---- B: retire writes ---------------------------------------------------------
        m.d.comb += wr_q.r_en.eq(axi.bvalid)

        m.d.sync += in_use.eq((in_use | Mux(ar_load, Const(1, n_ids) << free_id, 0))
                              & ~Mux(w_free, Const(1, n_ids) << w_slot, 0)
                              & ~Mux(r_free, Const(1, n_ids) << r_id, 0))

        # ---- errors: the first bad response of the command ----------------------------
        # A read error wins over a write error of the same cycle (as the order of the
        # bursts on the bus would have it: the read's data was never to be written).
        rd_fail = Signal()
        wr_fail = Signal()
        m.d.comb += [rd_fail.eq(r_v & r_bad), wr_fail.eq(axi.bvalid & axi.bresp[1])]
        record_first(m, self.error, busy & (rd_fail | wr_fail),
                     cause=resp_cause(~rd_fail, Mux(rd_fail, r_resp, axi.bresp)),
                     engine=Mux(rd_fail, Engine.ROW_READ, Engine.ROW_WRITE),
                     addr=Mux(rd_fail, src_rd.data, wr_q.r_data))

        # ---- done: every key consumed, every chunk written and acknowledged -----------
        # An ID stays in use from its read until its last beat left the buffer, so
        # `in_use == 0` covers AR, R, the ready queue and AW; the W FIFO and the
        # outstanding writes are what remains.
        # ``stop`` with no key offered: the stream ended early, the keys taken are all.
        m.d.sync += self.done.eq(0)
        keys_over = (keys_left == 0) | (self.stop & ~self.keys.valid)
        with m.If(busy & keys_over & ~a_v & ~b_v & ~c_v & ~row_v & (in_use == 0)
                  & ~rd_inflight & ~w_fifo.r_rdy & (wr_q.level == 0)):
            m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m

"""The gather / write-back DMA engine: copies rows between tables and a row buffer.

One command moves ``count`` rows of ``row_bytes`` bytes. A gather reads the row of each key
from its table and writes it to the next row of a contiguous buffer; a write-back reads the
buffer and writes each row back to its table. Rows are cut into chunks that are at most
``burst_beats`` beats and cross a 4 KiB boundary neither in the source nor in the destination,
so every read burst has exactly one matching write burst.

Data path::

    keys -> s1 (table lookup) -> s2 (row address) -> row (chunker) -> AR
    R -> slot buffer (read_ids x burst_beats words) -> ready queue -> AW -> W FIFO -> W
    B -> outstanding-write FIFO (addresses, for the error report)

Each chunk read takes a free AXI ID; the ID also names the buffer slot its R beats land in,
so read data of different IDs may come back in any order, interleaved beat by beat.
"""

from amaranth import Signal, Module, Array, Cat, Const, Mux
from amaranth.lib import wiring, stream, data, fifo, memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..axi import axi4_signature, BURST_INCR, RESP_SLVERR
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

    Ports
    -----
    axi : Out(axi4_signature(addr_bits, bus_bits, log2(read_ids)))
        AXI4 manager for the row reads and writes. Reads use IDs ``0 .. read_ids - 1`` (one
        per chunk in flight); writes all use AWID 0, so B responses come back in order.
        ``rready`` and ``bready`` are always 1. Every valid comes from a register.
    start : In(1)
        One-cycle pulse, taken while ``busy`` is 0: latches ``gather``, ``count``,
        ``buf_addr``, ``row_bytes``, ``table_base`` and ``table_stride``; they may change
        afterwards.
    gather : In(1)
        1: gather (table rows -> buffer); 0: write-back (buffer -> table rows).
    count : In(32)
        Rows (keys) of the command, >= 1.
    buf_addr : In(addr_bits)
        The row buffer: row ``i`` at ``buf_addr + i * row_bytes``; a multiple of
        ``bus_bytes``.
    row_bytes : In(16)
        Bytes per row: a multiple of ``bus_bytes`` in ``bus_bytes .. max_row_bytes``.
    table_base : In(ArrayLayout(addr_bits, max_tables))
        Base address of each table, a multiple of ``bus_bytes``.
    table_stride : In(ArrayLayout(32, max_tables))
        Bytes between rows of each table, a multiple of ``bus_bytes`` and >= ``row_bytes``.
    keys : In(stream.Signature(key_bits))
        Exactly ``count`` keys ``(table << row_bits) | row`` in list order, already checked
        (``row`` is inside its table). Row ``i`` of the command is the ``i``-th key.
    busy : Out(1)
        High from the cycle after ``start``; low again in the cycle ``done`` pulses (a new
        ``start`` may come in that cycle).
    done : Out(1)
        One-cycle pulse: all ``count`` keys consumed, all writes acknowledged (B received).
    error : Out(1)
        Valid with ``done`` (held until the next ``start``): a read or write answered SLVERR
        or DECERR. The engine then issued no further reads, did not write the data of the
        failed read burst, let the bursts in flight finish and discarded the remaining keys.
    err_write : Out(1)
        The first error was a write response (1) or a read response (0).
    err_resp : Out(2)
        The xRESP of the first error (2 SLVERR, 3 DECERR).
    err_addr : Out(addr_bits)
        Start address of the first failing burst.
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
            "table_base": In(data.ArrayLayout(dcfg.addr_bits, dcfg.max_tables)),
            "table_stride": In(data.ArrayLayout(32, dcfg.max_tables)),
            "keys": In(stream.Signature(dcfg.eal.key_bits)),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "err_write": Out(1),
            "err_resp": Out(2),
            "err_addr": Out(dcfg.addr_bits),
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
        c_base = Signal(data.ArrayLayout(addr_bits, d.max_tables))
        c_stride = Signal(data.ArrayLayout(32, d.max_tables))
        keys_left = Signal(32)
        buf_ptr = Signal(addr_bits)
        err = self.error  # set on the first bad response: no more reads, drop the keys

        with m.If(self.start & ~busy):
            m.d.sync += [
                busy.eq(1), c_gather.eq(self.gather), c_row_bytes.eq(self.row_bytes),
                c_row_beats.eq(self.row_bytes >> size_log), c_base.eq(self.table_base),
                c_stride.eq(self.table_stride), keys_left.eq(self.count),
                buf_ptr.eq(self.buf_addr), err.eq(0), self.err_write.eq(0),
                self.err_resp.eq(0), self.err_addr.eq(0),
            ]

        # ---- ID / slot allocation -----------------------------------------------------
        # A bitmap, not a free list, so that a reset mid-command leaves a consistent state.
        in_use = Signal(n_ids)
        free_id = Signal(id_bits)
        id_ok = Signal()
        m.d.comb += id_ok.eq(~in_use.all())
        for i in reversed(range(n_ids)):   # lowest free ID wins
            with m.If(~in_use[i]):
                m.d.comb += free_id.eq(i)

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

        # ---- s1: take a key, look up its table ----------------------------------------
        s1_v = Signal()
        s1_base = Signal(addr_bits)
        s1_stride = Signal(32)
        s1_row = Signal(row_bits)
        s1_buf = Signal(addr_bits)
        s2_v = Signal()
        s2_table = Signal(addr_bits)
        s2_buf = Signal(addr_bits)
        row_v = Signal()
        row_free = Signal()
        s2_adv = Signal()
        s1_adv = Signal()
        m.d.comb += [
            s2_adv.eq(s2_v & row_free),
            s1_adv.eq(s1_v & (~s2_v | s2_adv)),
            self.keys.ready.eq(busy & (keys_left != 0) & (~s1_v | s1_adv)),
        ]
        key = self.keys.payload
        table = key[row_bits:]
        with m.If(self.keys.valid & self.keys.ready):
            m.d.sync += [
                s1_v.eq(1), s1_row.eq(key[:row_bits]), s1_buf.eq(buf_ptr),
                s1_base.eq(c_base[table] if d.max_tables > 1 else c_base[0]),
                s1_stride.eq(c_stride[table] if d.max_tables > 1 else c_stride[0]),
                buf_ptr.eq(buf_ptr + c_row_bytes), keys_left.eq(keys_left - 1),
            ]
        with m.Elif(s1_adv):
            m.d.sync += s1_v.eq(0)

        # ---- s2: the table row's address (the multiply gets a stage of its own) -------
        with m.If(s1_adv):
            m.d.sync += [s2_v.eq(1), s2_table.eq(s1_base + s1_row * s1_stride),
                         s2_buf.eq(s1_buf)]
        with m.Elif(s2_adv):
            m.d.sync += s2_v.eq(0)

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
            m.d.sync += row_v.eq(s2_v)
            with m.If(s2_v):
                m.d.sync += [
                    row_src.eq(Mux(c_gather, s2_table, s2_buf)),
                    row_dst.eq(Mux(c_gather, s2_buf, s2_table)),
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
        with m.If(busy & ~err):
            with m.If(r_v & r_bad):
                m.d.sync += [err.eq(1), self.err_write.eq(0), self.err_resp.eq(r_resp),
                             self.err_addr.eq(src_rd.data)]
            with m.Elif(axi.bvalid & (axi.bresp >= RESP_SLVERR)):
                m.d.sync += [err.eq(1), self.err_write.eq(1), self.err_resp.eq(axi.bresp),
                             self.err_addr.eq(wr_q.r_data)]

        # ---- done: every key consumed, every chunk written and acknowledged -----------
        # An ID stays in use from its read until its last beat left the buffer, so
        # `in_use == 0` covers AR, R, the ready queue and AW; the W FIFO and the
        # outstanding writes are what remains.
        m.d.sync += self.done.eq(0)
        with m.If(busy & (keys_left == 0) & ~s1_v & ~s2_v & ~row_v & (in_use == 0)
                  & ~rd_inflight & ~w_fifo.r_rdy & (wr_q.level == 0)):
            m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m

"""The gather / write-back DMA engine: copies rows between tables and a row buffer.

One command moves ``count`` rows of ``row_bytes`` bytes. A gather reads the row of each key
from its table and writes it to the next row of a contiguous buffer; a write-back reads the
buffer and writes each row back to its table. Rows are cut into chunks that are at most
``burst_beats`` beats and cross a 4 KiB boundary neither in the source nor in the destination,
so every read burst has exactly one matching write burst.

Data path::

    keys -> a (table RAM read) -> b (entry) -> c (row address) -> d (4 KiB room)
         -> e (first segment) -> row queue -> row (chunker) -> AR
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
#: Rows between the key pipeline and the chunker. The key pipeline (a, b, p, c, d, e: six
#: stages) never stalls: a key is taken only while fewer than this many keys are in it or
#: queued, so 9 keeps one key per cycle going (a key is counted from its take until the
#: chunker pops it, 8 cycles later at the earliest).
ROW_QUEUE_DEPTH = 9


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
        is used the cycle after a key is taken (whatever happens downstream). Only ``base`` and ``stride`` are used: base
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
        ``ready`` is a function of registers only (busy, keys left, room in the row queue):
        it never depends on ``valid`` nor on the chunker.
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

    Timing: the table RAM's output goes straight into a register (stage ``b``); the row
    address ``base + row * stride`` is one stage from registers to a register (stage
    ``c``). The key pipeline never stalls (a key is taken only when the row queue has room
    for every key in flight). The chunker compares only ``log2(4096 / bus_bytes)``-bit
    distances, one comparison per stage (d: nearer boundary of source and destination;
    e: that or the row's end); per chunk it adds the registered chunk length to the
    addresses and decides the next chunk from register bits. A row that crosses a 4 KiB
    boundary costs 3 idle cycles of the chunker at the boundary.
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
        size_log = d.beat_offset_bits
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
        c_left_m1 = Signal(range(max_row_beats))     # beats per row - 1
        keys_left = Signal(32)
        keys_more = Signal()                         # keys_left != 0
        buf_ptr = Signal(addr_bits)
        # Set on the first bad response: no more reads, drop the keys.
        err = self.error.valid

        with m.If(self.start & ~busy):
            m.d.sync += [
                busy.eq(1), c_gather.eq(self.gather), c_row_bytes.eq(self.row_bytes),
                c_left_m1.eq((self.row_bytes >> size_log) - 1), keys_left.eq(self.count),
                keys_more.eq(self.count != 0),
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

        # ---- chunk arithmetic on short values -----------------------------------------
        # Beats to a 4 KiB boundary fit ``k`` bits once taken minus one. A segment is the
        # part of a row up to the next boundary of source or destination (or the row's
        # end); it is cut into bursts.
        k = page_log - size_log
        seg_layout = data.StructLayout({
            "left_m1": k,       # beats of the segment not yet issued - 1
            "last": 1,          # the next chunk ends the segment (left_m1 < burst)
            "row_end": 1,       # the segment ends the row
        })

        def _room(src, dst):
            # min(beats to the next boundary of src, of dst) - 1; whether it is < burst.
            rs = ~src[size_log:page_log]
            rd = ~dst[size_log:page_log]
            return Mux(rs < rd, rs, rd), (rs[beat_log:] == 0) | (rd[beat_log:] == 0)

        def _segment(left_m1, room, room_small):
            # The segment from here: min(row left, room) and its flags.
            row_end = left_m1 <= room
            return Cat(Mux(row_end, left_m1, room)[:k],
                       room_small | (left_m1[beat_log:] == 0), row_end)

        def _low_plus_one(left_m1):
            # The length of a segment's last chunk, given left_m1 < burst (mod burst).
            return left_m1[:beat_log] + 1

        def _first_chunk(seg):
            return Mux(seg.last, _low_plus_one(seg.left_m1), burst)

        # ---- key pipeline: a (RAM read) -> b (entry) -> p (row * stride) -> c (row address)
        # -> d -> e -> queue
        # The stages never stall: a key is taken only while the row queue has room for it
        # and every key in flight (``credits``), so ``keys.ready`` is a function of
        # registers alone and no chunk arithmetic reaches back into the key source.
        take = Signal()
        credits = Signal(range(ROW_QUEUE_DEPTH + 1))   # keys taken, not yet out of the queue
        key = self.keys.payload
        m.d.comb += [
            self.keys.ready.eq(busy & keys_more & (credits != ROW_QUEUE_DEPTH)),
            take.eq(self.keys.valid & self.keys.ready),
            self.tables.table.eq(key[row_bits:]),
        ]
        with m.If(take):
            m.d.sync += [
                keys_left.eq(keys_left - 1), keys_more.eq(keys_left != 1),
                buf_ptr.eq(buf_ptr + c_row_bytes),
            ]
        # a: the table RAM reads the key's entry (on the port in the next cycle).
        a_v = Signal()
        a_row = Signal(row_bits)
        a_buf = Signal(addr_bits)
        m.d.sync += [a_v.eq(take), a_row.eq(key[:row_bits]), a_buf.eq(buf_ptr)]
        # b: the key with its table's base and stride, all in registers.
        b_v = Signal()
        b_row = Signal(row_bits)
        b_buf = Signal(addr_bits)
        b_base = Signal(addr_bits)
        b_stride = Signal(32)
        entry = self.tables.entry
        m.d.sync += [b_v.eq(a_v), b_row.eq(a_row), b_buf.eq(a_buf),
                     b_base.eq(entry.base), b_stride.eq(entry.stride)]
        # p: row * stride (the DSP multiply and its partial-product sum get a stage of their
        # own; adding the base in the same cycle was the device's critical path).
        p_v = Signal()
        p_offset = Signal(addr_bits)
        p_base = Signal(addr_bits)
        p_buf = Signal(addr_bits)
        m.d.sync += [p_v.eq(b_v), p_offset.eq(b_row * b_stride), p_base.eq(b_base),
                     p_buf.eq(b_buf)]
        # c: the table row's address.
        c_v = Signal()
        c_table = Signal(addr_bits)
        c_buf = Signal(addr_bits)
        m.d.sync += [c_v.eq(p_v), c_table.eq(p_base + p_offset), c_buf.eq(p_buf)]
        # d: source and destination; the nearer of their 4 KiB boundaries.
        # Distances are kept minus one: ``page_beats - 1 - offset`` is ``~offset``, so the
        # distance to a boundary costs no adder and fits ``k`` bits.
        d_v = Signal()
        d_src = Signal(addr_bits)
        d_dst = Signal(addr_bits)
        d_room = Signal(k)          # min(src room, dst room) - 1
        d_room_small = Signal()     # that room is at most one burst
        src_c = Mux(c_gather, c_table, c_buf)
        dst_c = Mux(c_gather, c_buf, c_table)
        room_c, room_small_c = _room(src_c, dst_c)
        m.d.sync += [d_v.eq(c_v), d_src.eq(src_c), d_dst.eq(dst_c),
                     d_room.eq(room_c), d_room_small.eq(room_small_c)]
        # e: the row's first segment (up to the next boundary or the row's end).
        e_v = Signal()
        e_src = Signal(addr_bits)
        e_dst = Signal(addr_bits)
        e_seg = Signal(seg_layout)
        m.d.sync += [e_v.eq(d_v), e_src.eq(d_src), e_dst.eq(d_dst),
                     e_seg.eq(_segment(c_left_m1, d_room, d_room_small))]
        # The queue of rows ready for the chunker, with the first chunk's length.
        row_layout = data.StructLayout({"src": addr_bits, "dst": addr_bits, "seg": seg_layout,
                                        "chunk": len_shape})
        m.submodules.row_q = row_q = fifo.SyncFIFO(width=row_layout.size,
                                                   depth=ROW_QUEUE_DEPTH)
        q_in = data.View(row_layout, row_q.w_data)
        q_out = data.View(row_layout, row_q.r_data)
        m.d.comb += [row_q.w_en.eq(e_v), q_in.src.eq(e_src), q_in.dst.eq(e_dst),
                     q_in.seg.eq(e_seg), q_in.chunk.eq(_first_chunk(e_seg))]
        m.d.sync += credits.eq(credits + take - row_q.r_en)

        # ---- row: cut the row into chunks, issue one read per chunk -------------------
        # A row is cut into segments at the 4 KiB boundaries of source and destination and
        # every segment into bursts. Per chunk only registers are compared: ``chunk`` is
        # the length of the next chunk, ``seg.last`` says it ends its segment. A segment
        # that ends inside the row (a boundary) is followed by three cycles that find the
        # next one from the new addresses (``rc``), as stage d and e do for a row's first.
        row_v = Signal()
        row_src = Signal(addr_bits)
        row_dst = Signal(addr_bits)
        row_seg = Signal(seg_layout)
        row_left_m1 = Signal(range(max_row_beats))   # beats of the row not yet issued - 1
        chunk = Signal(len_shape)
        rc = Signal(2)                               # 0: ``chunk`` valid; 1..3: recompute
        rc_room = Signal(k)
        rc_room_small = Signal()
        ar_load = Signal()
        row_free = Signal()
        m.d.comb += [
            ar_load.eq(row_v & (rc == 0) & ~err & id_ok & (~axi.arvalid | axi.arready)),
            # After an error the remaining rows are dropped without a read.
            row_free.eq(~row_v | err | (ar_load & row_seg.last & row_seg.row_end)),
            row_q.r_en.eq(row_free & row_q.r_rdy),
        ]
        with m.If(ar_load):
            m.d.sync += [
                axi.arvalid.eq(1), axi.arid.eq(free_id), axi.araddr.eq(row_src),
                axi.arlen.eq(chunk - 1),
                row_src.eq(row_src + beats_to_bytes(chunk)),
                row_dst.eq(row_dst + beats_to_bytes(chunk)),
                row_left_m1.eq(row_left_m1 - chunk),
            ]
            with m.If(~row_seg.last):
                # A full burst; the segment goes on: the low bits of its length stay.
                nxt_last = row_seg.left_m1[beat_log + 1:] == 0
                m.d.sync += [
                    row_seg.left_m1.eq(row_seg.left_m1 - burst),
                    row_seg.last.eq(nxt_last),
                    chunk.eq(Mux(nxt_last, _low_plus_one(row_seg.left_m1), burst)),
                ]
            with m.Elif(~row_seg.row_end):
                m.d.sync += rc.eq(1)
        with m.Elif(axi.arready):
            m.d.sync += axi.arvalid.eq(0)
        # The next segment of the row: room (1), segment (2), its first chunk (3).
        rc_room_c, rc_room_small_c = _room(row_src, row_dst)
        with m.Switch(rc):
            with m.Case(1):
                m.d.sync += [rc.eq(2), rc_room.eq(rc_room_c), rc_room_small.eq(rc_room_small_c)]
            with m.Case(2):
                m.d.sync += [rc.eq(3), row_seg.eq(_segment(row_left_m1, rc_room, rc_room_small))]
            with m.Case(3):
                m.d.sync += [rc.eq(0), chunk.eq(_first_chunk(row_seg))]
        m.d.comb += [
            meta_wr.addr.eq(free_id), meta_wr.en.eq(ar_load),
            meta_wr.data.dst.eq(row_dst), meta_wr.data.beats.eq(chunk),
            src_wr.addr.eq(free_id), src_wr.en.eq(ar_load), src_wr.data.eq(row_src),
        ]
        with m.If(row_free):
            m.d.sync += [row_v.eq(row_q.r_rdy), rc.eq(0)]
            with m.If(row_q.r_rdy):
                m.d.sync += [
                    row_src.eq(q_out.src), row_dst.eq(q_out.dst), row_seg.eq(q_out.seg),
                    chunk.eq(q_out.chunk), row_left_m1.eq(c_left_m1),
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
        keys_over = ~keys_more | (self.stop & ~self.keys.valid)
        with m.If(busy & keys_over & ~a_v & ~b_v & ~p_v & ~c_v & ~d_v & ~e_v & ~row_q.r_rdy
                  & ~row_v & (in_use == 0)
                  & ~rd_inflight & ~w_fifo.r_rdy & (wr_q.level == 0)):
            m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m

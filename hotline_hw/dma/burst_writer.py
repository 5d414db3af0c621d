"""Writes a stream of strobed bus beats to consecutive host addresses in INCR bursts."""

from amaranth import Signal, Module, Mux, Cat, Const
from amaranth.lib import wiring, stream, fifo
from amaranth.lib.wiring import In, Out

from ..axi import axi4_signature, BURST_INCR, RESP_OKAY
from ..job import error_record, record_first, resp_cause
from .packer import strobed_beat
from hotline_spec.config import DeviceConfig

__all__ = ["BurstWriter"]


class BurstWriter(wiring.Component):
    """DMA writer of a beat stream: beat ``i`` goes to ``addr + i * bus_bytes``.

    Bursts are INCR, full-width, naturally aligned to ``C = min(burst_beats, 4096 //
    bus_bytes)`` beats: the first one runs up to the next ``C``-beat boundary, the others
    are ``C`` beats, the last may be shorter (``flush``). So none is longer than
    ``burst_beats`` or crosses 4 KiB, and the burst arithmetic is an increment of the chunk
    number (no adder on the address).

    An AW is issued only once the whole burst's data is in the FIFO (``2 * burst_beats``
    beats, one burst filling while one drains), so W never waits on data once its burst is
    announced; W beats may go before their AW is accepted (AXI allows it). ``bready`` is 1;
    up to ``bursts_in_flight`` bursts wait for their B; their count and the oldest one's
    address (B comes in issue order: one ID) name a failing one. After the first B error no further burst is
    issued, beats are accepted and dropped, and the bursts already issued still send their
    data and are waited for.

    Parameters
    ----------
    dcfg : DeviceConfig
        ``addr_bits``, ``bus_bits``, ``burst_beats``; ``word_writes`` beats of write
        response latency are covered (``bursts_in_flight``).
    engine : int
        The :class:`~hotline_spec.commands.Engine` of the error record.
    bursts_in_flight : int, optional
        Bursts issued and not yet answered, at most (default ``word_writes //
        burst_beats``, at least 2).

    Attributes
    ----------
    axi : Out(axi4_signature(addr_bits, bus_bits, 1))
        Write channels (ID 0); AR idle, ``rready`` and ``bready`` 1. AW and W come from
        registers or the FIFO output.
    start : In(1)
        Pulse, only while ``idle``: a new stream, written from ``addr``; clears ``error``.
    addr : In(addr_bits)
        Read with ``start``: the address of beat 0, a multiple of ``bus_bytes``.
    beats : In(stream of :func:`~hotline_hw.dma.packer.strobed_beat`)
        The beats, in order; ``ready`` is the FIFO's room (always 1 after an error).
    flush : In(1)
        Level: no beat follows those already accepted; the remainder (fewer than a burst)
        is written as a short burst. Keep it low while beats may still come.
    idle : Out(1)
        Nothing buffered, no burst issued that is not answered.
    error : Out(:func:`~hotline_hw.job.error_record`)
        The first B error since ``start``: cause ``resp_cause(1, bresp)``, ``engine``,
        ``addr`` = the burst's address.
    """

    def __init__(self, dcfg: DeviceConfig, engine, bursts_in_flight=None):
        self.dcfg = dcfg
        self.engine = int(engine)
        if bursts_in_flight is None:
            bursts_in_flight = max(2, dcfg.word_writes // dcfg.burst_beats)
        self.bursts_in_flight = bursts_in_flight
        super().__init__({
            "axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "start": In(1), "addr": In(dcfg.addr_bits),
            "beats": In(stream.Signature(strobed_beat(dcfg.bus_bits))),
            "flush": In(1),
            "idle": Out(1),
            "error": Out(error_record()),
        })

    def elaborate(self, platform):
        c = self.dcfg
        m = Module()
        axi = self.axi
        lb = c.beat_offset_bits                    # log2(bus_bytes)
        C = min(c.burst_beats, 4096 // c.bus_bytes)
        cb = (C - 1).bit_length()                  # log2(C)
        depth = 2 * c.burst_beats
        err = self.error.valid

        m.submodules.data = q = fifo.SyncFIFOBuffered(width=c.bus_bits + c.bus_bytes,
                                                      depth=depth)
        # Lengths (minus one) of the bursts issued whose W has not all gone, for wlast.
        m.submodules.lengths = lq = fifo.SyncFIFO(width=max(cb, 1), depth=4)
        # Bursts issued and not answered, and the address of the oldest: with one ID the B
        # responses come in issue order, and every burst after the first starts at the next
        # chunk, so a counter and one address name the failing burst (no address FIFO, so
        # many bursts in flight cost nothing).
        outstanding = Signal(range(self.bursts_in_flight + 1))
        oldest = Signal(c.addr_bits)

        # ---- beats in -------------------------------------------------------------------
        m.d.comb += [
            q.w_data.eq(Cat(self.beats.payload.data, self.beats.payload.strobe)),
            q.w_en.eq(self.beats.valid & q.w_rdy & ~err),
            self.beats.ready.eq(q.w_rdy | err),
        ]

        # ---- AW: a whole burst of data in the FIFO, not yet claimed by an issued burst ----
        unclaimed = Signal(range(depth + 1))
        chunk = Signal(c.addr_bits - lb - cb)      # next_addr >> (lb + cb)
        off = Signal(max(cb, 1))                   # next_addr's beat within its chunk
        next_addr = Cat(Const(0, lb), off[:cb], chunk)
        full_m1 = Signal(max(cb, 1))               # (beats to the chunk's end) - 1
        m.d.comb += full_m1.eq(~off if cb else 0)
        aw_valid = Signal()
        aw_addr = Signal(c.addr_bits)
        aw_len = Signal(max(cb, 1))
        m.d.comb += [axi.awvalid.eq(aw_valid), axi.awaddr.eq(aw_addr), axi.awlen.eq(aw_len),
                     axi.awid.eq(0), axi.awsize.eq(lb), axi.awburst.eq(BURST_INCR),
                     axi.awcache.eq(0b0011), axi.awprot.eq(0)]
        with m.If(axi.awready):
            m.d.sync += aw_valid.eq(0)
        whole = Signal()
        m.d.comb += whole.eq(unclaimed > full_m1)
        issue = Signal()
        m.d.comb += issue.eq(~err & (~aw_valid | axi.awready) & lq.w_rdy
                             & (outstanding != self.bursts_in_flight)
                             & (whole | (self.flush & (unclaimed != 0))))
        len_m1 = Signal(max(cb, 1))
        m.d.comb += len_m1.eq(Mux(whole, full_m1, unclaimed - 1))
        m.d.comb += [lq.w_en.eq(issue), lq.w_data.eq(len_m1)]
        with m.If(issue):
            # After a short (flush) burst nothing follows, so the next burst always starts
            # at the next chunk.
            m.d.sync += [aw_valid.eq(1), aw_addr.eq(next_addr), aw_len.eq(len_m1),
                         off.eq(0), chunk.eq(chunk + 1)]
        m.d.sync += unclaimed.eq(unclaimed + q.w_en - Mux(issue, len_m1 + 1, 0))

        # ---- W: the FIFO's beats, in the issued bursts' order --------------------------
        w_count = Signal(max(cb, 1))
        wlast = Signal()
        m.d.comb += wlast.eq(w_count == lq.r_data)
        m.d.comb += [axi.wvalid.eq(lq.r_rdy & q.r_rdy),
                     axi.wdata.eq(q.r_data[:c.bus_bits]), axi.wstrb.eq(q.r_data[c.bus_bits:]),
                     axi.wlast.eq(wlast)]
        w_done = axi.wvalid & axi.wready
        with m.If(w_done):
            m.d.sync += w_count.eq(Mux(wlast, 0, w_count + 1))
        # After an error the FIFO's unclaimed beats are dropped (no burst is issued then, so
        # an empty length FIFO means every issued burst has had its data).
        drop = err & ~lq.r_rdy & q.r_rdy
        m.d.comb += [q.r_en.eq(w_done | drop), lq.r_en.eq(w_done & wlast)]

        # ---- B ------------------------------------------------------------------------------
        m.d.comb += axi.bready.eq(1)
        m.d.sync += outstanding.eq(outstanding + issue - axi.bvalid)
        with m.If(axi.bvalid):
            m.d.sync += oldest.eq(Cat(Const(0, lb + cb), oldest[lb + cb:] + 1))
        with m.If(self.start):
            m.d.sync += [err.eq(0), unclaimed.eq(0), w_count.eq(0),
                         Cat(off[:cb], chunk).eq(self.addr[lb:]),
                         oldest.eq(Cat(Const(0, lb), self.addr[lb:]))]
        record_first(m, self.error, axi.bvalid & (axi.bresp != RESP_OKAY),
                     cause=resp_cause(1, axi.bresp), engine=self.engine, addr=oldest)

        m.d.comb += self.idle.eq((q.level == 0) & (outstanding == 0))
        # Read channels unused.
        m.d.comb += [axi.arvalid.eq(0), axi.rready.eq(1)]
        return m

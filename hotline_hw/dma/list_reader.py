"""Reads a list of 64-bit words (keys) from host memory over AXI4, in order.

:class:`ListReader` fetches ``count`` words starting at an 8-byte aligned bus address in
bursts that never cross 4 KiB, keeps as many bursts in flight as its FIFO has room for, and
emits data beats with a mask of the words that belong to the list. :class:`WordSerializer`
turns those beats into one word per cycle for consumers that take one key at a time.
"""

from amaranth import Signal, Module, Mux, Cat, Const
from amaranth.lib import wiring, stream, data, fifo
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..axi import axi4_signature, BURST_INCR, RESP_OKAY
from ..job import error_record, record_first, resp_cause, first_set
from ..logic import or_tree
from hotline_spec.commands import Engine
from hotline_spec.config import DeviceConfig

__all__ = ["ListReader", "WordSerializer", "list_beat", "list_word", "list_fifo_beats"]

#: AXI AxCACHE for every DMA access: normal, non-cacheable, bufferable.
AXCACHE_NORMAL = 0b0011


def list_beat(dcfg: DeviceConfig):
    """A data beat of a list: the bus word, which of its 64-bit words are list entries, and
    whether the bus answered it with an error."""
    return data.StructLayout({"data": dcfg.bus_bits, "mask": dcfg.words_per_beat,
                              "error": 1})


def list_word(dcfg: DeviceConfig):
    """One list entry: the 64-bit word and the error flag of the beat it came in."""
    return data.StructLayout({"word": 64, "error": 1})


def list_fifo_beats(dcfg: DeviceConfig):
    """Beats the reader buffers (``DeviceConfig.list_beats``): its reads in flight, so the
    host read latency it covers at the bus rate."""
    return dcfg.list_beats


class ListReader(wiring.Component):
    """DMA reader of a word list.

    Bursts end on multiples of ``burst_beats`` beats (so none crosses 4 KiB) and are
    issued only while the FIFO has room for a whole ``burst_beats`` burst (a
    credit counter: FIFO depth minus beats buffered or requested), so ``rready`` is always 1.
    Every timing-relevant quantity is a register: the next burst's length (recomputed each
    cycle from the registered burst address and beats left; a burst is issued at most every
    other cycle, so it is always fresh), the credit count, and the word mask of the beat at
    the head of the FIFO (set up from the first-beat skip and the last-beat remainder at
    ``start``, then one compare of the beats-left down-counter per beat).

    After a beat answered with an error no further burst is issued; the bursts in flight
    finish (their beats are emitted as they came), then the beats never requested are
    emitted as error beats with zero data, so that a consumer always sees every word
    position of the list.

    Attributes
    ----------
    axi : Out(axi4_signature)
        Read channels only (AR, R); the write channels are idle. Every burst uses ID 0 (so
        data returns in order) and full-width beats.
    start : In(1)
        One-cycle pulse while ``busy`` is low: read ``count`` words from ``addr`` (both
        sampled in that cycle). The first ``arvalid`` comes 4 cycles later.
    addr : In(addr_bits)
        Bus address of word 0, a multiple of 8.
    count : In(32)
        Words to read, >= 1.
    beats : Out(stream of :func:`list_beat`)
        The list's beats in order, from a register (the FIFO's output); ``mask`` bit ``k``
        says word ``k`` of the beat belongs to the list (the first and last beats may be
        partial).
    busy : Out(1)
        From the cycle after ``start`` until the last beat has left on ``beats``.
    error : Out(:func:`~hotline_hw.job.error_record`)
        The first beat answered SLVERR/DECERR since ``start`` (cleared by ``start``):
        engine ``LIST_READ``, cause ``READ_SLVERR``/``READ_DECERR``, ``addr`` the failing
        beat's (bus-aligned) address, ``index`` the list position of the first list word in
        that beat. Valid from the cycle after the beat arrived, i.e. no later than the beat
        leaves on ``beats``.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({
            "axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "start": In(1), "addr": In(dcfg.addr_bits), "count": In(32),
            "beats": Out(stream.Signature(list_beat(dcfg))),
            "busy": Out(1),
            "error": Out(error_record()),
        })

    def elaborate(self, platform):
        c = self.dcfg
        m = Module()
        axi = self.axi
        W = c.words_per_beat
        wb = exact_log2(W)                          # log2(words per beat)
        bb = c.bus_bytes
        lb = c.beat_offset_bits                     # log2(bus bytes)
        depth = list_fifo_beats(c)
        ones = (1 << W) - 1
        # SyncFIFOBuffered(depth + 1) is a `depth` FIFO plus an output register: with at
        # most `depth` beats buffered or requested, its FIFO part always takes the next beat
        # (a SyncFIFOBuffered(depth) may refuse one at level depth - 1).
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=c.bus_bits + 1, depth=depth + 1)

        busy = Signal()
        phase = Signal(2)                           # 2, 1: setting up after start; 0: run
        l_addr = Signal(c.addr_bits)                # start's operands
        l_count = Signal(32)
        next_addr = Signal(c.addr_bits)             # next burst's (beat-aligned) address
        beats_to_issue = Signal(33)
        beats_to_emit = Signal(33)
        first_mask = Signal(W)
        last_mask = Signal(W)
        head_mask = Signal(W)                       # mask of the next beat to emit
        last_beat = Signal()                        # beats_to_emit == 1, kept as a register
        emit_left = Signal()                        # beats_to_emit != 0, likewise
        credits = Signal(range(depth + 1), init=depth)  # FIFO slots neither full nor requested
        rx_addr = Signal(c.addr_bits)               # address of the next beat to arrive
        rx_pos = Signal(32)                         # list position of its word 0
        rx_first = Signal()
        m.d.comb += self.busy.eq(busy)

        # ---- start: latch the operands, then two set-up cycles of registered arithmetic ----
        with m.If(self.start & ~busy):
            m.d.sync += [busy.eq(1), phase.eq(2), l_addr.eq(self.addr), l_count.eq(self.count),
                         self.error.valid.eq(0)]    # before record_first, below
        skip = l_addr[3:lb] if W > 1 else Const(0, 1)
        with m.If(phase == 2):
            words = Signal(33)
            m.d.comb += words.eq(l_count + skip)
            aligned = Cat(Const(0, lb), l_addr[lb:])
            m.d.sync += [
                phase.eq(1), next_addr.eq(aligned), rx_addr.eq(aligned),
                beats_to_issue.eq((words + (W - 1)) >> wb),
                beats_to_emit.eq((words + (W - 1)) >> wb),
                first_mask.eq(Const(ones, W) << skip),
                rx_pos.eq(-skip), rx_first.eq(1),
            ]
            if W > 1:
                end = words[:wb]                    # words in the last beat, mod W
                m.d.sync += last_mask.eq(Mux(end == 0, ones, (Const(1, W + 1) << end) - 1))
            else:
                m.d.sync += last_mask.eq(ones)
        with m.If(phase == 1):
            m.d.sync += [phase.eq(0), last_beat.eq(beats_to_emit == 1), emit_left.eq(1),
                         head_mask.eq(first_mask & Mux(beats_to_emit == 1, last_mask, ones))]

        # ---- AR: one burst at most every other cycle, each needing a whole burst of credit --
        # Bursts end on multiples of burst_beats beats (the first may be shorter): 4 KiB is
        # such a multiple, so no burst crosses it, and the length needs no wide compare.
        bmax = c.burst_beats
        bw = exact_log2(bmax)
        cap = Signal(range(bmax + 1))               # beats to the next burst boundary
        few = Signal()                              # fewer beats left than that
        length = Signal(range(bmax + 1))            # registered: fresh by the next issue
        m.d.comb += [
            cap.eq(bmax - (next_addr[lb:lb + bw] if bw else 0)),
            few.eq((beats_to_issue[bw + 1:] == 0) & (beats_to_issue[:bw + 1] < cap)),
        ]
        m.d.sync += length.eq(Mux(few, beats_to_issue[:bw + 1], cap))
        arvalid = Signal()
        ar_len = Signal(8)
        ar_addr = Signal(c.addr_bits)
        m.d.comb += [axi.arvalid.eq(arvalid), axi.araddr.eq(ar_addr), axi.arlen.eq(ar_len),
                     axi.arid.eq(0), axi.arsize.eq(lb), axi.arburst.eq(BURST_INCR),
                     axi.arcache.eq(AXCACHE_NORMAL), axi.arprot.eq(0)]
        credit_ok = Signal()
        m.d.comb += credit_ok.eq(credits >= bmax)
        issue = Signal()
        with m.If(arvalid & axi.arready):
            m.d.sync += arvalid.eq(0)
        # `length` and `more` lag `next_addr`/`beats_to_issue` by a cycle: never issue in the
        # cycle after they changed (after an issue `arvalid` is still high then; phase 1 covers
        # the start).
        more = Signal()                             # beats_to_issue != 0, registered likewise
        m.d.sync += more.eq(beats_to_issue != 0)
        m.d.comb += issue.eq(busy & (phase == 0) & ~arvalid & more & credit_ok
                             & ~self.error.valid)
        with m.If(issue):
            m.d.sync += [arvalid.eq(1), ar_addr.eq(next_addr), ar_len.eq(length - 1),
                         next_addr.eq(next_addr + (length << lb)),
                         beats_to_issue.eq(beats_to_issue - length)]
        popped = q.r_stream.valid & q.r_stream.ready
        m.d.sync += credits.eq(credits + popped - Mux(issue, length, 0))

        # ---- R: every beat goes to the FIFO (its room was reserved by the burst's credit) ---
        got_beat = axi.rvalid & axi.rready
        rerr = axi.rresp != RESP_OKAY
        m.d.comb += [axi.rready.eq(1), q.w_stream.valid.eq(axi.rvalid),
                     q.w_stream.payload.eq(Cat(axi.rdata, rerr))]
        with m.If(got_beat):
            m.d.sync += [rx_addr.eq(rx_addr + bb), rx_pos.eq(rx_pos + W), rx_first.eq(0)]
        record_first(m, self.error, got_beat & rerr, cause=resp_cause(0, axi.rresp),
                     engine=Engine.LIST_READ, addr=rx_addr, index=Mux(rx_first, 0, rx_pos))

        # After an error and once nothing is in flight or buffered, the rest are fillers.
        filler = Signal()
        m.d.comb += filler.eq(self.error.valid & (credits == depth) & emit_left)

        # ---- emit beats with their word mask -------------------------------------------
        beat = self.beats.payload
        m.d.comb += [
            self.beats.valid.eq(q.r_stream.valid | filler),
            beat.data.eq(Mux(filler, 0, q.r_stream.payload[:c.bus_bits])),
            beat.error.eq(filler | q.r_stream.payload[c.bus_bits]),
            beat.mask.eq(head_mask),
            q.r_stream.ready.eq(self.beats.ready & ~filler),
        ]
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += [beats_to_emit.eq(beats_to_emit - 1),
                         last_beat.eq(beats_to_emit == 2), emit_left.eq(~last_beat),
                         head_mask.eq(Mux(beats_to_emit == 2, last_mask, ones))]
            with m.If(last_beat):
                m.d.sync += busy.eq(0)

        # Write channels unused.
        m.d.comb += [axi.awvalid.eq(0), axi.wvalid.eq(0), axi.bready.eq(1)]
        return m


class WordSerializer(wiring.Component):
    """List beats in, one list word per cycle out (the masked-off words are skipped).

    Attributes
    ----------
    beats : In(stream of :func:`list_beat`)
    words : Out(stream of :func:`list_word`)
        The list entries in order, each with its beat's error flag.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({"beats": In(stream.Signature(list_beat(dcfg))),
                          "words": Out(stream.Signature(list_word(dcfg)))})

    def elaborate(self, platform):
        c = self.dcfg
        W = c.words_per_beat
        m = Module()
        held = Signal(c.bus_bits)
        rem = Signal(W)
        err = Signal()
        _, _, pick = first_set(m, rem, "pick")     # lowest remaining word, one-hot
        word = or_tree([held[64 * k:64 * (k + 1)] & pick[k].replicate(64) for k in range(W)])
        m.d.comb += [self.words.valid.eq(rem != 0),
                     self.words.payload.word.eq(word),
                     self.words.payload.error.eq(err)]
        take_word = self.words.valid & self.words.ready
        m.d.comb += self.beats.ready.eq((rem == 0) | (take_word & ((rem & ~pick) == 0)))
        with m.If(take_word):
            m.d.sync += rem.eq(rem & ~pick)
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += [held.eq(self.beats.payload.data), rem.eq(self.beats.payload.mask),
                         err.eq(self.beats.payload.error)]
        return m

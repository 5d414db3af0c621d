"""Reads a list of 64-bit words (keys) from host memory over AXI4, in order.

:class:`ListReader` fetches ``count`` words starting at an 8-byte aligned bus address in
bursts that never cross 4 KiB, keeps as many bursts in flight as its FIFO has room for, and
emits data beats with a mask of the words that belong to the list. :class:`WordSerializer`
turns those beats into one word per cycle for consumers that take one key at a time.
"""

from amaranth import Signal, Module, Mux, Cat, Const, Array
from amaranth.lib import wiring, stream, data, fifo
from amaranth.lib.wiring import In, Out

from ..axi import axi4_signature, BURST_INCR, RESP_OKAY
from hotline_spec.config import DeviceConfig

__all__ = ["ListReader", "WordSerializer", "list_beat", "list_word"]


def list_beat(dcfg: DeviceConfig):
    """A data beat of a list: the bus word, which of its 64-bit words are list entries, and
    whether the bus answered it with an error."""
    return data.StructLayout({"data": dcfg.bus_bits, "mask": dcfg.words_per_beat,
                              "error": 1})


def list_word(dcfg: DeviceConfig):
    """One list entry: the 64-bit word and the error flag of the beat it came in."""
    return data.StructLayout({"word": 64, "error": 1})


def list_fifo_beats(dcfg: DeviceConfig):
    """Beats the reader buffers: enough to keep half the row reads' bytes in flight."""
    return max(2 * dcfg.burst_beats, dcfg.read_ids * dcfg.burst_beats // 2)


class ListReader(wiring.Component):
    """DMA reader of a word list.

    Ports
    -----
    axi : Out(axi4_signature)
        Read channels only (AR, R); the write channels are idle. Every burst uses ID 0 (so
        data returns in order) and full-width beats.
    start : In(1)
        One-cycle pulse while ``busy`` is low: read ``count`` words from ``addr``.
    addr : In(addr_bits)
        Bus address of word 0, a multiple of 8.
    count : In(32)
        Words to read, >= 1.
    beats : Out(stream of :func:`list_beat`)
        The list's beats in order; ``mask`` bit ``k`` says word ``k`` of the beat belongs
        to the list (the first and last beats may be partial).
    busy : Out(1)
        From ``start`` until the last beat has left on ``beats``.
    error, err_resp, err_addr : Out
        Sticky from the first beat answered with an error (cleared by ``start``): its
        ``rresp`` and bus address.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({
            "axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "start": In(1), "addr": In(dcfg.addr_bits), "count": In(32),
            "beats": Out(stream.Signature(list_beat(dcfg))),
            "busy": Out(1),
            "error": Out(1), "err_resp": Out(2), "err_addr": Out(dcfg.addr_bits),
        })

    def elaborate(self, platform):
        c = self.dcfg
        m = Module()
        axi = self.axi
        W = c.words_per_beat
        bb = c.bus_bytes
        lane_bits = (bb - 1).bit_length()          # log2(bus_bytes)
        depth = list_fifo_beats(c)
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=c.bus_bits + 1, depth=depth)

        # Command state.
        next_addr = Signal(c.addr_bits)             # next burst's (beat-aligned) address
        beats_to_issue = Signal(33)
        beats_to_emit = Signal(33)
        beat_index = Signal(33)                     # of the next beat to emit
        first_word = Signal(range(W))               # list word 0's position in beat 0
        total_words = Signal(33)
        inflight = Signal(range(depth + 1))         # beats requested, not yet received
        rx_addr = Signal(c.addr_bits)               # address of the next beat to arrive
        busy = Signal()
        m.d.comb += self.busy.eq(busy)

        with m.If(self.start & ~busy):
            skip = self.addr[3:lane_bits] if W > 1 else Const(0, 1)
            nbeats = (self.count + skip + (W - 1)) >> (W.bit_length() - 1)
            aligned = Cat(Const(0, lane_bits), self.addr[lane_bits:])
            m.d.sync += [busy.eq(1), next_addr.eq(aligned), rx_addr.eq(aligned),
                         beats_to_issue.eq(nbeats), beats_to_emit.eq(nbeats),
                         beat_index.eq(0), first_word.eq(skip), total_words.eq(self.count),
                         self.error.eq(0), self.err_resp.eq(0), self.err_addr.eq(0)]

        # ---- AR: bursts up to burst_beats, cut at 4 KiB, only when the FIFO has room ----
        to_4k = Signal(range(4096 // bb + 1))
        m.d.comb += to_4k.eq((4096 - next_addr[:12]) >> lane_bits)
        burst = Signal(range(max(c.burst_beats, 4096 // bb) + 1))
        m.d.comb += burst.eq(Mux(beats_to_issue < c.burst_beats, beats_to_issue, c.burst_beats))
        length = Signal.like(burst)
        m.d.comb += length.eq(Mux(to_4k < burst, to_4k, burst))
        arvalid = Signal()
        ar_len = Signal(8)
        ar_addr = Signal(c.addr_bits)
        m.d.comb += [axi.arvalid.eq(arvalid), axi.araddr.eq(ar_addr), axi.arlen.eq(ar_len),
                     axi.arid.eq(0), axi.arsize.eq(lane_bits), axi.arburst.eq(BURST_INCR),
                     axi.arcache.eq(0b0011), axi.arprot.eq(0)]
        room = Signal()
        m.d.comb += room.eq(q.level + inflight + length <= depth)
        got_beat = axi.rvalid & axi.rready
        issue = Signal()
        with m.If(arvalid & axi.arready):
            m.d.sync += arvalid.eq(0)
        with m.If(busy & ~arvalid & (beats_to_issue != 0) & room & ~self.error):
            m.d.comb += issue.eq(1)
            m.d.sync += [arvalid.eq(1), ar_addr.eq(next_addr), ar_len.eq(length - 1),
                         next_addr.eq(next_addr + (length << lane_bits)),
                         beats_to_issue.eq(beats_to_issue - length)]
        m.d.sync += inflight.eq(inflight + Mux(issue, length, 0) - got_beat)

        # ---- R: every beat goes to the FIFO (room was reserved when it was requested) ---
        m.d.comb += [axi.rready.eq(1), q.w_en.eq(got_beat),
                     q.w_data.eq(Cat(axi.rdata, axi.rresp != RESP_OKAY))]
        with m.If(got_beat):
            m.d.sync += rx_addr.eq(rx_addr + bb)
            with m.If((axi.rresp != RESP_OKAY) & ~self.error):
                m.d.sync += [self.error.eq(1), self.err_resp.eq(axi.rresp),
                             self.err_addr.eq(rx_addr)]
        # After an error no more bursts are issued; the beats never requested are emitted
        # as error beats so that consumers still see exactly `count` words.
        filler = Signal()
        m.d.comb += filler.eq(self.error & (inflight == 0) & (q.level == 0)
                              & (beats_to_emit != 0))

        # ---- emit beats with their word mask -------------------------------------------
        beat = self.beats.payload
        mask = Signal(W)
        for k in range(W):
            pos = Signal(34, name=f"pos{k}")
            m.d.comb += [pos.eq((beat_index << (W.bit_length() - 1)) + k),
                         mask[k].eq((pos >= first_word) & (pos < first_word + total_words))]
        m.d.comb += [
            self.beats.valid.eq(busy & (q.r_rdy | filler)),
            beat.data.eq(Mux(filler, 0, q.r_data[:c.bus_bits])),
            beat.error.eq(filler | q.r_data[c.bus_bits]),
            beat.mask.eq(mask),
            q.r_en.eq(self.beats.ready & busy & ~filler),
        ]
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += [beat_index.eq(beat_index + 1), beats_to_emit.eq(beats_to_emit - 1)]
            with m.If(beats_to_emit == 1):
                m.d.sync += [busy.eq(0), beats_to_issue.eq(0)]

        # Write channels unused.
        m.d.comb += [axi.awvalid.eq(0), axi.wvalid.eq(0), axi.bready.eq(1)]
        return m


class WordSerializer(wiring.Component):
    """List beats in, one list word per cycle out (the masked-off words are skipped).

    Ports
    -----
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
        # Lowest remaining word.
        pick = Signal(range(W))
        for k in reversed(range(W)):
            with m.If(rem[k]):
                m.d.comb += pick.eq(k)
        words = [held[64 * k:64 * (k + 1)] for k in range(W)]
        m.d.comb += [self.words.valid.eq(rem != 0),
                     self.words.payload.word.eq(Array(words)[pick]),
                     self.words.payload.error.eq(err)]
        take_word = self.words.valid & self.words.ready
        one_left = Signal()
        m.d.comb += one_left.eq((rem & (rem - 1)) == 0)   # at most one bit set
        m.d.comb += self.beats.ready.eq((rem == 0) | (one_left & take_word))
        with m.If(take_word):
            m.d.sync += rem.eq(rem & (rem - 1))           # clear the lowest set bit
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += [held.eq(self.beats.payload.data), rem.eq(self.beats.payload.mask),
                         err.eq(self.beats.payload.error)]
        return m

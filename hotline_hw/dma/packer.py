"""Packs sparse lanes of words into dense, full bus beats with byte strobes."""

from amaranth import Signal, Module, Mux, Cat, Const, Array
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..logic import or_tree

__all__ = ["Packer", "lane_words", "strobed_beat"]


def lane_words(word_bits, lanes):
    """A beat of ``lanes`` words, each with a valid bit (bit ``i`` of ``valid``: lane ``i``)."""
    return data.StructLayout({"valid": lanes, "data": data.ArrayLayout(word_bits, lanes)})


def strobed_beat(bus_bits):
    """A bus beat to write: the data and one strobe bit per byte."""
    return data.StructLayout({"data": bus_bits, "strobe": bus_bits // 8})


def _prefix_counts(bits):
    """Inclusive prefix counts of a list of 1-bit values: ``out[i] = bits[0] + ... +
    bits[i]``, a Sklansky prefix network (log2(n) adder levels, n/2 adders per level)."""
    s = [b.as_unsigned() for b in bits]
    d = 1
    while d < len(s):
        # In every block of 2d, the upper half adds the lower half's total.
        s = [s[i] + s[(i & ~(2 * d - 1)) + d - 1] if i & d else s[i] for i in range(len(s))]
        d *= 2
    return s


class Packer(wiring.Component):
    """Dense packing of the valid words of lane beats into bus beats.

    The valid words of ``words`` leave on ``beats`` in order (lane 0 first, beat after
    beat), ``W = bus_bits // word_bits`` to a beat, word ``k`` of a beat on bits
    ``k * word_bits`` up. Two registered stages, so no path is longer than a prefix count
    over ``lanes`` bits and a ``lanes``-way select, or a ``W``-way word rotation:

    1. *compact*: takes up to ``W`` valid words of the input beat per cycle (the lowest
       lanes not yet taken), densely: an input beat with more than ``W`` valid words takes
       several cycles (``lanes > W``); a beat with no valid lane is consumed without output.
    2. *merge*: appends them at the fill position of the beat being assembled; when it is
       full, it goes to the output register and the overflow starts the next beat.

    Dense input moves ``min(lanes, W)`` words per cycle. Input and output both take
    back-pressure without loss.

    Parameters
    ----------
    word_bits : int
        Width of a word, a multiple of 8 dividing ``bus_bits``.
    lanes : int
        Words per input beat, >= 1.
    bus_bits : int
        Width of an output beat.

    Attributes
    ----------
    words : In(stream of :func:`lane_words`)
        Input beats; any subset of lanes valid, holes anywhere.
    beats : Out(stream of :func:`strobed_beat`)
        Packed beats; the strobes cover the words a beat holds (all of them except in the
        first beat after an ``offset`` and the beat a ``flush`` emits).
    start : In(1)
        Pulse, only while ``idle``: a new stream begins; its word 0 goes to word position
        ``offset`` of its beat 0 (the words below it have their strobes off).
    offset : In(range(W))
        Read with ``start``.
    flush : In(1)
        Pulse, in or after the cycle the stream's last input beat is accepted: once the
        words before it have been merged, emit the partial beat (if it holds any word)
        with the strobes of the words it holds; words after it wait until it is done and
        then start a new beat at position 0.
    idle : Out(1)
        Nothing buffered or pending: no input beat offered, no flush asked or waiting, no
        word held in either stage, the output register empty.
    """

    def __init__(self, word_bits, lanes, bus_bits):
        if word_bits < 8 or word_bits % 8 or bus_bits % word_bits:
            raise ValueError(f"Packer: word_bits ({word_bits}) must be a multiple of 8 that "
                             f"divides bus_bits ({bus_bits})")
        if lanes < 1:
            raise ValueError(f"Packer: lanes must be >= 1, not {lanes}")
        self.word_bits, self.lanes, self.bus_bits = word_bits, lanes, bus_bits
        self.W = bus_bits // word_bits
        super().__init__({
            "words": In(stream.Signature(lane_words(word_bits, lanes))),
            "beats": Out(stream.Signature(strobed_beat(bus_bits))),
            "start": In(1), "offset": In(range(self.W)), "flush": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W, L, wb = self.W, self.lanes, self.word_bits
        inp = self.words.payload

        # ---- stage 1: compact up to W words of the input beat ---------------------------
        a_valid = Signal()
        a_n = Signal(range(W + 1))                  # words held, at positions 0..a_n-1
        a_words = Signal(data.ArrayLayout(wb, W))
        taken = Signal(L)                           # lanes of the current beat already taken
        rem = Signal(L)
        m.d.comb += rem.eq(inp.valid & ~taken)
        # Rank of each lane among the remaining ones: its word's position in the compact set.
        counts = _prefix_counts([rem[i] for i in range(L)])
        rank = [Const(0, 1)] + counts[:-1]
        take = Signal(L)                            # lanes taken this cycle (rank < W)
        for i in range(L):
            m.d.comb += take[i].eq(rem[i] & (rank[i] < W) if i >= W else rem[i])
        total = counts[-1]
        last_part = Signal()                        # the rest of the beat fits this cycle
        m.d.comb += last_part.eq(total <= W if L > W else 1)
        n_take = Signal(range(W + 1))
        m.d.comb += n_take.eq(Mux(last_part, total, W))
        compact = []
        for k in range(W):
            # Lane i can land at position k only if i >= k; one-hot select by rank.
            hits = [Mux(rem[i] & (rank[i] == k), inp.data[i], 0) for i in range(k, L)]
            compact.append(or_tree(hits) if hits else Const(0, wb))

        flush_wait = Signal()                       # a flush asked, not yet done
        a_pop = Signal()
        a_free = Signal()
        m.d.comb += a_free.eq(~a_valid | a_pop)
        load = Signal()
        m.d.comb += [load.eq(self.words.valid & a_free & ~flush_wait),
                     self.words.ready.eq(a_free & ~flush_wait & last_part)]
        with m.If(a_free):
            m.d.sync += [a_valid.eq(load & (n_take != 0)), a_n.eq(n_take),
                         Cat(*[a_words[k] for k in range(W)]).eq(Cat(*compact))]
        if L > W:
            with m.If(load):
                m.d.sync += taken.eq(Mux(last_part, 0, taken | take))

        # ---- stage 2: merge into the beat being assembled ---------------------------------
        buf = Signal(data.ArrayLayout(wb, W))       # the partial beat
        bmask = Signal(W)                           # its positions that hold a word
        fill = Signal(range(W))                     # where the next word goes
        o_valid = Signal()
        o_data = Signal(data.ArrayLayout(wb, W))
        o_mask = Signal(W)
        o_free = Signal()
        m.d.comb += o_free.eq(~o_valid | self.beats.ready)
        with m.If(self.beats.ready):
            m.d.sync += o_valid.eq(0)

        # Combined positions 0..2W-1: the buffer below `fill`, then the a_n new words.
        comb_w, comb_m = [], []
        for p in range(2 * W):
            words, masks = [], []
            for f in range(W):
                if p < f:
                    words.append(buf[p])
                    masks.append(bmask[p])
                elif p - f < W:
                    words.append(a_words[p - f])
                    masks.append(p - f < a_n)
                else:
                    words.append(Const(0, wb))
                    masks.append(Const(0, 1))
            w = Signal(wb, name=f"merged{p}")
            mk = Signal(name=f"merged_mask{p}")
            m.d.comb += [w.eq(Array(words)[fill]), mk.eq(Array(masks)[fill])]
            comb_w.append(w)
            comb_m.append(mk)
        full = Signal()
        m.d.comb += full.eq(fill + a_n >= W)
        m.d.comb += a_pop.eq(a_valid & o_free)

        strobe = lambda mask: Cat(*[mask[k].replicate(wb // 8) for k in range(W)])
        with m.If(a_pop):
            with m.If(full):
                m.d.sync += [o_valid.eq(1), Cat(*[o_data[k] for k in range(W)]).eq(Cat(*comb_w[:W])),
                             o_mask.eq(Cat(*comb_m[:W])),
                             Cat(*[buf[k] for k in range(W)]).eq(Cat(*comb_w[W:])),
                             bmask.eq(Cat(*comb_m[W:])), fill.eq(fill + a_n - W)]
            with m.Else():
                m.d.sync += [Cat(*[buf[k] for k in range(W)]).eq(Cat(*comb_w[:W])),
                             bmask.eq(Cat(*comb_m[:W])), fill.eq(fill + a_n)]
        # Flush once everything before it has been merged.
        with m.Elif(flush_wait & ~a_valid & o_free):
            m.d.sync += [flush_wait.eq(0), fill.eq(0), bmask.eq(0)]
            with m.If(bmask != 0):
                m.d.sync += [o_valid.eq(1), o_data.eq(buf), o_mask.eq(bmask)]
        with m.If(self.flush):
            m.d.sync += flush_wait.eq(1)
        with m.If(self.start):
            m.d.sync += [fill.eq(self.offset), bmask.eq(0), flush_wait.eq(0), taken.eq(0)]

        m.d.comb += [
            self.beats.valid.eq(o_valid),
            self.beats.payload.data.eq(o_data.as_value()),
            self.beats.payload.strobe.eq(strobe(o_mask)),
            self.idle.eq(~self.words.valid & ~self.flush & ~flush_wait & ~a_valid
                         & (bmask == 0) & ~o_valid & (taken == 0)),
        ]
        return m

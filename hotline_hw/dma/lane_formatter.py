"""Turns list beats (``words_per_beat`` words with a mask) into lookup beats of ``lanes``
lanes."""

from amaranth import Signal, Module
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from hotline_spec.config import DeviceConfig
from ..job import first_set
from ..logic import or_tree
from ..layouts import lookup_beat
from .list_reader import list_beat

__all__ = ["LaneFormatter"]


class LaneFormatter(wiring.Component):
    """List beats in, lookup beats out, in stream order (lane 0 first).

    With ``W = words_per_beat`` and ``L = eal.lanes``, each bus beat is cut into
    ``G = ceil(W / L)`` groups of ``L`` words; group ``g`` becomes a lookup beat whose lane
    ``j`` is word ``g L + j`` (``L >= W``: one group, lanes ``>= W`` are holes). Masked-off
    words are holes (``valid`` 0); a group with no list word is not emitted. ``key`` is the
    word's low ``key_bits`` bits. The input's ``error`` flag is ignored (the
    :class:`~hotline_hw.dma.key_checker.KeyChecker` upstream forwards no error beat).

    A beat is held in a register and its groups go out one per cycle through an output
    register, so ``min(L, W)`` words move per cycle on a dense input while ``lookups.ready``
    is high. Latency: 2 cycles.

    Attributes
    ----------
    beats : In(stream of :func:`~hotline_hw.dma.list_reader.list_beat`)
        ``ready`` is high when the held beat is used up or its last group leaves.
    lookups : Out(stream of :func:`~hotline_hw.layouts.lookup_beat`)
        From a register.
    busy : Out(1)
        A beat, or a part of one, is still inside.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({"beats": In(stream.Signature(list_beat(dcfg))),
                          "lookups": Out(stream.Signature(lookup_beat(dcfg.eal))),
                          "busy": Out(1)})

    def elaborate(self, platform):
        c = self.dcfg
        e = c.eal
        W, L = c.words_per_beat, e.lanes
        G = -(-W // L)
        m = Module()

        h_data = Signal(c.bus_bits)
        h_mask = Signal(W)
        h_rem = Signal(G)               # groups of the held beat still to go out

        def group_words(g):
            return [g * L + j if g * L + j < W else None for j in range(L)]

        in_mask = self.beats.payload.mask
        in_groups = Signal(G)
        for g in range(G):
            m.d.comb += in_groups[g].eq(or_tree([in_mask[w] for w in group_words(g)
                                             if w is not None]))

        out = self.lookups
        o_valid = Signal()
        o_beat = Signal(lookup_beat(e))
        m.d.comb += [out.valid.eq(o_valid), out.payload.eq(o_beat)]

        if G > 1:
            _, _, pick = first_set(m, h_rem, "group")
        else:
            pick = h_rem
        can_out = ~o_valid | out.ready
        emit = Signal()
        m.d.comb += emit.eq(can_out & (h_rem != 0))
        with m.If(emit):
            m.d.sync += [o_valid.eq(1), h_rem.eq(h_rem & ~pick)]
            for j in range(L):
                valid, key = [], []
                for g in range(G):
                    w = group_words(g)[j]
                    if w is None:
                        continue
                    valid.append(h_mask[w] & pick[g])
                    key.append(h_data[64 * w:64 * w + e.key_bits] & pick[g].replicate(e.key_bits))
                lane = o_beat[j]
                if valid:
                    m.d.sync += [lane.valid.eq(or_tree(valid)),
                                 lane.key.eq(or_tree(key))]
                else:
                    m.d.sync += [lane.valid.eq(0), lane.key.eq(0)]
        with m.Elif(out.ready):
            m.d.sync += o_valid.eq(0)

        m.d.comb += self.busy.eq((h_rem != 0) | o_valid)
        m.d.comb += self.beats.ready.eq((h_rem == 0) | (emit & ((h_rem & ~pick) == 0)))
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += [h_data.eq(self.beats.payload.data), h_mask.eq(in_mask),
                         h_rem.eq(in_groups)]
        return m

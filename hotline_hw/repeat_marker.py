"""The repeat marker: lookups of one beat that repeat an earlier lane's key skip the bank."""

from amaranth import Signal, Module, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from hotline_spec.config import EALConfig
from .layouts import hashed_lane, marked_lane, lane_index_bits
from .logic import or_tree

__all__ = ["RepeatMarker"]


class RepeatMarker(wiring.Component):
    """Marks, in each hashed beat, the lanes whose lookup only repeats an earlier one.

    Parameters
    ----------
    cfg : EALConfig
        ``lanes`` and ``policy``: only the srrip policy combines repeats (an lfu lookup
        counts every access), so with lfu no lane is ever marked.

    Attributes
    ----------
    i : In(stream of ``lanes`` x ``hashed_lane``)
        Hashed beats.
    o : Out(stream of ``lanes`` x ``marked_lane``)
        The same beats one cycle later (a register stage), each lane with ``repeat``,
        ``first`` and ``repeated``.
    busy : Out(1)
        A beat is in the register.

    Lane ``l`` is a *repeat* when the nearest lower lane of its beat that looks up the same
    set holds the same key: between the two nothing touches that set, so in stream order
    the second lookup of the key finds it where the first left it (srrip, spec 4.1: a
    learn-mode lookup always leaves its key in the set, a frozen one changes nothing). Its
    answer is then the first lookup's: in learn mode a hit on the same way, in frozen mode
    the same answer, and in learn mode the set ends as if the first lookup had also hit
    once more (RRPV 0). So a run of one key inside a beat costs its bank one access: the
    run's ``first`` lane goes to the bank with ``repeated`` set and every other lane of the
    run is answered from it. Hot keys (Zipf, small tables) stop piling onto one bank within
    a beat. Cost: the lanes' keys compared pairwise within the beat (``lanes^2 / 2``
    comparators) in a stage of its own.
    """

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(hashed_lane(cfg), cfg.lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(marked_lane(cfg), cfg.lanes))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        lanes = cfg.lanes
        beat = self.i.payload
        combine = cfg.policy == "srrip" and lanes > 1
        lane_bits = lane_index_bits(cfg)
        index_masks = [sum(1 << k for k in range(lanes) if (k >> j) & 1) for j in range(lane_bits)]

        repeat = Signal(lanes)
        firsts = []
        first_onehots = []
        for l in range(lanes):
            first = Signal(lane_bits, name=f"lane{l}_first")
            firsts.append(first)
            if not combine or l == 0:
                m.d.comb += first.eq(l)
                first_onehots.append(Const(0, lanes))
                continue
            same_set = Signal(l, name=f"lane{l}_same_set")
            same_key = Signal(l, name=f"lane{l}_same_key")
            for k in range(l):
                m.d.comb += [
                    same_set[k].eq(beat[k].valid & beat[l].valid & (beat[k].bank == beat[l].bank)
                                   & (beat[k].set == beat[l].set)),
                    same_key[k].eq(same_set[k] & (beat[k].tag == beat[l].tag)),
                ]
            other_key = Signal(l, name=f"lane{l}_other_key")   # a wire: sliced l times
            m.d.comb += other_key.eq(same_set & ~same_key)
            # Lane k starts l's run when it holds l's key and no lane between k and l looks
            # up the same set with another key; the run starts at the lowest such lane.
            starts = Signal(lanes, name=f"lane{l}_starts")
            m.d.comb += starts.eq(Cat(same_key[k] & ~other_key[k + 1:l].any() if k + 1 < l
                                      else same_key[k] for k in range(l)))
            lowest = Signal(lanes, name=f"lane{l}_run_start")
            m.d.comb += [
                lowest.eq(starts & (~starts + 1)),
                repeat[l].eq(starts.any()),
                first.eq(Mux(repeat[l], Cat((lowest & mask).any() for mask in index_masks), l)),
            ]
            first_onehots.append(lowest)
        # A lane is ``repeated`` when it starts the run of some later lane.
        repeated = Signal(lanes)
        m.d.comb += repeated.eq(or_tree(first_onehots))

        # One register stage: the pairwise compares get a cycle of their own.
        with m.If(self.o.ready | ~self.o.valid):
            m.d.sync += self.o.valid.eq(self.i.valid)
            for l in range(lanes):
                out = self.o.payload[l]
                m.d.sync += [
                    out.valid.eq(beat[l].valid), out.bank.eq(beat[l].bank),
                    out.set.eq(beat[l].set), out.tag.eq(beat[l].tag),
                    out.repeat.eq(repeat[l]), out.first.eq(firsts[l]),
                    out.repeated.eq(repeated[l]),
                ]
        m.d.comb += [self.i.ready.eq(self.o.ready | ~self.o.valid), self.busy.eq(self.o.valid)]
        return m

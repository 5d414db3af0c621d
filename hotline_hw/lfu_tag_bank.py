"""One bank of the Embedding Access Logger with the lfu policy (docs/spec.md section 4.2).

Same ports and pipeline as :class:`~hotline_hw.tag_bank.TagBank` (one lookup per cycle;
read, fetch, compare, update, write, with the sets of the lookups ahead forwarded); the word
holds the set's ways with their counts and the set's two-row count-min sketch, so admission
needs no second memory and sets stay independent.
"""

from amaranth import Signal, Module, Mux, Const

from hotline_spec.config import SKETCH_MULTIPLIER
from .layouts import set_layout
from .tag_bank import TagBank

__all__ = ["LfuTagBank"]


class LfuTagBank(TagBank):
    """A bank of ``sets`` x ``ways`` entries with frequency counts and sketch admission.

    Ports are those of :class:`~hotline_hw.tag_bank.TagBank`; ``read_data`` carries the set's
    ``ways`` and ``sketch``. ``popular_max_rrpv`` is not used: a frozen lookup is popular iff
    its entry's count is at least ``cfg.popular_min_count`` (an elaboration parameter).
    """

    def elaborate(self, platform):
        cfg = self.cfg
        ways, counters, cmax = cfg.ways, cfg.sketch_counters, cfg.count_max
        m = Module()
        # The sketch indices, computed from the request so that the multiply is three
        # stages ahead of the update.
        low32 = Signal(32)
        product = Signal(64)
        m.d.comb += [low32.eq(self.request.payload.tag[:32]), product.eq(low32 * SKETCH_MULTIPLIER)]
        stage = self._pipeline(m, [self.request.payload.tag[:cfg.sketch_bits],
                                   product[32 - cfg.sketch_bits:32]])
        i0, i1 = stage.extra
        word, match, free, request = stage.word, stage.match, stage.free, stage.request
        cur = word.ways
        sk = word.sketch
        lowest = lambda bits, name: self._lowest(m, bits, name)

        hit = match.any()
        hit_way = lowest(match, "hit_way")
        free_way = lowest(free, "free_way")
        # Victim: the lowest-numbered way of least count.
        running_min = cur[0].count
        for w in range(1, ways):       # named steps: reusing the expression would double it
            step = Signal(cfg.count_bits, name=f"min_upto{w}")
            m.d.comb += step.eq(Mux(cur[w].count < running_min, cur[w].count, running_min))
            running_min = step
        min_count = Signal(cfg.count_bits)
        m.d.comb += min_count.eq(running_min)
        at_min = Signal(ways)
        for w in range(ways):
            m.d.comb += at_min[w].eq(cur[w].count == min_count)
        victim_way = lowest(at_min, "victim_way")

        def select(values, select_bits):
            """AND-OR of ``values`` under one-hot ``select_bits`` (no wide index mux)."""
            out = 0
            for v, bit in zip(values, select_bits):
                out = out | Mux(bit, v, 0)
            return out

        # Sketch estimate of the missing key and its conservative update. Every read and
        # write below is a loop over ways or counters: variable-index writes would make the
        # generated Verilog grow with the product of ways, counters and banks.
        at0 = [i0 == c for c in range(counters)]
        at1 = [i1 == c for c in range(counters)]
        e0 = Signal(cfg.count_bits)
        e1 = Signal(cfg.count_bits)
        m.d.comb += [e0.eq(select([sk[0][c] for c in range(counters)], at0)),
                     e1.eq(select([sk[1][c] for c in range(counters)], at1))]
        est = Signal(cfg.count_bits)
        bumped = Signal(cfg.count_bits)
        m.d.comb += [est.eq(Mux(e0 < e1, e0, e1)),
                     bumped.eq(Mux(est == cmax, cmax, est + 1))]
        hit_count = Signal(cfg.count_bits)
        m.d.comb += hit_count.eq(select([cur[w].count for w in range(ways)], match))
        admit = Signal()
        m.d.comb += admit.eq(free.any() | (bumped > min_count))
        insert_way = Signal.like(victim_way)
        m.d.comb += insert_way.eq(Mux(free.any(), free_way, victim_way))

        new = Signal(set_layout(cfg))
        tag_ways = Signal(ways)
        m.d.comb += new.eq(word)
        for w in range(ways):
            with m.If(match[w] & (cur[w].count != cmax)):           # hit: count + 1
                m.d.comb += new.ways[w].count.eq(cur[w].count + 1)
            with m.If(~hit & admit & (insert_way == w)):            # miss, admitted
                m.d.comb += [new.ways[w].valid.eq(1), new.ways[w].count.eq(bumped),
                             new.ways[w].tag.eq(request.tag), tag_ways[w].eq(1)]
        for r, (at, e) in enumerate(((at0, e0), (at1, e1))):
            for c in range(counters):
                with m.If(~hit & (e == est) & at[c]):
                    m.d.comb += new.sketch[r][c].eq(bumped)

        resp_hit = Signal()
        resp_way = Signal.like(hit_way)
        with m.If(request.learn):
            m.d.comb += [resp_hit.eq(hit), resp_way.eq(Mux(hit, hit_way, insert_way))]
        with m.Else():
            popular = hit & (hit_count >= Const(cfg.popular_min_count, cfg.count_bits))
            m.d.comb += [resp_hit.eq(popular), resp_way.eq(Mux(popular, hit_way, 0))]
        # Never repeated: the repeat marker combines nothing under lfu (every access counts).
        self._write_and_respond(m, stage, new, tag_ways, resp_hit, resp_way, resp_hit)
        return m

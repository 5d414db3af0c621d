"""Pipelined Feistel hash of lookup keys (docs/spec.md section 3)."""

from amaranth import Signal, Module, Cat, Const
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .config import EALConfig, FEISTEL_ROUND_KEYS, FEISTEL_MULTIPLIERS
from .layouts import lookup_beat, hashed_lane

__all__ = ["FeistelHash", "feistel_round_widths"]


def feistel_round_widths(key_bits):
    """Widths (hi, lo) of the Feistel halves before each round; they swap every round."""
    lo = key_bits // 2
    return key_bits - lo, lo


class FeistelHash(wiring.Component):
    """Hashes ``lanes`` keys per cycle, one pipeline stage per Feistel round.

    Ports
    -----
    i : In(stream of ``lookup_beat``)
        Keys to hash; lane ``valid`` bits pass through.
    o : Out(stream of ``lanes`` x ``hashed_lane``)
        The (bank, set, tag) fields of each lane's hash, ``hash_rounds`` cycles later.
    busy : Out(1)
        A beat is somewhere in the pipeline.

    The whole pipeline advances when its last stage is empty or drained, so back-pressure
    on ``o`` stalls it without losing a beat; the latency is exactly ``hash_rounds`` cycles
    when ``o`` is ready.
    """

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(lookup_beat(cfg))),
            "o": Out(stream.Signature(data.ArrayLayout(hashed_lane(cfg), cfg.lanes))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        rounds = cfg.hash_rounds
        stage_valid = [Signal(name=f"stage{k}_valid") for k in range(rounds)]
        advance = Signal()
        m.d.comb += [
            advance.eq(~stage_valid[-1] | self.o.ready),
            self.i.ready.eq(advance),
            self.o.valid.eq(stage_valid[-1]),
            self.busy.eq(Cat(*stage_valid).any()),
        ]
        with m.If(advance):
            m.d.sync += stage_valid[0].eq(self.i.valid)
            for k in range(1, rounds):
                m.d.sync += stage_valid[k].eq(stage_valid[k - 1])

        for lane in range(cfg.lanes):
            hi_w, lo_w = feistel_round_widths(cfg.key_bits)
            key = self.i.payload[lane].key
            hi, lo, lane_valid = key[lo_w:], key[:lo_w], self.i.payload[lane].valid
            for k in range(rounds):
                # F_k(lo): top hi_w bits of ((lo ^ K_k) * M_k) mod 2^32.
                round_key = Const(FEISTEL_ROUND_KEYS[k] & ((1 << lo_w) - 1), lo_w)
                product = ((lo ^ round_key) * FEISTEL_MULTIPLIERS[k])[:32]
                mixed = product[32 - hi_w:32]
                next_hi = Signal(lo_w, name=f"lane{lane}_r{k}_hi")
                next_lo = Signal(hi_w, name=f"lane{lane}_r{k}_lo")
                next_valid = Signal(name=f"lane{lane}_r{k}_valid")
                with m.If(advance):
                    m.d.sync += [next_hi.eq(lo), next_lo.eq(hi ^ mixed),
                                 next_valid.eq(lane_valid)]
                hi, lo, lane_valid = next_hi, next_lo, next_valid
                hi_w, lo_w = lo_w, hi_w
            h = Cat(lo, hi)
            out = self.o.payload[lane]
            set_lo = cfg.bank_bits
            tag_lo = cfg.bank_bits + cfg.set_bits
            m.d.comb += [
                out.valid.eq(lane_valid),
                out.bank.eq(h[:cfg.bank_bits] if cfg.bank_bits else 0),
                out.set.eq(h[set_lo:tag_lo] if cfg.set_bits else 0),
                out.tag.eq(h[tag_lo:]),
            ]
        return m

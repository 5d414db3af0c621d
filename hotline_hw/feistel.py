"""Pipelined Feistel hash of lookup keys (docs/spec.md section 3)."""

from amaranth import Signal, Module, Cat, Const
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from hotline_spec.config import EALConfig, FEISTEL_ROUND_KEYS, FEISTEL_MULTIPLIERS
from .layouts import lookup_beat, hashed_lane

__all__ = ["FeistelHash", "feistel_round_widths"]


def feistel_round_widths(key_bits):
    """Widths (hi, lo) of the Feistel halves before each round; they swap every round."""
    lo = key_bits // 2
    return key_bits - lo, lo


class FeistelHash(wiring.Component):
    """Hashes ``lanes`` keys per cycle: an input stage, then two pipeline stages per
    Feistel round.

    Parameters
    ----------
    cfg : EALConfig
        Lanes, key width and ``hash_rounds``.

    Attributes
    ----------
    i : In(stream of ``lookup_beat``)
        Keys to hash; lane ``valid`` bits pass through.
    o : Out(stream of ``lanes`` x ``hashed_lane``)
        The (bank, set, tag) fields of each lane's hash, ``latency`` cycles later.
    busy : Out(1)
        A beat is somewhere in the pipeline.
    latency : int
        ``1 + STAGES_PER_ROUND * hash_rounds``: cycles from a key to its hash.

    A round's multiply by its 32-bit constant is split at its 16-bit halves: the first
    stage forms the two partial products (one DSP multiplier each, their results
    registered), the second adds them and XORs the top bits into the other half. One
    stage per round put a DSP multiply and a 32-bit add in one cycle and set the engine's
    clock at 84 MHz on an ECP5 (docs/benchmarks.md).

    Every multiplier's operand comes straight from a register: the round key XOR that
    forms it (``lo ^ K``) is done a stage earlier, by the input stage for round 0 and by
    the previous round's second stage (one more input to the XOR it does anyway) for the
    others. With the XOR in front of the DSP, a round's result register -> XOR -> DSP
    multiply was the 2-lane engine's critical path (98.96 MHz).

    The whole pipeline advances when its last stage is empty or drained, so back-pressure
    on ``o`` stalls it without losing a beat; the latency is exactly ``latency`` cycles
    when ``o`` is ready.
    """

    #: Pipeline stages per Feistel round.
    STAGES_PER_ROUND = 2

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        self.latency = 1 + self.STAGES_PER_ROUND * cfg.hash_rounds
        super().__init__({
            "i": In(stream.Signature(lookup_beat(cfg))),
            "o": Out(stream.Signature(data.ArrayLayout(hashed_lane(cfg), cfg.lanes))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        rounds = cfg.hash_rounds
        stage_valid = [Signal(name=f"stage{k}_valid") for k in range(self.latency)]
        advance = Signal()
        m.d.comb += [
            advance.eq(~stage_valid[-1] | self.o.ready),
            self.i.ready.eq(advance),
            self.o.valid.eq(stage_valid[-1]),
            self.busy.eq(Cat(*stage_valid).any()),
        ]
        with m.If(advance):
            m.d.sync += stage_valid[0].eq(self.i.valid)
            for k in range(1, self.latency):
                m.d.sync += stage_valid[k].eq(stage_valid[k - 1])

        def register(value, name):
            reg = Signal.like(value, name=name)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        def round_key(k, width):
            return Const(FEISTEL_ROUND_KEYS[k] & ((1 << width) - 1), width)

        for lane in range(cfg.lanes):
            hi_w, lo_w = feistel_round_widths(cfg.key_bits)
            key = self.i.payload[lane].key
            name = f"lane{lane}_in"
            hi, lo = register(key[lo_w:], f"{name}_hi"), register(key[:lo_w], f"{name}_lo")
            lane_valid = register(self.i.payload[lane].valid, f"{name}_valid")
            x = register(key[:lo_w] ^ round_key(0, lo_w), f"{name}_x")
            for k in range(rounds):
                # F_k(lo): top hi_w bits of ((lo ^ K_k) * M_k) mod 2^32, with
                # M_k = M_hi * 2^16 + M_lo: x * M_lo + ((x * M_hi) mod 2^16) * 2^16;
                # x = lo ^ K_k is a register.
                multiplier = FEISTEL_MULTIPLIERS[k]
                name = f"lane{lane}_r{k}"
                low_part = register((x * (multiplier & 0xFFFF))[:32], f"{name}_low_part")
                high_part = register((x * (multiplier >> 16))[:16], f"{name}_high_part")
                hi, lo, lane_valid = (register(hi, f"{name}_hi_in"), register(lo, f"{name}_lo_in"),
                                      register(lane_valid, f"{name}_valid_in"))
                product = (low_part + (high_part << 16))[:32]
                mixed = product[32 - hi_w:32]
                new_lo = hi ^ mixed
                if k + 1 < rounds:  # the next round's multiplier operand
                    x = register(new_lo ^ round_key(k + 1, hi_w), f"{name}_x_next")
                hi, lo, lane_valid = (register(lo, f"{name}_hi"), register(new_lo, f"{name}_lo"),
                                      register(lane_valid, f"{name}_valid"))
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

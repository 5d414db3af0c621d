"""The input classifier (docs/spec.md section 6) over one beat of lookups."""

from amaranth import Signal, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hotline_spec.config import FragmenterConfig

__all__ = ["InputClassifier"]


class InputClassifier(wiring.Component):
    """Combinational: which lanes of a beat end an input, and whether that input is popular.

    An input is ``n_tables`` consecutive valid lookups (holes do not count); it is popular iff
    all of them hit. The state between beats is the position within the current input
    (``pos_in``) and whether its lookups so far all hit (``acc_in``).

    Ports
    -----
    n_tables : In
        Lookups per input, 1..``max_tables``.
    pos_in, acc_in : In
        State before lane 0.
    valid, hit : In(lanes)
        Per lane: a lookup is present; it hit.
    last, popular : Out(lanes)
        Per lane: the lookup is the last of its input; that input is popular (when ``last``).
    pos_out, acc_out : Out(lanes x ...)
        State after each lane (the next state is that of the last lane taken).
    """

    def __init__(self, fcfg: FragmenterConfig):
        self.fcfg = fcfg
        lanes = fcfg.eal.lanes
        self.pos_bits = max(1, fcfg.eal.table_bits)
        super().__init__({
            "n_tables": In(fcfg.eal.table_bits + 1),
            "pos_in": In(self.pos_bits), "acc_in": In(1),
            "valid": In(lanes), "hit": In(lanes),
            "last": Out(lanes), "popular": Out(lanes),
        })
        self.pos_out = [Signal(self.pos_bits, name=f"pos_out{l}") for l in range(lanes)]
        self.acc_out = [Signal(name=f"acc_out{l}") for l in range(lanes)]

    def elaborate(self, platform):
        m = Module()
        pos, acc = self.pos_in, self.acc_in
        for l in range(self.fcfg.eal.lanes):
            # The lookups so far of this lookup's input all hit, and this one too.
            all_hit = self.hit[l] & ((pos == 0) | acc)
            last = self.valid[l] & (pos == self.n_tables - 1)
            m.d.comb += [self.last[l].eq(last), self.popular[l].eq(all_hit)]
            m.d.comb += [
                self.pos_out[l].eq(Mux(self.valid[l], Mux(last, 0, pos + 1), pos)),
                self.acc_out[l].eq(Mux(self.valid[l], all_hit, acc)),
            ]
            pos, acc = self.pos_out[l], self.acc_out[l]
        return m

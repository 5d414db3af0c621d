"""The 64-bit event counters, built for clock rather than for a one-cycle view."""

from amaranth import Signal, Module, Cat
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["EventCounter"]


class EventCounter(wiring.Component):
    """A 64-bit counter adding ``increment`` every cycle, as two 32-bit halves.

    The increment is registered and the carry out of the low half is added into the high
    half one cycle later, so no 64-bit carry chain sits in one cycle. The value therefore
    lags the events by one or two cycles; the host reads HI, LO, HI and retries when HI
    changed (``docs/registers.md``), which stays correct.

    Attributes
    ----------
    increment : In(width)
    reset : In(1)
        Zero the counter (events of the same cycle are dropped).
    value : Out(64)
    """

    def __init__(self, width):
        super().__init__({"increment": In(width), "reset": In(1), "value": Out(64)})

    def elaborate(self, platform):
        m = Module()
        pending = Signal.like(self.increment)
        low = Signal(33)          # bit 32: the carry, added into `high` next cycle
        high = Signal(32)
        m.d.comb += self.value.eq(Cat(low[:32], high))
        with m.If(self.reset):
            m.d.sync += [pending.eq(0), low.eq(0), high.eq(0)]
        with m.Else():
            m.d.sync += [pending.eq(self.increment), low.eq(low[:32] + pending),
                         high.eq(high + low[32])]
        return m

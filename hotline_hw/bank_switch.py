"""The bank switch: hashed lookups from the lanes into the banks' request queues.

Part of the lookup engine (docs/architecture.md, "Lookup engine"); keeps docs/spec.md
section 8's rule that every bank sees its lookups in stream order.
"""

from amaranth import Signal, Module, Cat, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from hotline_spec.config import EALConfig
from .layouts import marked_lane, bank_request, beat_record
from .logic import (or_tree, one_hot_halves, bit_columns, select_one_hot, wanted_by_bank,
                    oldest_per_bank)

__all__ = ["BankSwitch"]


class BankSwitch(wiring.Component):
    """Spreads hashed beats over the banks, each bank's lookups in stream order.

    Parameters
    ----------
    cfg : EALConfig
        ``lanes``, ``banks`` and ``dispatch_beats`` (how many beats the switch holds).

    Attributes
    ----------
    beats : In(stream of ``lanes`` x ``marked_lane``)
        Hashed lookup beats; holes (``valid = 0``) and repeats go nowhere.
    records : Out(stream of ``beat_record``)
        One record per beat taken from ``beats``, in the same cycle: where each lane goes,
        for the result release. A beat is taken only when its record is.
    requests : Out(stream of ``bank_request``) x ``banks``
        Bank ``b``'s next lookup. Each bank's lookups leave in stream order.
    busy : Out(1)
        A beat is held in the switch.

    The switch holds up to ``dispatch_beats`` beats, oldest first. Every cycle each bank
    takes the oldest lookup held for it (a one-hot priority encoder over the held lanes and
    an AND-OR multiplexer: ``banks x dispatch_beats x lanes`` crosspoints, bilinear in lanes
    and banks, no held lane compared with another). A bank whose oldest lookup sits in the oldest beat
    does not wait for the other banks of that beat, and a bank with nothing there takes its
    lookup from a younger beat, so one busy bank does not hold up the others. The oldest
    beat leaves in the cycle after its last lookup has gone (decided from registers, off
    the arbitration's path); a new beat may enter in that cycle, so two held beats keep up
    with a beat per cycle (one held beat takes a beat every other cycle).
    """

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "beats": In(stream.Signature(data.ArrayLayout(marked_lane(cfg), cfg.lanes))),
            "records": Out(stream.Signature(beat_record(cfg))),
            "requests": Out(stream.Signature(bank_request(cfg))).array(cfg.banks),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        lanes, depth, n_banks = cfg.lanes, cfg.dispatch_beats, cfg.banks
        # A held lane keeps its bank as the two halves of its one-hot code, decoded as it
        # enters, so the per-cycle arbitration starts with one AND per bank and lane.
        entering = [one_hot_halves(self.beats.payload[l].bank, n_banks) for l in range(lanes)]
        held = data.StructLayout({"pending": 1, "bank_low": len(entering[0][0]),
                                  "bank_high": len(entering[0][1]),
                                  "set": max(1, cfg.set_bits), "tag": cfg.tag_bits,
                                  "repeated": 1})
        slots = [[Signal(held, name=f"beat{s}_lane{l}") for l in range(lanes)]
                 for s in range(depth)]
        count = Signal(range(depth + 1))
        held_lanes = [e for beat in slots for e in beat]          # oldest first
        n_held = len(held_lanes)
        # Bit j of every held lane's request (set, tag, repeated), oldest first.
        columns = bit_columns(m, [Cat(e.set, e.tag, e.repeated) for e in held_lanes],
                              bank_request(cfg).size, "request")

        # Per bank: the oldest lane with a lookup pending for it, whose request an AND-OR
        # multiplexer selects.
        wanted = wanted_by_bank(m, [e.bank_low for e in held_lanes],
                                [e.bank_high for e in held_lanes],
                                [e.pending for e in held_lanes], n_banks, "bank")
        grants = []
        for request, (any_, oldest) in zip(self.requests, oldest_per_bank(m, wanted, "bank")):
            m.d.comb += [request.valid.eq(any_),
                         request.payload.eq(select_one_hot(oldest, columns))]
            grants.append(oldest & request.ready.replicate(n_held))
        sent = Signal(n_held)
        m.d.comb += sent.eq(or_tree(grants))
        still = Signal(n_held)
        m.d.comb += still.eq(Cat(e.pending for e in held_lanes) & ~sent)

        # The oldest beat leaves in the cycle after its last lookup was sent: decided from
        # registers alone, so this cycle's grants do not reach the shift of every held lane.
        # One new beat per cycle enters behind the others.
        shift = Signal()
        after_shift = Signal(range(depth + 1))
        take = Signal()
        m.d.comb += [
            shift.eq((count != 0) & ~Cat(e.pending for e in slots[0]).any()),
            after_shift.eq(count - shift),
            self.beats.ready.eq(((count < depth) | shift) & self.records.ready),
            self.records.valid.eq(self.beats.valid & ((count < depth) | shift)),
            take.eq(self.beats.valid & self.beats.ready),
            self.busy.eq(count != 0),
        ]
        for l in range(lanes):
            src = self.beats.payload[l]
            rec = self.records.payload[l]
            m.d.comb += [rec.valid.eq(src.valid), rec.bank.eq(src.bank), rec.set.eq(src.set),
                         rec.repeat.eq(src.repeat), rec.first.eq(src.first)]
        for s in range(depth):
            for l in range(lanes):
                e = slots[s][l]
                with m.If(take & (after_shift == s)):
                    src = self.beats.payload[l]
                    m.d.sync += [e.pending.eq(src.valid & ~src.repeat),
                                 e.bank_low.eq(entering[l][0]), e.bank_high.eq(entering[l][1]),
                                 e.set.eq(src.set), e.tag.eq(src.tag),
                                 e.repeated.eq(src.repeated)]
                with m.Elif(shift):
                    if s + 1 < depth:
                        younger = slots[s + 1][l]
                        m.d.sync += [e.pending.eq(still[(s + 1) * lanes + l]),
                                     e.bank_low.eq(younger.bank_low),
                                     e.bank_high.eq(younger.bank_high),
                                     e.set.eq(younger.set), e.tag.eq(younger.tag),
                                     e.repeated.eq(younger.repeated)]
                    else:
                        m.d.sync += e.pending.eq(0)
                with m.Else():
                    m.d.sync += e.pending.eq(still[s * lanes + l])
        m.d.sync += count.eq(after_shift + take)
        return m

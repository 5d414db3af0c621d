"""The result release: bank responses back into result beats, in stream order."""

from amaranth import Signal, Module, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .config import EALConfig
from .layouts import beat_record, bank_response, result_beat
from .logic import or_tree

__all__ = ["ResultRelease"]


class ResultRelease(wiring.Component):
    """Assembles each beat's results from the banks' responses and releases beats in order.

    Parameters
    ----------
    cfg : EALConfig
        ``lanes``, ``banks`` and the geometry that forms a slot.

    Attributes
    ----------
    records : In(stream of ``beat_record``)
        The beats in flight, oldest first, as the switch took them: per lane ``valid``,
        bank and set. The oldest record is taken once all its lanes are answered.
    responses : In(stream of ``bank_response``) x ``banks``
        Each bank's answers in the order the bank received its lookups.
    results : Out(stream of ``result_beat``)
        One beat per record, in order: ``valid`` copied, ``hit``, and the slot
        ``(bank * sets + set) * ways + way`` (zero for holes), from a register.
    busy : Out(1)
        A result beat is waiting in the output register.

    No sequence numbers are needed: a bank answers its lookups in stream order and beats
    are released in stream order, so the answer a lane of the oldest beat needs is always
    the head of its bank's response queue, once every lower lane of that beat sent to the
    same bank has taken its own. Each cycle every such lane takes its answer (one per bank
    per cycle); the beat moves to the output register in the cycle its last lane is
    answered. Cost: a ``banks``-to-1 selection of a response per lane and a lane-by-lane
    bank comparison within one beat, no storage per beat beyond the output register.
    """

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "records": In(stream.Signature(beat_record(cfg))),
            "responses": In(stream.Signature(bank_response(cfg))).array(cfg.banks),
            "results": Out(stream.Signature(result_beat(cfg))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        lanes, n_banks = cfg.lanes, cfg.banks
        record = self.records.payload
        response_bits = bank_response(cfg).size
        answered = Signal(lanes)                       # lanes of the oldest beat answered
        kept = Signal(data.ArrayLayout(bank_response(cfg), lanes))
        head_valid = Cat(r.valid for r in self.responses)
        head_data = Cat(r.payload for r in self.responses)

        waiting = Signal(lanes)
        m.d.comb += waiting.eq(Cat(self.records.valid & record[l].valid & ~answered[l]
                                   for l in range(lanes)))
        takes = Signal(lanes)
        answers = []
        for l in range(lanes):
            bank = record[l].bank if n_banks > 1 else Const(0, 1)
            # An earlier lane of this beat still waiting on the same bank goes first.
            ahead = [waiting[k] & (record[k].bank == record[l].bank) for k in range(l)]
            first = ~Cat(*ahead).any() if ahead else Const(1, 1)
            answer = Signal(bank_response(cfg), name=f"lane{l}_answer")
            m.d.comb += [
                answer.eq(head_data.word_select(bank, response_bits)),
                takes[l].eq(waiting[l] & first & head_valid.bit_select(bank, 1)),
            ]
            answers.append(answer)
        # Each bank hands on at most one answer per cycle: the lane that took it.
        per_lane_pops = []
        for l in range(lanes):
            pop = Signal(n_banks, name=f"lane{l}_pops")
            m.d.comb += pop.eq(Mux(takes[l], Const(1, n_banks) << record[l].bank
                                   if n_banks > 1 else 1, 0))
            per_lane_pops.append(pop)
        pops = Signal(n_banks)
        m.d.comb += pops.eq(or_tree(per_lane_pops))
        for b, r in enumerate(self.responses):
            m.d.comb += r.ready.eq(pops[b])

        # The beat is complete when nothing of it waits after this cycle's answers.
        complete = Signal()
        out_free = Signal()
        release = Signal()
        m.d.comb += [
            complete.eq(self.records.valid & ~(waiting & ~takes).any()),
            out_free.eq(~self.results.valid | self.results.ready),
            release.eq(complete & out_free),
            self.records.ready.eq(release),
            self.busy.eq(self.results.valid),
        ]
        for l in range(lanes):
            with m.If(takes[l]):
                m.d.sync += kept[l].eq(answers[l])
        with m.If(release):
            m.d.sync += answered.eq(0)
        with m.Else():
            m.d.sync += answered.eq(answered | takes)

        with m.If(self.results.ready):
            m.d.sync += self.results.valid.eq(0)
        with m.If(release):
            m.d.sync += self.results.valid.eq(1)
            for l in range(lanes):
                lane = record[l]
                now = Mux(takes[l], answers[l].as_value(), kept[l].as_value())
                answer = Signal(bank_response(cfg), name=f"lane{l}_final")
                m.d.comb += answer.eq(now)
                out = self.results.payload[l]
                m.d.sync += [
                    out.valid.eq(lane.valid),
                    out.hit.eq(lane.valid & answer.hit),
                    # Holes read as all-zero lanes.
                    out.slot.eq(Mux(lane.valid,
                                    (lane.bank * cfg.sets + lane.set) * cfg.ways + answer.way,
                                    0)),
                ]
        return m

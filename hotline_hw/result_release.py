"""The result release: bank responses back into result beats, in stream order."""

from amaranth import Signal, Module, Array, Cat, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from hotline_spec.config import EALConfig
from .layouts import beat_record, bank_response, result_beat
from .logic import (or_tree, one_hot_halves, one_hot_from_halves, bit_columns, select_one_hot,
                    wanted_by_bank, oldest_per_bank)

__all__ = ["ResultRelease"]


class ResultRelease(wiring.Component):
    """Assembles each beat's results from the banks' responses and releases beats in order.

    Parameters
    ----------
    cfg : EALConfig
        ``lanes``, ``banks``, ``release_beats`` (beats answered at once) and the geometry
        that forms a slot.

    Attributes
    ----------
    records : In(stream of ``beat_record``)
        The beats in flight, oldest first, as the switch took them: per lane ``valid``,
        bank, set, ``repeat`` and ``first``. A repeat takes the answer of lane ``first``.
    responses : In(stream of ``bank_response``) x ``banks``
        Each bank's answers in the order the bank received its lookups.
    results : Out(stream of ``result_beat``)
        One beat per record, in order: ``valid`` copied, ``hit``, and the slot
        ``(bank * sets + set) * ways + way`` (zero for holes), from a register.
    busy : Out(1)
        A beat is held (being answered, or waiting in the output register).

    No sequence numbers are needed: a bank answers its lookups in stream order, so the
    head of its response queue always belongs to its oldest lookup not yet answered. The
    release holds up to ``release_beats`` beats, oldest first, and every cycle each bank
    hands its head answer to the oldest held lane still waiting on that bank (the mirror
    of the switch: a one-hot priority encoder per bank over the held lanes, bilinear in
    lanes and banks). A beat in which two lanes share a bank needs two cycles of that bank,
    but the younger beats take their answers meanwhile, so the release keeps up with the
    banks instead of losing a cycle per shared bank. The oldest beat moves to the output
    register in the cycle after its last lane was answered (decided from registers, off
    the arbitration's path), and a new record may enter in that cycle.
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
        lanes, depth, n_banks = cfg.lanes, cfg.release_beats, cfg.banks
        lane_record = beat_record(cfg).elem_shape
        # A held lane keeps its bank as the two halves of its one-hot code (decoded as it
        # enters) and ``waiting``: it went to a bank (not a hole, not a repeat) and has no
        # answer yet.
        entering = [one_hot_halves(self.records.payload[l].bank, n_banks) for l in range(lanes)]
        held = data.StructLayout({"lane": lane_record, "bank_low": len(entering[0][0]),
                                  "bank_high": len(entering[0][1]), "waiting": 1,
                                  "answer": bank_response(cfg)})
        slots = [[Signal(held, name=f"beat{s}_lane{l}") for l in range(lanes)]
                 for s in range(depth)]
        count = Signal(range(depth + 1))
        held_lanes = [e for beat in slots for e in beat]          # oldest first
        n_held = len(held_lanes)
        columns = bit_columns(m, [r.payload.as_value() for r in self.responses],
                              bank_response(cfg).size, "answer")

        # Each held lane's bank, one-hot (to select its answer), and per bank the lanes
        # waiting on it.
        banks_of = []
        for i, e in enumerate(held_lanes):
            bank = Signal(n_banks, name=f"held{i}_bank")
            m.d.comb += bank.eq(one_hot_from_halves(e.bank_low, e.bank_high, n_banks))
            banks_of.append(bank)
        wanted = wanted_by_bank(m, [e.bank_low for e in held_lanes],
                                [e.bank_high for e in held_lanes],
                                [e.waiting for e in held_lanes], n_banks, "bank")
        # Each bank hands its head answer to the oldest lane waiting on it.
        grants = []
        for response, (any_, oldest) in zip(self.responses, oldest_per_bank(m, wanted, "bank")):
            m.d.comb += response.ready.eq(any_)
            grants.append(oldest & response.valid.replicate(n_held))
        takes = Signal(n_held)
        m.d.comb += takes.eq(or_tree(grants))

        # After this cycle's answers: each held lane's state.
        waiting_now, answer_now = [], []
        for i, e in enumerate(held_lanes):
            waiting = Signal(name=f"held{i}_waiting_now")
            answer = Signal(bank_response(cfg), name=f"held{i}_answer_now")
            m.d.comb += [
                waiting.eq(e.waiting & ~takes[i]),
                answer.eq(Mux(takes[i], select_one_hot(banks_of[i], columns),
                              e.answer.as_value())),
            ]
            waiting_now.append(waiting)
            answer_now.append(answer)

        # The oldest beat moves to the output register in the cycle after its last answer
        # came: decided from registers, so this cycle's answers do not reach the shift of
        # every held lane. A new record may enter in that cycle.
        complete = Signal()
        out_free = Signal()
        release = Signal()
        after_release = Signal(range(depth + 1))
        take = Signal()
        oldest_beat = slots[0]
        m.d.comb += [
            complete.eq((count != 0) & ~Cat(e.waiting for e in oldest_beat).any()),
            out_free.eq(~self.results.valid | self.results.ready),
            release.eq(complete & out_free),
            after_release.eq(count - release),
            self.records.ready.eq((count < depth) | release),
            take.eq(self.records.valid & self.records.ready),
            self.busy.eq((count != 0) | self.results.valid),
        ]
        with m.If(self.results.ready):
            m.d.sync += self.results.valid.eq(0)
        with m.If(release):
            m.d.sync += self.results.valid.eq(1)
            for l, e in enumerate(oldest_beat):
                lane = e.lane
                # A repeat takes its run's first answer (same bank and set, so the same
                # slot base): ``repeat_hit`` and the same way.
                answers = [x.answer for x in oldest_beat]
                first = Array(answers[:l + 1])[lane.first] if l else answers[0]
                hit = Mux(lane.repeat, first.repeat_hit, e.answer.hit)
                way = Mux(lane.repeat, first.way, e.answer.way)
                out = self.results.payload[l]
                m.d.sync += [
                    out.valid.eq(lane.valid),
                    out.hit.eq(lane.valid & hit),
                    # Holes read as all-zero lanes.
                    out.slot.eq(Mux(lane.valid,
                                    (lane.bank * cfg.sets + lane.set) * cfg.ways + way, 0)),
                ]

        for s in range(depth):
            for l in range(lanes):
                e = slots[s][l]
                with m.If(take & (after_release == s)):
                    src = self.records.payload[l]
                    m.d.sync += [e.lane.eq(src), e.waiting.eq(src.valid & ~src.repeat),
                                 e.bank_low.eq(entering[l][0]), e.bank_high.eq(entering[l][1])]
                with m.Elif(release):
                    if s + 1 < depth:
                        i = (s + 1) * lanes + l
                        younger = slots[s + 1][l]
                        m.d.sync += [e.lane.eq(younger.lane), e.bank_low.eq(younger.bank_low),
                                     e.bank_high.eq(younger.bank_high),
                                     e.waiting.eq(waiting_now[i]), e.answer.eq(answer_now[i])]
                    else:       # emptied: a stale lane must not claim answers
                        m.d.sync += [e.lane.valid.eq(0), e.waiting.eq(0)]
                with m.Else():
                    i = s * lanes + l
                    m.d.sync += [e.waiting.eq(waiting_now[i]), e.answer.eq(answer_now[i])]
        m.d.sync += count.eq(after_release + take)
        return m

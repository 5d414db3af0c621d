"""The lookup engine: lanes of hashed lookups spread over EAL banks, results in order.

Implements docs/spec.md sections 4 and 8; the micro-architecture is in docs/architecture.md.
"""

from amaranth import Signal, Module, Array, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .config import EALConfig
from .layouts import lookup_beat, result_beat, dump_record, hashed_lane
from .feistel import FeistelHash
from .lfu_tag_bank import LfuTagBank
from .tag_bank import TagBank

__all__ = ["LookupEngine"]


def _or_all(values):
    """OR of many values as a balanced tree: a linear chain makes elaboration quadratic."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class LookupEngine(wiring.Component):
    """Embedding Access Logger with ``lanes`` lookup engines and ``banks`` tag-store banks.

    Ports
    -----
    lookups : In(stream of ``lookup_beat``)
        Up to ``lanes`` keys per beat, lane 0 first; lanes with ``valid = 0`` are holes.
    results : Out(stream of ``result_beat``)
        One beat per lookup beat, in order: per lane ``valid`` (copied), ``hit`` and ``slot``.
    dump : Out(stream of ``dump_record``)
        After ``start_dump``: every set of every bank, set-major then bank.
    learn, popular_max_rrpv : In
        Learn (1) or frozen (0) mode and the frozen-mode popularity threshold; change them
        only while ``busy`` is low.
    clear, start_dump : In(1)
        One-cycle command pulses, taken only while ``busy`` is low (ignored otherwise).
    busy : Out(1)
        A lookup is in flight, or a clear or dump runs (also the clear that follows
        reset: ``sets`` cycles).

    Micro-architecture: keys are hashed in a ``hash_rounds``-stage pipeline, then enter a
    reorder window of ``window`` beats. Each cycle every bank is granted the oldest pending
    lookup that targets it (age = beat order, then lane), so each bank sees its lookups in
    stream order and the final tag store equals sequential processing. Banks answer one
    cycle later into the window; the oldest beat leaves as soon as all its lanes are done.
    """

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "lookups": In(stream.Signature(lookup_beat(cfg))),
            "results": Out(stream.Signature(result_beat(cfg))),
            "dump": Out(stream.Signature(dump_record(cfg))),
            "learn": In(1),
            "popular_max_rrpv": In(2, init=cfg.popular_max_rrpv),
            "clear": In(1),
            "start_dump": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        lanes, depth, n_banks = cfg.lanes, cfg.window, cfg.banks
        n_entries = depth * lanes
        id_bits = max(1, (n_entries - 1).bit_length())

        m.submodules.hash = hasher = FeistelHash(cfg)
        banks = []
        for b in range(n_banks):
            bank = (TagBank if cfg.policy == "srrip" else LfuTagBank)(cfg, id_bits)
            m.submodules[f"bank{b}"] = bank
            m.d.comb += [bank.learn.eq(self.learn), bank.popular_max_rrpv.eq(self.popular_max_rrpv)]
            banks.append(bank)

        # ---- reorder window: `depth` slots (beats) of `lanes` entries, a circular buffer ----
        slot_bits = max(1, (depth - 1).bit_length())
        head = Signal(slot_bits)
        count = Signal(range(depth + 1))
        entry = data.StructLayout({"hashed": hashed_lane(cfg), "pending": 1, "done": 1,
                                   "hit": 1, "way": max(1, cfg.way_bits)})
        window = [[Signal(entry, name=f"w{p}_l{l}") for l in range(lanes)] for p in range(depth)]

        # Age of each slot: (p - head) mod depth; smaller is older.
        age = []
        for p in range(depth):
            a = Signal(range(depth), name=f"age{p}")
            with m.If(head <= p):
                m.d.comb += a.eq(p - head)
            with m.Else():
                m.d.comb += a.eq(p + depth - head)
            age.append(a)

        # Grant: an entry is granted when it is pending and no older pending entry targets
        # its bank. Older = older slot, or same slot and lower lane.
        flat = [(p, l) for p in range(depth) for l in range(lanes)]
        same_bank = {}  # one comparator per unordered pair of entries
        for i, (p, l) in enumerate(flat):
            for (q, k) in flat[i + 1:]:
                eq = Signal(name=f"same_bank_w{p}_l{l}_w{q}_l{k}")
                m.d.comb += eq.eq(window[p][l].hashed.bank == window[q][k].hashed.bank)
                same_bank[p, l, q, k] = same_bank[q, k, p, l] = eq
        granted = {}
        for (p, l) in flat:
            e = window[p][l]
            blockers = []
            for (q, k) in flat:
                if (q, k) == (p, l):
                    continue
                o = window[q][k]
                if q == p:
                    if k > l:
                        continue
                    older = Const(1)
                else:
                    older = age[q] < age[p]
                blockers.append(o.pending & same_bank[p, l, q, k] & older)
            g = Signal(name=f"grant_w{p}_l{l}")
            m.d.comb += g.eq(e.pending & ~Cat(*blockers).any() if blockers else e.pending)
            granted[p, l] = g

        # Each bank takes the one granted entry that targets it: the grants are one-hot per
        # bank, so an AND-OR selection replaces a long priority-mux chain.
        for b, bank in enumerate(banks):
            picks = []
            for (p, l) in flat:
                e = window[p][l]
                sel = Signal(name=f"pick_b{b}_w{p}_l{l}")
                m.d.comb += sel.eq(granted[p, l] & (e.hashed.bank == b) if n_banks > 1
                                   else granted[p, l])
                picks.append((sel, e, p * lanes + l))
            m.d.comb += [
                bank.req_valid.eq(Cat(sel for sel, _, _ in picks).any()),
                bank.req_set.eq(_or_all(sel.replicate(len(bank.req_set)) & e.hashed.set
                                        for sel, e, _ in picks)),
                bank.req_tag.eq(_or_all(sel.replicate(len(bank.req_tag)) & e.hashed.tag
                                        for sel, e, _ in picks)),
                bank.req_id.eq(_or_all(sel.replicate(len(bank.req_id)) & ident
                                       for sel, _, ident in picks)),
            ]

        resp_valid = Array(bank.resp_valid for bank in banks)
        resp_id = Array(bank.resp_id for bank in banks)
        resp_hit = Array(bank.resp_hit for bank in banks)
        resp_way = Array(bank.resp_way for bank in banks)

        # ---- retire the oldest beat ------------------------------------------------------
        slot_results = []
        for p in range(depth):
            beat = Signal(result_beat(cfg), name=f"result_w{p}")
            for l in range(lanes):
                e = window[p][l]
                m.d.comb += [
                    beat[l].valid.eq(e.hashed.valid),
                    beat[l].hit.eq(e.hit & e.hashed.valid),
                    # Holes read as all-zero lanes.
                    beat[l].slot.eq(Mux(e.hashed.valid,
                                        (e.hashed.bank * cfg.sets + e.hashed.set) * cfg.ways + e.way,
                                        0)),
                ]
            slot_results.append(beat)
        slot_done = Array(Cat(e.done for e in window[p]).all() for p in range(depth))
        head_done = Signal()
        m.d.comb += [
            head_done.eq((count != 0) & slot_done[head]),
            self.results.valid.eq(head_done),
            self.results.payload.eq(Array(slot_results)[head]),
        ]
        retire = Signal()
        m.d.comb += retire.eq(head_done & self.results.ready)

        # ---- accept a hashed beat into the tail slot --------------------------------------
        idle_fsm = Signal()
        accept = Signal()
        tail = Signal(slot_bits)
        unwrapped_tail = head + count
        m.d.comb += [
            tail.eq(Mux(unwrapped_tail >= depth, unwrapped_tail - depth, unwrapped_tail)),
            accept.eq(hasher.o.valid & (count < depth)),
            hasher.o.ready.eq(count < depth),
        ]

        # ---- per-entry updates --------------------------------------------------------
        for (p, l) in flat:
            e = window[p][l]
            bank_of = e.hashed.bank if n_banks > 1 else 0
            got = Signal(name=f"resp_w{p}_l{l}")
            m.d.comb += got.eq(resp_valid[bank_of] & (resp_id[bank_of] == p * lanes + l))
            with m.If(granted[p, l]):
                m.d.sync += e.pending.eq(0)
            with m.If(got):
                m.d.sync += [e.done.eq(1), e.hit.eq(resp_hit[bank_of]), e.way.eq(resp_way[bank_of])]
            with m.If(accept & (tail == p)):
                src = hasher.o.payload[l]
                m.d.sync += [e.hashed.eq(src), e.pending.eq(src.valid), e.done.eq(~src.valid),
                             e.hit.eq(0), e.way.eq(0)]
        with m.If(retire):
            m.d.sync += head.eq(Mux(head == depth - 1, 0, head + 1))
        m.d.sync += count.eq(count + accept - retire)

        # ---- maintenance: clear and dump -------------------------------------------------
        maint_addr = Signal(max(1, cfg.set_bits))
        dump_bank = Signal(max(1, cfg.bank_bits))
        busy_lookups = Signal()
        m.d.comb += [
            busy_lookups.eq((count != 0) | hasher.busy),
            self.busy.eq(busy_lookups | ~idle_fsm),
        ]
        take_command = ~self.busy
        for bank in banks:
            m.d.comb += bank.maint_addr.eq(maint_addr)
        if cfg.policy == "srrip":
            read_ways = Array(bank.read_data for bank in banks)
        else:
            read_ways = Array(bank.read_data.ways for bank in banks)
            read_sketch = Array(bank.read_data.sketch for bank in banks)
        # After reset the engine clears the tag store (busy for `sets` cycles), so reset
        # leaves the state the spec defines whatever the memories held before.
        with m.FSM(init="CLEAR"):
            with m.State("IDLE"):
                m.d.comb += idle_fsm.eq(1)
                with m.If(take_command & self.clear):
                    m.d.sync += maint_addr.eq(0)
                    m.next = "CLEAR"
                with m.Elif(take_command & self.start_dump):
                    m.d.sync += [maint_addr.eq(0), dump_bank.eq(0)]
                    m.next = "DUMP_READ"
            with m.State("CLEAR"):
                for bank in banks:
                    m.d.comb += bank.maint_clear.eq(1)
                m.d.sync += maint_addr.eq(maint_addr + 1)
                with m.If(maint_addr == cfg.sets - 1):
                    m.next = "IDLE"
            with m.State("DUMP_READ"):
                for bank in banks:
                    m.d.comb += bank.maint_read.eq(1)
                m.next = "DUMP_EMIT"
            with m.State("DUMP_EMIT"):
                for bank in banks:
                    m.d.comb += bank.maint_hold.eq(1)
                m.d.comb += [
                    self.dump.valid.eq(1),
                    self.dump.payload.bank.eq(dump_bank),
                    self.dump.payload.set.eq(maint_addr),
                    self.dump.payload.ways.eq(read_ways[dump_bank]),
                ]
                if cfg.policy == "lfu":
                    m.d.comb += self.dump.payload.sketch.eq(read_sketch[dump_bank])
                with m.If(self.dump.ready):
                    with m.If(dump_bank == n_banks - 1):
                        m.d.sync += dump_bank.eq(0)
                        with m.If(maint_addr == cfg.sets - 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += maint_addr.eq(maint_addr + 1)
                            m.next = "DUMP_READ"
                    with m.Else():
                        m.d.sync += dump_bank.eq(dump_bank + 1)

        # Commands take priority over lookups in the cycle they arrive.
        command_now = idle_fsm & take_command & (self.clear | self.start_dump)
        m.d.comb += [
            hasher.i.valid.eq(self.lookups.valid & idle_fsm & ~command_now),
            hasher.i.payload.eq(self.lookups.payload),
            self.lookups.ready.eq(hasher.i.ready & idle_fsm & ~command_now),
        ]
        return m

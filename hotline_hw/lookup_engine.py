"""The lookup engine: lanes of hashed lookups spread over EAL banks, results in order.

Implements docs/spec.md sections 4 and 8; the micro-architecture is in docs/architecture.md.
"""

from amaranth import Signal, Module, Array, Mux
from amaranth.lib import wiring, stream, fifo
from amaranth.lib.wiring import In, Out

from .bank_pipeline import BankPipeline
from .bank_switch import BankSwitch
from hotline_spec.config import EALConfig
from .feistel import FeistelHash
from .layouts import lookup_beat, result_beat, dump_record, beat_record
from .repeat_marker import RepeatMarker
from .result_release import ResultRelease

__all__ = ["LookupEngine"]


class LookupEngine(wiring.Component):
    """Embedding Access Logger with ``lanes`` lookup engines and ``banks`` tag-store banks.

    Parameters
    ----------
    cfg : EALConfig
        Geometry, policy and the throughput parameters ``dispatch_beats``, ``queue_depth``
        and ``beats_in_flight``.

    Attributes
    ----------
    lookups : In(stream of ``lookup_beat``)
        Up to ``lanes`` keys per beat, lane 0 first; lanes with ``valid = 0`` are holes.
    results : Out(stream of ``result_beat``)
        One beat per lookup beat, in order: per lane ``valid`` (copied), ``hit`` and ``slot``.
    dump : Out(stream of ``dump_record``)
        After ``start_dump``: every set of every bank, bank-major (bank 0's sets 0 ..
        ``sets - 1``, then bank 1's...), the order of the entries' slots ``(bank * sets +
        set) * ways + way`` in the host's dump buffer, so that the dump is one sequential
        stream of ``entries`` words. One record per cycle while ``dump.ready`` is high (sets
        are read ahead into a buffered FIFO of ``DUMP_FIFO_DEPTH`` records); ``valid`` and
        ``payload`` come from registers; the first record comes ``DUMP_LATENCY`` cycles
        after ``start_dump``.
    learn, popular_max_rrpv : In
        Learn (1) or frozen (0) mode and the frozen-mode popularity threshold; change them
        only while ``busy`` is low.
    clear, start_dump : In(1)
        One-cycle command pulses, taken only while ``busy`` is low (ignored otherwise).
    busy : Out(1)
        A lookup is in flight, or a clear or dump runs (also the clear that follows
        reset: ``sets`` cycles).

    Micro-architecture (docs/architecture.md): keys are hashed in a ``1 + 2 * hash_rounds``-stage
    pipeline; the :class:`RepeatMarker` lets a run of one key inside a beat cost one bank
    access (srrip); the :class:`BankSwitch` sends each lookup to its bank's request queue, every
    bank's lookups in stream order; each :class:`BankPipeline` answers one lookup per cycle
    into its response queue; the :class:`ResultRelease` puts each beat back together from
    the heads of those queues and releases beats in order. A FIFO of ``beats_in_flight``
    beat records (where each lane went) links the switch to the release. Since every bank
    serves its lookups in stream order, the results and the final tag store equal
    sequential processing.
    """

    #: Dump records buffered. A read's record reaches the FIFO two cycles after the read
    #: and leaves it two cycles later at the earliest; with the credit registered (a read
    #: is issued on the count of the cycle before), one record per cycle needs five.
    DUMP_FIFO_DEPTH = 5
    #: Cycles from the cycle ``start_dump`` is taken to the first ``dump`` record: the first
    #: read, the RAM's read data, the bank's register of it, the FIFO's two.
    DUMP_LATENCY = 5

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
        n_banks = cfg.banks

        m.submodules.hash = hasher = FeistelHash(cfg)
        m.submodules.repeats = repeats = RepeatMarker(cfg)
        m.submodules.switch = switch = BankSwitch(cfg)
        m.submodules.release = release = ResultRelease(cfg)
        record_bits = beat_record(cfg).size
        m.submodules.in_flight = in_flight = fifo.SyncFIFOBuffered(
            width=record_bits, depth=cfg.beats_in_flight)
        wiring.connect(m, hasher.o, repeats.i)
        wiring.connect(m, repeats.o, switch.beats)
        m.d.comb += [
            in_flight.w_data.eq(switch.records.payload),
            in_flight.w_en.eq(switch.records.valid),
            switch.records.ready.eq(in_flight.w_rdy),
            release.records.valid.eq(in_flight.r_rdy),
            release.records.payload.eq(in_flight.r_data),
            in_flight.r_en.eq(release.records.ready),
        ]
        wiring.connect(m, release.results, wiring.flipped(self.results))
        banks = []
        for b in range(n_banks):
            bank = BankPipeline(cfg)
            m.submodules[f"bank{b}"] = bank
            wiring.connect(m, switch.requests[b], bank.requests)
            wiring.connect(m, bank.responses, release.responses[b])
            m.d.comb += [bank.learn.eq(self.learn), bank.popular_max_rrpv.eq(self.popular_max_rrpv)]
            banks.append(bank)

        # ---- maintenance: clear and dump -------------------------------------------------
        idle_fsm = Signal()
        maint_addr = Signal(max(1, cfg.set_bits))
        busy_lookups = Signal()
        m.d.comb += [
            # Every lookup past the switch has its beat record in the FIFO until its result
            # beat is released, so the banks' queues are empty when this is low.
            busy_lookups.eq(hasher.busy | repeats.busy | switch.busy | (in_flight.level != 0) | release.busy),
            self.busy.eq(busy_lookups | ~idle_fsm),
        ]
        take_command = ~self.busy
        for bank in banks:
            m.d.comb += bank.maint.addr.eq(maint_addr)
        # The dump: reads of set `maint_addr` (every bank reads it; bank `rd_bank`'s is the
        # one used) issued on credit. A bank's `read_data` is its own register of the RAM's
        # read data, so a read issued in cycle t is there in t + 2 (`v2`); that cycle one bank
        # of it is selected, from flip-flops, and written into a buffered FIFO whose output
        # register drives `dump`. `owed` counts the records read or being read and not yet
        # taken from `dump`; a read is issued only while `room` (registered: `owed` below
        # the FIFO's depth), so every record read finds room and neither `dump.ready` nor
        # the FIFO's state reaches a RAM enable in the same cycle.
        if cfg.policy == "srrip":
            read_ways = Array(bank.read_data for bank in banks)
        else:
            read_ways = Array(bank.read_data.ways for bank in banks)
            read_sketch = Array(bank.read_data.sketch for bank in banks)
        rd_bank = Signal(max(1, cfg.bank_bits))
        rd_more = Signal()  # sets left to read
        v1 = Signal()       # a read issued last cycle: its data is on the RAMs' read ports
        v1_bank = Signal.like(rd_bank)
        v1_set = Signal.like(maint_addr)
        v2 = Signal()       # ... and now in the banks' `read_data` registers
        v2_bank = Signal.like(rd_bank)
        v2_set = Signal.like(maint_addr)
        depth = self.DUMP_FIFO_DEPTH
        m.submodules.dump_fifo = dump_fifo = fifo.SyncFIFOBuffered(
            width=dump_record(cfg).size, depth=depth)
        owed = Signal(range(depth + 1))
        owed_next = Signal(range(depth + 2))
        room = Signal(init=1)
        issue = Signal()
        taken = Signal()
        record = Signal(dump_record(cfg))
        m.d.comb += [
            issue.eq(rd_more & room),
            taken.eq(self.dump.valid & self.dump.ready),
            owed_next.eq(owed + issue - taken),
            record.bank.eq(v2_bank), record.set.eq(v2_set),
            record.ways.eq(read_ways[v2_bank]),
            dump_fifo.w_en.eq(v2), dump_fifo.w_data.eq(record),
            self.dump.valid.eq(dump_fifo.r_rdy), self.dump.payload.eq(dump_fifo.r_data),
            dump_fifo.r_en.eq(self.dump.ready),
        ]
        if cfg.policy == "lfu":
            m.d.comb += record.sketch.eq(read_sketch[v2_bank])
        m.d.sync += [owed.eq(owed_next), room.eq(owed_next < depth),
                     v1.eq(issue), v1_bank.eq(rd_bank), v1_set.eq(maint_addr),
                     v2.eq(v1), v2_bank.eq(v1_bank), v2_set.eq(v1_set)]
        last_set = maint_addr == cfg.sets - 1
        with m.If(issue):
            m.d.sync += maint_addr.eq(Mux(last_set, 0, maint_addr + 1))
            with m.If(last_set):
                m.d.sync += rd_bank.eq(rd_bank + 1)
                with m.If(rd_bank == n_banks - 1):
                    m.d.sync += rd_more.eq(0)

        # After reset the engine clears the tag store (busy for `sets` cycles), so reset
        # leaves the state the spec defines whatever the memories held before.
        with m.FSM(init="CLEAR"):
            with m.State("IDLE"):
                m.d.comb += idle_fsm.eq(1)
                with m.If(take_command & self.clear):
                    m.d.sync += maint_addr.eq(0)
                    m.next = "CLEAR"
                with m.Elif(take_command & self.start_dump):
                    m.d.sync += [maint_addr.eq(0), rd_bank.eq(0), rd_more.eq(1)]
                    m.next = "DUMP"
            with m.State("CLEAR"):
                for bank in banks:
                    m.d.comb += bank.maint.clear.eq(1)
                m.d.sync += maint_addr.eq(maint_addr + 1)
                with m.If(maint_addr == cfg.sets - 1):
                    m.next = "IDLE"
            with m.State("DUMP"):
                # `read` keeps the read ports on `maint_addr`; `hold` disables them unless a
                # read is issued (the read data then repeats; `v1`/`v2` mark the new ones).
                for bank in banks:
                    m.d.comb += [bank.maint.read.eq(1), bank.maint.hold.eq(~issue)]
                with m.If(~rd_more & (owed == 0)):
                    m.next = "IDLE"

        # Commands take priority over lookups in the cycle they arrive.
        command_now = idle_fsm & take_command & (self.clear | self.start_dump)
        m.d.comb += [
            hasher.i.valid.eq(self.lookups.valid & idle_fsm & ~command_now),
            hasher.i.payload.eq(self.lookups.payload),
            self.lookups.ready.eq(hasher.i.ready & idle_fsm & ~command_now),
        ]
        return m

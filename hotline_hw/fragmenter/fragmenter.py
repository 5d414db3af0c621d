"""The working-set fragmenter (docs/spec.md sections 6, 7 and 7.5): frozen-mode lookups in,
the schedule out."""

from amaranth import Signal, Module, Array, Cat, Const, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hotline_spec.config import FragmenterConfig, DEDUP_MULTIPLIER
from .classifier import InputClassifier
from .dedup_table import DedupTable
from .layouts import (classified_beat, remap_lane, cold_lane, index_lane, lanes_of,
                      summary_layout)

__all__ = ["Fragmenter", "schedule_outputs", "job_ports", "COUNTERS"]

COUNTERS = ("working_sets", "early_ends", "run_cycles", "stall_bank", "stall_probe",
            "stall_output", "stall_input")


def schedule_outputs(fcfg: FragmenterConfig):
    """The five output streams of the schedule (docs/spec.md 7.6), for the fragmenter and
    the chain around it."""
    return {
        "remapped": Out(stream.Signature(lanes_of(remap_lane(fcfg), fcfg))),
        "cold": Out(stream.Signature(lanes_of(cold_lane(fcfg), fcfg))),
        "popular": Out(stream.Signature(lanes_of(index_lane(fcfg), fcfg))),
        "non_popular": Out(stream.Signature(lanes_of(index_lane(fcfg), fcfg))),
        "summary": Out(stream.Signature(summary_layout(fcfg))),
    }


def job_ports(fcfg: FragmenterConfig):
    """The job control (``start`` and its three parameters), status and counters."""
    return {
        "start": In(1),
        "n_tables": In(fcfg.eal.table_bits + 1),
        "ws_inputs": In(fcfg.inputs_bits + 1),
        "total_inputs": In(32),
        "busy": Out(1),
        "error": Out(1),
        **{name: Out(32) for name in COUNTERS},
    }


def _popcount(bits):
    """Sum of 1-bit values as a balanced adder tree."""
    vals = [b.as_unsigned() if hasattr(b, "as_unsigned") else b for b in bits]
    if not vals:
        return Const(0, 1)
    while len(vals) > 1:
        vals = [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i]
                for i in range(0, len(vals), 2)]
    return vals[0]


class Fragmenter(wiring.Component):
    """Classifies the inputs of a stream of frozen-mode lookups and fragments it into working
    sets: remapped lookups, de-duplicated cold rows, popular and non-popular input indices,
    and one summary per working set, each on its own stream.

    Ports
    -----
    inp : In(stream of ``classified_beat``)
        Lookups ``{valid, key, hit, slot}`` in stream order, ``lanes`` per beat (holes
        allowed): inputs of ``n_tables`` lookups, one after the other.
    remapped : Out(stream of lanes x ``{valid, index}``)
        Every lookup's index into ``[hot table; cold rows]``, in stream order.
    cold : Out(stream of lanes x ``{valid, key}``)
        The working set's distinct cold rows, in first-seen order.
    popular, non_popular : Out(stream of lanes x ``{valid, index}``)
        The input indices (within the working set) of each class, in input order.
    summary : Out(stream of ``summary_layout``)
        One record per working set, pushed with its last other outputs.
    start : In(1)
        A pulse while ``busy`` is low: fragment the next ``total_inputs`` inputs, in working
        sets of ``ws_inputs`` inputs of ``n_tables`` lookups (all three sampled now). Out of
        range values set ``error`` instead and nothing starts.
    busy : Out(1)
        A job runs, or the de-dup table is being cleared (after reset, and every
        ``2**epoch_bits - 1`` working sets).
    error : Out(1)
        The last ``start`` was refused (``n_tables`` not in 1..``max_tables``,
        ``ws_inputs`` not in 1..``2**inputs_bits``, or ``total_inputs`` = 0).
    counters : Out
        ``working_sets``, ``early_ends`` (working sets ended by the de-dup rule), and cycles:
        ``run_cycles`` (a job ran), ``stall_bank`` (two cold lookups met in a bank),
        ``stall_probe`` (a bucket was full: the next one is probed), ``stall_output`` (an
        output stream was full), ``stall_input`` (no lookups to take).

    Each cycle the fragmenter takes the longest run of the head beat's remaining lanes that
    (a) puts at most one cold lookup in each de-dup bank, (b) needs no second probe and (c)
    does not reach past the end of a working set; see docs/spec.md 7.5 and docs/fragmenter.md.
    """

    COUNTERS = COUNTERS

    def __init__(self, fcfg: FragmenterConfig):
        self.fcfg = fcfg
        super().__init__({"inp": In(stream.Signature(classified_beat(fcfg))),
                          **schedule_outputs(fcfg), **job_ports(fcfg)})

    def elaborate(self, platform):
        fcfg, cfg = self.fcfg, self.fcfg.eal
        m = Module()
        lanes, n_banks = cfg.lanes, fcfg.dedup_banks
        bb, sb = max(1, fcfg.dedup_bank_bits), max(1, fcfg.dedup_set_bits)

        m.submodules.table = table = DedupTable(fcfg)
        m.submodules.classify = cls = InputClassifier(fcfg)

        # --- output FIFOs: the core pushes a beat only when every one of them has room ---
        outs = {}
        for name in ("remapped", "cold", "popular", "non_popular", "summary"):
            port = getattr(self, name)
            fifo = SyncFIFOBuffered(width=len(port.payload.as_value()), depth=fcfg.out_depth)
            m.submodules[f"{name}_fifo"] = fifo
            m.d.comb += [port.valid.eq(fifo.r_rdy), port.payload.eq(fifo.r_data),
                         fifo.r_en.eq(port.ready)]
            outs[name] = fifo
        room = Cat(*[f.w_rdy for f in outs.values()]).all()

        # --- input: a small FIFO (so that inp.ready is registered), then the head beat ---
        # Depth 4: a buffered FIFO of depth 2 holds one entry in its inner FIFO, which cannot
        # take a beat in the cycle it gives one: half rate.
        in_fifo = SyncFIFOBuffered(width=len(self.inp.payload.as_value()), depth=4)
        m.submodules.in_fifo = in_fifo
        m.d.comb += [in_fifo.w_en.eq(self.inp.valid), in_fifo.w_data.eq(self.inp.payload),
                     self.inp.ready.eq(in_fifo.w_rdy)]
        beat_layout = classified_beat(fcfg)
        incoming = Signal(beat_layout)
        m.d.comb += incoming.eq(in_fifo.r_data)
        head = Signal(beat_layout)
        head_valid = Signal()
        done = Signal(lanes)
        head_bank = [Signal(bb, name=f"head_bank{l}") for l in range(lanes)]
        head_bucket = [Signal(sb, name=f"head_bucket{l}") for l in range(lanes)]

        # --- job state ---
        T = Signal(cfg.table_bits + 1)
        ws_limit = Signal(fcfg.inputs_bits + 1)
        total = Signal(32)
        running = Signal()
        job_done = Signal(32)                       # inputs of the job finished
        ws_count = Signal(fcfg.inputs_bits + 1)     # inputs of this working set finished
        n_popular = Signal(fcfg.inputs_bits + 1)
        n_cold = Signal(fcfg.rank_bits + 1)
        lk_bits = fcfg.inputs_bits + cfg.table_bits + 1
        n_hits, n_lookups = Signal(lk_bits), Signal(lk_bits)
        pos, acc = Signal(cls.pos_bits), Signal()
        epoch = Signal(fcfg.epoch_bits, init=1)
        nearly_full = Signal()                      # some bank holds > capacity - n_tables
        cap_bits = (fcfg.bank_capacity).bit_length()
        bank_count = [Signal(cap_bits, name=f"bank_count{b}") for b in range(n_banks)]
        probe_off = Signal(sb)
        clear_pending = Signal()

        counters = {name: getattr(self, name) for name in self.COUNTERS}
        m.d.comb += self.busy.eq(running | table.busy | clear_pending)

        # --- start ---
        with m.If(self.start & ~self.busy):
            ok = ((self.n_tables >= 1) & (self.n_tables <= cfg.max_tables)
                  & (self.ws_inputs >= 1) & (self.ws_inputs <= (1 << fcfg.inputs_bits))
                  & (self.total_inputs != 0))
            m.d.sync += self.error.eq(~ok)
            with m.If(ok):
                m.d.sync += [T.eq(self.n_tables), ws_limit.eq(self.ws_inputs),
                             total.eq(self.total_inputs), running.eq(1), job_done.eq(0)]

        # --- the head beat's lanes ---
        rem = [Signal(name=f"rem{l}") for l in range(lanes)]
        miss = [Signal(name=f"miss{l}") for l in range(lanes)]
        first = [Signal(name=f"first{l}") for l in range(lanes)]
        conflict = [Signal(name=f"conflict{l}") for l in range(lanes)]
        for l in range(lanes):
            m.d.comb += [rem[l].eq(head_valid & head[l].valid & ~done[l]),
                         miss[l].eq(rem[l] & ~head[l].hit)]
            m.d.comb += first[l].eq(rem[l] & ~Cat(*rem[:l]).any() if l else rem[l])
            same = [miss[k] & (head_bank[k] == head_bank[l]) for k in range(l)]
            m.d.comb += conflict[l].eq(miss[l] & Cat(*same).any() if same else 0)

        # Probe the de-dup table for every cold lookup that is first in its bank.
        req = [Signal(name=f"req{l}") for l in range(lanes)]
        new = [Signal(name=f"new{l}") for l in range(lanes)]
        probe = [Signal(name=f"probe{l}") for l in range(lanes)]
        for l in range(lanes):
            m.d.comb += [
                req[l].eq(miss[l] & ~conflict[l]),
                table.lane("req_valid", l).eq(req[l] & running),
                table.lane("req_bank", l).eq(head_bank[l]),
                table.lane("req_bucket", l).eq(head_bucket[l] + Mux(first[l], probe_off, 0)),
                table.lane("req_key", l).eq(head[l].key),
                new[l].eq(req[l] & ~table.lane("match", l) & table.lane("free", l)),
                probe[l].eq(req[l] & ~table.lane("match", l) & ~table.lane("free", l)),
            ]
        m.d.comb += table.epoch.eq(epoch)

        # Classify, assuming every remaining lane is taken (the lanes taken are a prefix).
        m.d.comb += [cls.n_tables.eq(T), cls.pos_in.eq(pos), cls.acc_in.eq(acc),
                     cls.valid.eq(Cat(*rem)), cls.hit.eq(Cat(*[head[l].hit for l in range(lanes)]))]
        last = [cls.last[l] for l in range(lanes)]

        # Per lane: input index within the working set and within the job, cold rank.
        # A bank "tips": its next cold row makes it nearly full.
        tip = Array([bank_count[b] == fcfg.bank_capacity - T for b in range(n_banks)])
        enable = Signal()
        m.d.comb += enable.eq(running & ~table.busy & ~clear_pending & head_valid & room)
        take = [Signal(name=f"take{l}") for l in range(lanes)]
        ws_end = [Signal(name=f"ws_end{l}") for l in range(lanes)]
        full_now = [Signal(name=f"full_now{l}") for l in range(lanes)]
        ws_idx = [Signal(fcfg.inputs_bits + 1, name=f"ws_idx{l}") for l in range(lanes)]
        job_idx = [Signal(32, name=f"job_idx{l}") for l in range(lanes)]
        new_rank = [Signal(fcfg.rank_bits + 1, name=f"new_rank{l}") for l in range(lanes)]
        go = enable
        full = nearly_full
        stop_probe = stop_conflict = Const(0)     # why the run of lanes stopped (counters)
        for l in range(lanes):
            ended_before = _popcount([last[k] for k in range(l)])
            m.d.comb += [ws_idx[l].eq(ws_count + ended_before),
                         job_idx[l].eq(job_done + ended_before),
                         new_rank[l].eq(n_cold + _popcount([new[k] for k in range(l)]))]
            blocked = conflict[l] | probe[l]
            m.d.comb += take[l].eq(go & rem[l] & ~blocked)
            full = full | (take[l] & new[l] & tip[head_bank[l]])
            m.d.comb += full_now[l].eq(full)
            m.d.comb += ws_end[l].eq(take[l] & last[l] & (
                full | (ws_idx[l] + 1 == ws_limit) | (job_idx[l] + 1 == total)))
            stop_probe = stop_probe | (go & rem[l] & probe[l] & ~conflict[l])
            stop_conflict = stop_conflict | (go & rem[l] & conflict[l])
            go = go & ~(rem[l] & blocked) & ~ws_end[l]
        any_take = Cat(*take).any()
        any_end = Cat(*ws_end).any()

        # --- inserts into the de-dup table ---
        for l in range(lanes):
            m.d.comb += [table.lane("ins", l).eq(take[l] & new[l]),
                         table.lane("ins_rank", l).eq(new_rank[l])]

        # --- outputs ---
        rem_out = Signal(lanes_of(remap_lane(fcfg), fcfg))
        cold_out = Signal(lanes_of(cold_lane(fcfg), fcfg))
        pop_out = Signal(lanes_of(index_lane(fcfg), fcfg))
        np_out = Signal(lanes_of(index_lane(fcfg), fcfg))
        for l in range(lanes):
            rank = Mux(table.lane("match", l), table.lane("rank", l), new_rank[l])
            m.d.comb += [
                rem_out[l].valid.eq(take[l]),
                rem_out[l].index.eq(Mux(head[l].hit, head[l].slot, cfg.entries + rank)),
                cold_out[l].valid.eq(take[l] & new[l]),
                cold_out[l].key.eq(head[l].key),
                pop_out[l].valid.eq(take[l] & last[l] & cls.popular[l]),
                pop_out[l].index.eq(ws_idx[l]),
                np_out[l].valid.eq(take[l] & last[l] & ~cls.popular[l]),
                np_out[l].index.eq(ws_idx[l]),
            ]
        for name, value in (("remapped", rem_out), ("cold", cold_out), ("popular", pop_out),
                            ("non_popular", np_out)):
            valid_bits = Cat(*[value[l].valid for l in range(lanes)])
            m.d.comb += [outs[name].w_data.eq(value), outs[name].w_en.eq(valid_bits.any())]

        # Counts after this cycle's lanes (the lanes taken all precede any working-set end).
        d_inputs = _popcount([take[l] & last[l] for l in range(lanes)])
        d_popular = _popcount([take[l] & last[l] & cls.popular[l] for l in range(lanes)])
        d_cold = _popcount([take[l] & new[l] for l in range(lanes)])
        d_hits = _popcount([take[l] & head[l].hit for l in range(lanes)])
        d_lookups = _popcount(take)
        summary = Signal(summary_layout(fcfg))
        early = Signal()
        end_full = Signal()
        end_limit = Signal()
        for l in range(lanes):
            with m.If(ws_end[l]):
                m.d.comb += [end_full.eq(full_now[l]),
                             end_limit.eq((ws_idx[l] + 1 == ws_limit) | (job_idx[l] + 1 == total))]
        m.d.comb += [
            early.eq(end_full & ~end_limit),
            summary.n_inputs.eq(ws_count + d_inputs),
            summary.n_popular.eq(n_popular + d_popular),
            summary.n_cold.eq(n_cold + d_cold),
            summary.n_hits.eq(n_hits + d_hits),
            summary.n_lookups.eq(n_lookups + d_lookups),
            summary.ended_early.eq(early),
            outs["summary"].w_data.eq(summary),
            outs["summary"].w_en.eq(any_end),
        ]

        # --- state updates ---
        taken_last = Signal(range(lanes))           # the last lane taken
        for l in range(lanes):
            with m.If(take[l]):
                m.d.comb += taken_last.eq(l)
        with m.If(any_take):
            with m.If(any_end):
                m.d.sync += [ws_count.eq(0), n_popular.eq(0), n_cold.eq(0), n_hits.eq(0),
                             n_lookups.eq(0), nearly_full.eq(0), pos.eq(0), acc.eq(0),
                             counters["working_sets"].eq(counters["working_sets"] + 1)]
                m.d.sync += [bank_count[b].eq(0) for b in range(n_banks)]
                with m.If(early):
                    m.d.sync += counters["early_ends"].eq(counters["early_ends"] + 1)
                with m.If(epoch == (1 << fcfg.epoch_bits) - 1):
                    m.d.sync += [epoch.eq(1), clear_pending.eq(1)]
                with m.Else():
                    m.d.sync += epoch.eq(epoch + 1)
                with m.If(job_done + d_inputs == total):
                    m.d.sync += running.eq(0)
            with m.Else():
                m.d.sync += [ws_count.eq(ws_count + d_inputs),
                             n_popular.eq(n_popular + d_popular), n_cold.eq(n_cold + d_cold),
                             n_hits.eq(n_hits + d_hits), n_lookups.eq(n_lookups + d_lookups),
                             nearly_full.eq(full),
                             pos.eq(Array(cls.pos_out)[taken_last]),
                             acc.eq(Array(cls.acc_out)[taken_last])]
                for b in range(n_banks):
                    inc = Cat(*[take[l] & new[l] & (head_bank[l] == b)
                                for l in range(lanes)]).any()
                    with m.If(inc):
                        m.d.sync += bank_count[b].eq(bank_count[b] + 1)
            m.d.sync += job_done.eq(job_done + d_inputs)
        # The next probe offset: a lane stopped by a full bucket probes the next one.
        with m.If(enable):
            with m.If(stop_probe):
                first_probed = Cat(*[first[l] & probe[l] for l in range(lanes)]).any()
                m.d.sync += probe_off.eq(Mux(first_probed, probe_off + 1, 1))
            with m.Else():
                m.d.sync += probe_off.eq(0)

        # Clear the table on epoch wrap-around (entries of 2**epoch_bits - 1 working sets ago
        # would otherwise look current).
        m.d.comb += table.clear.eq(clear_pending & ~table.busy)
        with m.If(clear_pending & ~table.busy):
            m.d.sync += clear_pending.eq(0)

        # --- head beat: taken lanes are done; a finished beat makes room for the next ---
        finished = Cat(*[~(head[l].valid & ~done[l]) | take[l] for l in range(lanes)]).all()
        load = in_fifo.r_rdy & (~head_valid | (finished & enable))
        with m.If(head_valid & enable):
            m.d.sync += done.eq(done | Cat(*take))
        with m.If(head_valid & finished & enable):
            m.d.sync += head_valid.eq(0)
        with m.If(load):
            m.d.sync += [head.eq(incoming), head_valid.eq(1), done.eq(0)]
            for l in range(lanes):
                key = incoming[l].key.as_unsigned()
                if cfg.key_bits > 32:
                    key = (key ^ (key >> 32))[:32]
                h = (key * DEDUP_MULTIPLIER)[:32]
                m.d.sync += [head_bank[l].eq(h[32 - fcfg.dedup_bank_bits:] if fcfg.dedup_bank_bits else 0),
                             head_bucket[l].eq(h[32 - fcfg.dedup_bank_bits - fcfg.dedup_set_bits:
                                                 32 - fcfg.dedup_bank_bits]
                                               if fcfg.dedup_set_bits else 0)]
        m.d.comb += in_fifo.r_en.eq(load)

        # --- performance counters ---
        with m.If(running):
            m.d.sync += counters["run_cycles"].eq(counters["run_cycles"] + 1)
            with m.If(~head_valid):
                m.d.sync += counters["stall_input"].eq(counters["stall_input"] + 1)
            with m.Elif(~room):
                m.d.sync += counters["stall_output"].eq(counters["stall_output"] + 1)
            with m.Elif(stop_conflict):
                m.d.sync += counters["stall_bank"].eq(counters["stall_bank"] + 1)
            with m.Elif(stop_probe):
                m.d.sync += counters["stall_probe"].eq(counters["stall_probe"] + 1)
        return m

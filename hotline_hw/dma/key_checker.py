"""Checks the keys of a list inline, as its beats stream past, and ends the stream at the
first bad key."""

import operator

from amaranth import Signal, Module, Mux, Cat, Const
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hotline_spec.commands import ErrorCause, Engine
from hotline_spec.config import DeviceConfig
from ..job import error_record, record_first, first_set
from ..logic import or_tree, tree
from ..tables import table_read_signature
from .list_reader import list_beat

__all__ = ["KeyChecker"]


class KeyChecker(wiring.Component):
    """A stream stage that checks every word of a key list's beats (all words of a beat in
    parallel) and ends the stream at the first bad key (``docs/device.md``, "Errors").

    Per word, in this order: ``BAD_KEY`` (bits set above ``key_bits``); with ``check_rows``
    also ``ROW_OUT_OF_RANGE`` (row >= the table's ``rows``, so an unused table with 0 rows
    refuses every key) and ``BAD_TABLE`` (table base or stride not a multiple of
    ``bus_bytes``, or stride < ``row_bytes``).

    Beats leave in order and unchanged, except: the first bad word and every later word of
    its beat get mask 0; after the first bad word, or the first beat with ``error`` set, no
    further beat is forwarded (they are still consumed, so the list reader finishes); a
    beat whose mask is 0 is not forwarded. Forwarded beats have ``error`` 0.

    Pipeline (all stages move together while the output's skid register is empty, so
    ``beats.ready`` is a register; 1 beat per cycle while ``checked.ready`` is high):
    A registers the beat and drives the table reads (of the beat that will be in B next
    cycle); B has each word's table entry and registers each word's cause; C finds the
    first bad word, truncates the mask and loads the output register (or the skid register
    when the output is stalled). The error record is written the cycle after C (its
    address and list index need an add). Latency: a beat accepted in cycle ``n`` is on
    ``checked`` in cycle ``n + 4`` at the earliest.

    Attributes
    ----------
    beats : In(stream of :func:`~hotline_hw.dma.list_reader.list_beat`)
        The list's beats, from word position 0 (as :class:`ListReader` emits them).
        ``ready`` is a register. No beat may arrive in the ``start`` cycle.
    checked : Out(stream of list_beat)
        The good prefix of the list, from a register.
    start : In(1)
        Pulse: forget everything (including beats still inside); ``addr`` is the list's
        bus address (a multiple of 8).
    addr : In(addr_bits)
    check_rows : In(1)
        1: also check ``ROW_OUT_OF_RANGE`` and ``BAD_TABLE`` (GATHER, WRITE_BACK); 0: only
        ``BAD_KEY``. Held for the whole list.
    row_bytes : In(16)
        ``ROW_BYTES``, held for the whole list.
    tables : Out(:func:`~hotline_hw.tables.table_read_signature`).array(words_per_beat)
        One table RAM read port per word of a beat: ``table`` driven in cycle ``n``,
        ``entry`` read in cycle ``n + 1``.
    error : Out(:func:`~hotline_hw.job.error_record`)
        The first bad key since ``start``: engine ``LIST_CHECK``, its cause, ``addr`` the
        key's bus address, ``index`` its list position. Valid no later than one cycle after
        the truncated beat (if any) is in the output register; cleared by ``start``.
    passed : Out(32)
        Words handed over on ``checked`` since ``start``.
    busy : Out(1)
        A beat is inside (stages, output or skid register) or the error record is being
        written.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        c = dcfg
        super().__init__({
            "beats": In(stream.Signature(list_beat(dcfg))),
            "checked": Out(stream.Signature(list_beat(dcfg))),
            "start": In(1), "addr": In(c.addr_bits),
            "check_rows": In(1), "row_bytes": In(16),
            "tables": Out(table_read_signature(dcfg)).array(c.words_per_beat),
            "error": Out(error_record()),
            "passed": Out(32), "busy": Out(1),
        })

    def elaborate(self, platform):
        c = self.dcfg
        e = c.eal
        m = Module()
        W = c.words_per_beat
        wb = exact_log2(W)
        lb = c.beat_offset_bits

        def words(bus):
            return [bus[64 * k:64 * (k + 1)] for k in range(W)]

        def table_of(word):
            return word[e.row_bits:e.key_bits] if e.table_bits else Const(0, 1)

        base = Signal(c.addr_bits)      # the list's first beat's (bus-aligned) address
        skip = Signal(max(1, wb))       # list word 0's position in that beat
        n_in = Signal(32)               # beats accepted since start
        stopped = Signal()              # a bad key or an error beat has gone through C

        # The pipeline moves while the skid register is empty (a register: no path from
        # checked.ready to beats.ready).
        s_valid = Signal()
        en = Signal()
        m.d.comb += [en.eq(~s_valid), self.beats.ready.eq(en)]

        # ---- A: register the beat; read the tables of the beat that will be in B --------
        a_valid, a_data, a_mask, a_err = (Signal(), Signal(c.bus_bits), Signal(W), Signal())
        a_num = Signal(32)
        with m.If(en):
            m.d.sync += [a_valid.eq(self.beats.valid), a_data.eq(self.beats.payload.data),
                         a_mask.eq(self.beats.payload.mask),
                         a_err.eq(self.beats.payload.error), a_num.eq(n_in)]
            with m.If(self.beats.valid):
                m.d.sync += n_in.eq(n_in + 1)
        a_bad_key = Signal(W)
        for k, word in enumerate(words(a_data)):
            m.d.comb += a_bad_key[k].eq(word[e.key_bits:] != 0 if e.key_bits < 64 else 0)

        # ---- B: the entries are here; per word cause ------------------------------------
        b_valid, b_data, b_mask, b_err = (Signal(), Signal(c.bus_bits), Signal(W), Signal())
        b_num = Signal(32)
        b_bad_key = Signal(W)
        with m.If(en):
            m.d.sync += [b_valid.eq(a_valid), b_data.eq(a_data), b_mask.eq(a_mask),
                         b_err.eq(a_err), b_num.eq(a_num), b_bad_key.eq(a_bad_key)]
        b_cause = []
        for k, (aw, bw) in enumerate(zip(words(a_data), words(b_data))):
            port = self.tables[k]
            m.d.comb += port.table.eq(Mux(en, table_of(aw), table_of(bw)))
            ent = port.entry
            oob = Signal(name=f"oob{k}")
            bad_table = Signal(name=f"bad_table{k}")
            m.d.comb += [
                oob.eq(bw[:e.row_bits] >= ent.rows),
                bad_table.eq((ent.base[:lb] != 0) | (ent.stride[:lb] != 0)
                             | (ent.stride < self.row_bytes)),
            ]
            cause = Signal(3, name=f"b_cause{k}")
            with m.If(~b_mask[k]):
                m.d.comb += cause.eq(ErrorCause.NONE)
            with m.Elif(b_bad_key[k]):
                m.d.comb += cause.eq(ErrorCause.BAD_KEY)
            with m.Elif(self.check_rows & oob):
                m.d.comb += cause.eq(ErrorCause.ROW_OUT_OF_RANGE)
            with m.Elif(self.check_rows & bad_table):
                m.d.comb += cause.eq(ErrorCause.BAD_TABLE)
            b_cause.append(cause)
        # ---- C: first bad word, mask cut, output / skid register ------------------------
        c_valid, c_data, c_mask, c_err = (Signal(), Signal(c.bus_bits), Signal(W), Signal())
        c_num = Signal(32)
        c_cause = [Signal(3, name=f"c_cause{k}") for k in range(W)]
        with m.If(en):
            m.d.sync += [c_valid.eq(b_valid), c_data.eq(b_data), c_mask.eq(b_mask),
                         c_err.eq(b_err), c_num.eq(b_num)]
            m.d.sync += [cc.eq(bc) for cc, bc in zip(c_cause, b_cause)]
        c_bad = Cat(cc != 0 for cc in c_cause)
        any_bad, bad_pos, bad_hot = first_set(m, c_bad, "bad")
        # Words before the first bad one (a prefix OR: no carry chain on the output path).
        keep = Signal(W)
        m.d.comb += keep.eq(c_mask & ~Cat(or_tree(list(c_bad[:k + 1]))
                                          for k in range(W)))
        bad_cause = or_tree([cc & bad_hot[k].replicate(3) for k, cc in enumerate(c_cause)])
        live = Signal()
        fwd = Signal()
        m.d.comb += [live.eq(c_valid & ~stopped & ~c_err), fwd.eq(live & (keep != 0))]

        pend = Signal()                 # C found the first bad key (a pulse)
        pend_cause = Signal(3)
        pend_num = Signal(32)
        pend_pos = Signal(max(1, wb))
        m.d.sync += pend.eq(0)
        with m.If(en & c_valid & ~stopped & (c_err | any_bad)):
            m.d.sync += stopped.eq(1)
        with m.If(en & live & any_bad):
            m.d.sync += [pend.eq(1), pend_cause.eq(bad_cause), pend_num.eq(c_num),
                         pend_pos.eq(bad_pos)]

        o_valid, o_data, o_mask = Signal(), Signal(c.bus_bits), Signal(W)
        s_data, s_mask = Signal(c.bus_bits), Signal(W)
        out = self.checked
        m.d.comb += [out.valid.eq(o_valid), out.payload.data.eq(o_data),
                     out.payload.mask.eq(o_mask), out.payload.error.eq(0)]
        took = out.valid & out.ready
        with m.If(en & fwd):
            with m.If(~o_valid | out.ready):
                m.d.sync += [o_valid.eq(1), o_data.eq(c_data), o_mask.eq(keep)]
            with m.Else():
                m.d.sync += [s_valid.eq(1), s_data.eq(c_data), s_mask.eq(keep)]
        with m.Elif(took):
            with m.If(s_valid):
                m.d.sync += [o_data.eq(s_data), o_mask.eq(s_mask), s_valid.eq(0)]
            with m.Else():
                m.d.sync += o_valid.eq(0)
        with m.If(took):
            m.d.sync += self.passed.eq(self.passed + tree(operator.add, list(o_mask)))

        # ---- the error record: the key's address and list position ----------------------
        with m.If(self.start):
            m.d.sync += self.error.valid.eq(0)
        word_no = Cat(pend_pos[:wb], pend_num)          # words since the first beat's word 0
        record_first(m, self.error, pend & ~self.start, cause=pend_cause,
                     engine=Engine.LIST_CHECK, addr=base + Cat(Const(0, 3), word_no),
                     index=word_no - skip)

        m.d.comb += self.busy.eq(a_valid | b_valid | c_valid | o_valid | s_valid | pend)

        # Start wins over everything above.
        with m.If(self.start):
            m.d.sync += [base.eq(Cat(Const(0, lb), self.addr[lb:])), n_in.eq(0),
                         stopped.eq(0), self.passed.eq(0),
                         a_valid.eq(0), b_valid.eq(0), c_valid.eq(0), o_valid.eq(0),
                         s_valid.eq(0), pend.eq(0)]
            if W > 1:
                m.d.sync += skip.eq(self.addr[3:lb])
        return m

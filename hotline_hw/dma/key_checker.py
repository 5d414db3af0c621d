"""Checks every key of a list before a command moves or changes anything."""

from amaranth import Signal, Module, Mux, Cat, Const, Array
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from hotline_spec.commands import ErrorCause
from hotline_spec.config import DeviceConfig
from .list_reader import list_beat

__all__ = ["KeyChecker"]


class KeyChecker(wiring.Component):
    """Consumes a key list's beats (one per cycle, every word of a beat in parallel) and
    records the first bad key (``docs/device.md``, "Errors").

    Per word, in this order: ``BAD_KEY`` (bits set above ``key_bits``); with ``check_rows``
    also ``ROW_OUT_OF_RANGE`` (row >= ``table_rows[table]``, so an unused table with 0
    rows refuses every key) and ``BAD_TABLE`` (table base or stride not a multiple of
    ``bus_bytes``, or stride < ``row_bytes``).

    Ports
    -----
    beats : In(stream of list_beat)
        Always ready.
    start : In(1)
        Pulse: forget the previous result; ``addr`` is the list's bus address.
    addr : In(addr_bits)
    check_rows, row_bytes, table_rows, table_base, table_stride : In
        Row checks for gather / write-back and the table registers.
    error : Out(1)
        A bad key was seen since ``start``.
    cause : Out(8)
        Its :class:`~hotline_spec.commands.ErrorCause`.
    err_addr : Out(addr_bits)
        The bad key's bus address.
    first_key : Out(64)
        The list's first word (kept to stand in for words a failed re-read loses).
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        c = dcfg
        super().__init__({
            "beats": In(stream.Signature(list_beat(dcfg))),
            "start": In(1), "addr": In(c.addr_bits),
            "check_rows": In(1), "row_bytes": In(16),
            "table_rows": In(data.ArrayLayout(32, c.max_tables)),
            "table_base": In(data.ArrayLayout(c.addr_bits, c.max_tables)),
            "table_stride": In(data.ArrayLayout(32, c.max_tables)),
            "error": Out(1), "cause": Out(8), "err_addr": Out(c.addr_bits),
            "first_key": Out(64),
        })

    def elaborate(self, platform):
        c = self.dcfg
        e = c.eal
        m = Module()
        W = c.words_per_beat
        lane_bits = (c.bus_bytes - 1).bit_length()
        beat_addr = Signal(c.addr_bits)
        seen_first = Signal()
        with m.If(self.start):
            m.d.sync += [beat_addr.eq(Cat(Const(0, lane_bits), self.addr[lane_bits:])),
                         self.error.eq(0), self.cause.eq(0), self.err_addr.eq(0),
                         seen_first.eq(0)]
        m.d.comb += self.beats.ready.eq(1)
        take = self.beats.valid
        beat = self.beats.payload
        rows = Array(self.table_rows[t] for t in range(c.max_tables))
        bases = Array(self.table_base[t] for t in range(c.max_tables))
        strides = Array(self.table_stride[t] for t in range(c.max_tables))
        causes = []
        for k in range(W):
            word = beat.data[64 * k:64 * (k + 1)]
            table = word[e.row_bits:e.key_bits]
            row = word[:e.row_bits]
            bad_key = Signal(name=f"bad_key{k}")
            oob = Signal(name=f"oob{k}")
            bad_table = Signal(name=f"bad_table{k}")
            m.d.comb += [
                bad_key.eq(word[e.key_bits:] != 0 if e.key_bits < 64 else 0),
                oob.eq(row >= rows[table]),
                bad_table.eq((bases[table][:lane_bits] != 0) | (strides[table][:lane_bits] != 0)
                             | (strides[table] < self.row_bytes)),
            ]
            cause = Signal(8, name=f"cause{k}")
            with m.If(~beat.mask[k]):
                m.d.comb += cause.eq(ErrorCause.NONE)
            with m.Elif(bad_key):
                m.d.comb += cause.eq(ErrorCause.BAD_KEY)
            with m.Elif(self.check_rows & oob):
                m.d.comb += cause.eq(ErrorCause.ROW_OUT_OF_RANGE)
            with m.Elif(self.check_rows & bad_table):
                m.d.comb += cause.eq(ErrorCause.BAD_TABLE)
            causes.append(cause)
        # The first bad word of the beat (lowest position) wins.
        first_cause = Signal(8)
        first_pos = Signal(range(W))
        for k in reversed(range(W)):
            with m.If(causes[k] != 0):
                m.d.comb += [first_cause.eq(causes[k]), first_pos.eq(k)]
        first_valid = Signal(range(W))
        for k in reversed(range(W)):
            with m.If(beat.mask[k]):
                m.d.comb += first_valid.eq(k)
        with m.If(take):
            m.d.sync += beat_addr.eq(beat_addr + c.bus_bytes)
            with m.If(~seen_first & (beat.mask != 0)):
                m.d.sync += [seen_first.eq(1),
                             self.first_key.eq(Array(beat.data[64 * k:64 * (k + 1)]
                                                     for k in range(W))[first_valid])]
            with m.If((first_cause != 0) & ~self.error & ~beat.error):
                m.d.sync += [self.error.eq(1), self.cause.eq(first_cause),
                             self.err_addr.eq(beat_addr + (first_pos << 3))]
        return m

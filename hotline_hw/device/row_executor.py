"""GATHER and WRITE_BACK: rows between the tables and a row buffer, by a key list."""

from amaranth import Signal, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hotline_spec.commands import Opcode
from hotline_spec.config import DeviceConfig
from ..axi import axi4_signature
from ..dma.axi_mux import read_id_bits
from ..dma.key_checker import KeyChecker
from ..dma.list_reader import ListReader, WordSerializer
from ..dma.row_mover import RowMover
from ..job import job_signature, error_record
from ..tables import table_read_signature
from .blame import first_in_list
from .command import job_params

__all__ = ["RowExecutor"]


class RowExecutor(wiring.Component):
    """Runs GATHER and WRITE_BACK (``docs/device.md``).

    ``ListReader`` -> ``KeyChecker`` (BAD_KEY, ROW_OUT_OF_RANGE, BAD_TABLE) ->
    ``WordSerializer`` -> ``RowMover``. A GATHER reads its list once: the check is inline and
    a bad key ends the key stream before its row is read (the rows before it are in the
    buffer, which the host uses only after a successful command). A WRITE_BACK changes the
    tables, so it first runs a check pass over the whole list and moves nothing unless every
    key is good; then the move pass reads the list again.

    Attributes
    ----------
    job : In(job_signature(job_params()))
    list_axi : Out(axi4_signature, 1 ID bit)
        Key list reads.
    row_axi : Out(axi4_signature, ``read_id_bits`` ID bits)
        Row reads and writes.
    tables : Out(table_read_signature).array(words_per_beat + 1)
        The table RAM: one port per word of a list beat for the checker, one for the mover.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({
            "job": In(job_signature(job_params())),
            "list_axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "row_axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, read_id_bits(dcfg))),
            "tables": Out(table_read_signature(dcfg)).array(dcfg.words_per_beat + 1),
        })

    def elaborate(self, platform):
        c = self.dcfg
        W = c.words_per_beat
        m = Module()
        m.submodules.reader = reader = ListReader(c)
        m.submodules.checker = checker = KeyChecker(c)
        m.submodules.serializer = serializer = WordSerializer(c)
        m.submodules.mover = mover = RowMover(c)
        wiring.connect(m, wiring.flipped(self.list_axi), reader.axi)
        wiring.connect(m, wiring.flipped(self.row_axi), mover.axi)
        wiring.connect(m, reader.beats, checker.beats)
        for k in range(W):
            wiring.connect(m, checker.tables[k], wiring.flipped(self.tables[k]))
        wiring.connect(m, mover.tables, wiring.flipped(self.tables[W]))

        job = self.job
        p = job.params
        check_pass = Signal()       # the checked beats are dropped (WRITE_BACK's first pass)
        m.d.comb += [
            serializer.beats.payload.eq(checker.checked.payload),
            serializer.beats.valid.eq(checker.checked.valid & ~check_pass),
            checker.checked.ready.eq(check_pass | serializer.beats.ready),
            mover.keys.payload.eq(serializer.words.payload.word[:c.eal.key_bits]),
            mover.keys.valid.eq(serializer.words.valid),
            serializer.words.ready.eq(mover.keys.ready),
            reader.addr.eq(p.addr0), reader.count.eq(p.count),
            checker.addr.eq(p.addr0), checker.check_rows.eq(1),
            checker.row_bytes.eq(p.row_bytes),
            mover.gather.eq(p.opcode == Opcode.GATHER), mover.count.eq(p.count),
            mover.buf_addr.eq(p.addr1), mover.row_bytes.eq(p.row_bytes),
        ]
        stream_idle = Signal()      # no key left upstream of the mover
        m.d.comb += stream_idle.eq(~reader.busy & ~checker.busy & ~checker.checked.valid
                                   & ~serializer.words.valid)
        cut_short = checker.error.valid | reader.error.valid

        record = Signal(error_record())
        blamed = first_in_list(m, checker.error, reader.error, mover.error)
        m.d.comb += job.error.eq(record)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(job.start):
                    m.d.comb += [reader.start.eq(1), checker.start.eq(1)]
                    m.d.sync += record.valid.eq(0)
                    with m.If(p.opcode == Opcode.WRITE_BACK):
                        m.d.sync += check_pass.eq(1)
                        m.next = "CHECK"
                    with m.Else():
                        m.d.comb += mover.start.eq(1)
                        m.next = "MOVE"
            with m.State("CHECK"):
                with m.If(stream_idle):
                    m.d.sync += check_pass.eq(0)
                    with m.If(cut_short):                 # refused: nothing moved
                        m.next = "BLAME"
                    with m.Else():
                        m.d.comb += [reader.start.eq(1), checker.start.eq(1), mover.start.eq(1)]
                        m.next = "MOVE"
            with m.State("MOVE"):
                # A cut-short stream leaves the mover waiting for keys that never come.
                m.d.comb += mover.stop.eq(stream_idle & cut_short)
                with m.If(mover.done):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(stream_idle):
                    m.next = "BLAME"
            with m.State("BLAME"):
                m.d.sync += record.eq(blamed)
                m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += job.done.eq(1)
                m.next = "IDLE"
        m.d.comb += job.busy.eq(~fsm.ongoing("IDLE"))
        return m

"""LEARN and LOOKUP: the key list through the lookup engine, the results to host memory."""

from amaranth import Signal, Module
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from hotline_spec.commands import Opcode, Engine
from hotline_spec.config import DeviceConfig
from ..axi import axi4_signature
from ..dma.key_checker import KeyChecker
from ..dma.lane_formatter import LaneFormatter
from ..dma.list_reader import ListReader
from ..dma.word_stream_writer import WordStreamWriter
from ..job import job_signature, error_record
from ..layouts import lookup_beat, result_beat, result_word
from .command import job_params
from .blame import first_in_list

__all__ = ["LookupExecutor"]


class LookupExecutor(wiring.Component):
    """Runs LEARN and LOOKUP in one pass over the key list (``docs/device.md``).

    ``ListReader`` -> ``KeyChecker`` (BAD_KEY only) -> ``LaneFormatter`` -> the engine ->
    ``WordStreamWriter`` (result words packed into full-beat bursts from ``addr1``).
    The first bad key or failed list read ends the key stream: the keys before it are looked
    up (and, for LEARN, learned) and their results written; then the command fails with the
    first error in list order (a result write error comes last).

    Attributes
    ----------
    job : In(job_signature(job_params()))
    lookups : Out(stream of lookup_beat)
        To the lookup engine.
    results : In(stream of result_beat)
        From the lookup engine.
    learn, threshold : Out
        The engine's mode for this command (held between commands).
    engine_busy : In(1)
    list_axi, write_axi : Out(axi4_signature)
        The key reads and the result writes.
    looked_up, hits : Out
        Results accepted this cycle, and how many of them hit (for the counters).
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        e = dcfg.eal
        super().__init__({
            "job": In(job_signature(job_params())),
            "lookups": Out(stream.Signature(lookup_beat(e))),
            "results": In(stream.Signature(result_beat(e))),
            "learn": Out(1), "threshold": Out(2), "engine_busy": In(1),
            "list_axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "write_axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "looked_up": Out(range(e.lanes + 1)), "hits": Out(range(e.lanes + 1)),
        })

    def elaborate(self, platform):
        c = self.dcfg
        e = c.eal
        m = Module()
        m.submodules.reader = reader = ListReader(c)
        m.submodules.checker = checker = KeyChecker(c)
        m.submodules.formatter = formatter = LaneFormatter(c)
        m.submodules.writer = writer = WordStreamWriter(c, e.lanes, Engine.WORD_WRITE)
        wiring.connect(m, wiring.flipped(self.list_axi), reader.axi)
        wiring.connect(m, wiring.flipped(self.write_axi), writer.axi)
        wiring.connect(m, reader.beats, checker.beats)
        wiring.connect(m, checker.checked, formatter.beats)
        wiring.connect(m, formatter.lookups, wiring.flipped(self.lookups))
        for port in checker.tables:          # no row checks here: the table RAM is not read
            m.d.comb += port.entry.eq(0)

        # Engine results -> result words for the writer.
        words = writer.words.payload
        for lane in range(e.lanes):
            res = self.results.payload[lane]
            word = Signal(result_word(), name=f"result{lane}")
            m.d.comb += [word.slot.eq(res.slot), word.hit.eq(res.hit),
                         words.valid[lane].eq(res.valid), words.data[lane].eq(word)]
        m.d.comb += [writer.words.valid.eq(self.results.valid),
                     self.results.ready.eq(writer.words.ready)]
        accepted = self.results.valid & self.results.ready
        m.d.comb += [
            self.looked_up.eq(sum(self.results.payload[k].valid & accepted
                                  for k in range(e.lanes))),
            self.hits.eq(sum(self.results.payload[k].valid & self.results.payload[k].hit
                             & accepted for k in range(e.lanes))),
        ]

        returned = Signal(32)                 # results accepted since start
        m.d.sync += returned.eq(returned + self.looked_up)
        job = self.job
        m.d.comb += [
            reader.addr.eq(job.params.addr0), reader.count.eq(job.params.count),
            checker.addr.eq(job.params.addr0), checker.check_rows.eq(0),
            checker.row_bytes.eq(job.params.row_bytes),
            writer.addr.eq(job.params.addr1),
        ]
        record = Signal(error_record())
        blamed = first_in_list(m, checker.error, reader.error, writer.error)
        m.d.comb += job.error.eq(record)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(job.start):
                    m.d.comb += [reader.start.eq(1), checker.start.eq(1), writer.start.eq(1)]
                    m.d.sync += [returned.eq(0), record.valid.eq(0),
                                 self.learn.eq(job.params.opcode == Opcode.LEARN),
                                 self.threshold.eq(job.params.threshold)]
                    m.next = "STREAM"
            with m.State("STREAM"):
                # The key stream is over once the reader and the checker are done; every key
                # the checker let through has its result once `returned` reaches `passed`.
                with m.If(~reader.busy & ~checker.busy & (returned == checker.passed)
                          & ~self.engine_busy):
                    m.d.comb += writer.end.eq(1)
                    m.next = "WRITE"
            with m.State("WRITE"):
                with m.If(writer.done):
                    m.d.sync += record.eq(blamed)
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += job.done.eq(1)
                m.next = "IDLE"
        m.d.comb += job.busy.eq(~fsm.ongoing("IDLE"))
        return m

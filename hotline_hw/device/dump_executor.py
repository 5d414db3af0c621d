"""DUMP: the whole tag store to host memory, and CLEAR."""

from amaranth import Signal, Module
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from hotline_spec.commands import Engine
from hotline_spec.config import DeviceConfig
from ..axi import axi4_signature
from ..dma.word_stream_writer import WordStreamWriter
from ..job import job_signature, error_record
from ..layouts import dump_record, dump_word
from .command import job_params

__all__ = ["DumpExecutor", "ClearExecutor"]


class DumpExecutor(wiring.Component):
    """Runs DUMP: the engine's dump records (bank-major, so entry ``s`` is word ``s``) as
    64-bit entry words through a ``WordStreamWriter`` (full-beat bursts from ``addr1``).

    Attributes
    ----------
    job : In(job_signature(job_params()))
    dump : In(stream of dump_record)
        From the lookup engine.
    start_dump : Out(1)
        Held until the engine takes the request (it takes it only while idle).
    engine_busy : In(1)
    write_axi : Out(axi4_signature, 1 ID bit)
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({
            "job": In(job_signature(job_params())),
            "dump": In(stream.Signature(dump_record(dcfg.eal))),
            "start_dump": Out(1), "engine_busy": In(1),
            "write_axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
        })

    def elaborate(self, platform):
        c = self.dcfg
        e = c.eal
        m = Module()
        m.submodules.writer = writer = WordStreamWriter(c, e.ways, Engine.WORD_WRITE)
        wiring.connect(m, wiring.flipped(self.write_axi), writer.axi)

        words = writer.words.payload
        for way in range(e.ways):
            entry = self.dump.payload.ways[way]
            word = Signal(dump_word(e.policy), name=f"entry{way}")
            m.d.comb += [word.tag.eq(entry.tag), word[e.meta_name].eq(entry[e.meta_name]),
                         word.valid.eq(entry.valid),
                         words.valid[way].eq(1), words.data[way].eq(word)]
        m.d.comb += [writer.words.valid.eq(self.dump.valid),
                     self.dump.ready.eq(writer.words.ready)]
        records = Signal(range(e.banks * e.sets + 1))
        with m.If(self.dump.valid & self.dump.ready):
            m.d.sync += records.eq(records + 1)

        job = self.job
        m.d.comb += writer.addr.eq(job.params.addr1)
        record = Signal(error_record())
        m.d.comb += job.error.eq(record)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(job.start):
                    m.d.comb += writer.start.eq(1)
                    m.d.sync += [records.eq(0), record.valid.eq(0)]
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += self.start_dump.eq(1)
                with m.If(self.engine_busy):
                    m.next = "STREAM"
            with m.State("STREAM"):
                with m.If((records == e.banks * e.sets) & ~self.engine_busy):
                    m.d.comb += writer.end.eq(1)
                    m.next = "WRITE"
            with m.State("WRITE"):
                with m.If(writer.done):
                    m.d.sync += record.eq(writer.error)
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += job.done.eq(1)
                m.next = "IDLE"
        m.d.comb += job.busy.eq(~fsm.ongoing("IDLE"))
        return m


class ClearExecutor(wiring.Component):
    """Runs CLEAR: asks the engine to zero the tag store and waits until it has.

    Attributes
    ----------
    job : In(job_signature(job_params()))
    clear : Out(1)
        Held until the engine takes the request.
    engine_busy : In(1)
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({"job": In(job_signature(job_params())),
                          "clear": Out(1), "engine_busy": In(1)})

    def elaborate(self, platform):
        m = Module()
        job = self.job
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(job.start):
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += self.clear.eq(1)
                with m.If(self.engine_busy):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(~self.engine_busy):
                    m.d.comb += job.done.eq(1)
                    m.next = "IDLE"
        m.d.comb += job.busy.eq(~fsm.ongoing("IDLE"))
        return m

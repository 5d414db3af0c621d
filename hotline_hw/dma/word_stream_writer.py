"""A stream of words to host memory from any 8-aligned address, in full-beat bursts."""

from amaranth import Module, Cat, Const
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from hotline_spec.config import DeviceConfig
from ..axi import axi4_signature
from ..job import error_record
from .burst_writer import BurstWriter
from .packer import Packer, lane_words

__all__ = ["WordStreamWriter"]


class WordStreamWriter(wiring.Component):
    """``lanes`` x 64-bit words (holes anywhere) written in order from ``addr``: a
    :class:`Packer` into dense beats with strobes, a :class:`BurstWriter` into bursts. What
    LEARN/LOOKUP results and DUMP entries share.

    Attributes
    ----------
    words : In(stream of lane_words(64, lanes))
    start : In(1)
        Pulse while idle: a new stream whose word 0 goes to ``addr`` (8-aligned).
    addr : In(addr_bits)
    end : In(1)
        Pulse, at or after the last word's handshake: the stream is over.
    done : Out(1)
        Pulse once every word is written and every B response is back.
    axi : Out(axi4_signature, 1 ID bit)
    error : Out(error_record())
        The first write error of the stream (the writer's record).
    """

    def __init__(self, dcfg: DeviceConfig, lanes, engine):
        self.dcfg = dcfg
        self.lanes = lanes
        self.engine = engine
        super().__init__({
            "words": In(stream.Signature(lane_words(64, lanes))),
            "start": In(1), "addr": In(dcfg.addr_bits), "end": In(1), "done": Out(1),
            "axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "error": Out(error_record()),
        })

    def elaborate(self, platform):
        c = self.dcfg
        m = Module()
        m.submodules.packer = packer = Packer(64, self.lanes, c.bus_bits)
        m.submodules.writer = writer = BurstWriter(c, engine=self.engine)
        wiring.connect(m, wiring.flipped(self.words), packer.words)
        wiring.connect(m, packer.beats, writer.beats)
        wiring.connect(m, writer.axi, wiring.flipped(self.axi))
        lane_bits = c.beat_offset_bits
        m.d.comb += [
            packer.start.eq(self.start), writer.start.eq(self.start),
            packer.offset.eq(self.addr[3:lane_bits] if lane_bits > 3 else 0),
            writer.addr.eq(Cat(Const(0, lane_bits), self.addr[lane_bits:])),
            self.error.eq(writer.error),
        ]
        with m.FSM():
            with m.State("STREAM"):
                with m.If(self.end):
                    m.d.comb += packer.flush.eq(1)
                    m.next = "PACK"
            with m.State("PACK"):                 # the partial last beat reaches the writer
                with m.If(packer.idle):
                    m.next = "WRITE"
            with m.State("WRITE"):                # the short last burst, then every B
                m.d.comb += writer.flush.eq(1)
                with m.If(writer.idle):
                    m.d.comb += self.done.eq(1)
                    m.next = "STREAM"
        return m

"""The lookup path end to end: keys in, the working-set schedule out."""

from amaranth import Signal, Module
from amaranth.lib import wiring, stream
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hotline_spec.config import FragmenterConfig
from ..layouts import lookup_beat, dump_record
from ..lookup_engine import LookupEngine
from .fragmenter import COUNTERS, Fragmenter, job_ports, schedule_outputs
from .layouts import classified_beat

__all__ = ["FragmentChain"]


class FragmentChain(wiring.Component):
    """Lookup engine -> input classifier -> fragmenter.

    ``keys`` (lanes x ``{valid, key}``, the lookup engine's ``lookups`` format) go to the
    lookup engine; a FIFO of ``key_fifo_depth`` beats carries each beat's keys alongside
    while the engine looks them up. With ``learn`` high the engine learns and its results
    are dropped; with ``learn`` low (frozen) they feed the :class:`Fragmenter` once a job is
    started. The engine's ``dump``, ``clear`` and ``popular_max_rrpv`` are passed through.
    ``busy`` covers both the engine and the fragmenter. The other ports are the fragmenter's.
    """

    def __init__(self, fcfg: FragmenterConfig):
        self.fcfg = fcfg
        cfg = fcfg.eal
        super().__init__({
            "keys": In(stream.Signature(lookup_beat(cfg))),
            **schedule_outputs(fcfg),
            "dump": Out(stream.Signature(dump_record(cfg))),
            "learn": In(1),
            "popular_max_rrpv": In(2, init=cfg.popular_max_rrpv),
            "clear": In(1),
            "start_dump": In(1),
            **job_ports(fcfg),
        })

    def elaborate(self, platform):
        fcfg, cfg = self.fcfg, self.fcfg.eal
        m = Module()
        m.submodules.engine = engine = LookupEngine(cfg)
        m.submodules.fragmenter = frag = Fragmenter(fcfg)
        keys = SyncFIFOBuffered(width=len(self.keys.payload.as_value()), depth=fcfg.key_fifo_depth)
        m.submodules.key_fifo = keys

        # Keys enter the engine and the key FIFO together (both must have room).
        m.d.comb += [
            engine.lookups.payload.eq(self.keys.payload),
            engine.lookups.valid.eq(self.keys.valid & keys.w_rdy),
            keys.w_data.eq(self.keys.payload),
            keys.w_en.eq(self.keys.valid & engine.lookups.ready & keys.w_rdy),
            self.keys.ready.eq(engine.lookups.ready & keys.w_rdy),
        ]
        # Results meet their keys again; one key beat per result beat, in order.
        key_beat = Signal(lookup_beat(cfg))
        merged = Signal(classified_beat(fcfg))
        m.d.comb += key_beat.eq(keys.r_data)
        for l in range(cfg.lanes):
            res = engine.results.payload[l]
            m.d.comb += [merged[l].valid.eq(res.valid), merged[l].hit.eq(res.hit),
                         merged[l].slot.eq(res.slot), merged[l].key.eq(key_beat[l].key)]
        accept = Signal()
        m.d.comb += [
            frag.inp.payload.eq(merged),
            frag.inp.valid.eq(engine.results.valid & ~self.learn),
            accept.eq(self.learn | frag.inp.ready),
            engine.results.ready.eq(accept),
            keys.r_en.eq(engine.results.valid & accept),
        ]

        wiring.connect(m, wiring.flipped(self.dump), engine.dump)
        for name in ("remapped", "cold", "popular", "non_popular", "summary"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(frag, name))
        m.d.comb += [
            engine.learn.eq(self.learn), engine.popular_max_rrpv.eq(self.popular_max_rrpv),
            engine.clear.eq(self.clear), engine.start_dump.eq(self.start_dump),
            frag.start.eq(self.start), frag.n_tables.eq(self.n_tables),
            frag.ws_inputs.eq(self.ws_inputs), frag.total_inputs.eq(self.total_inputs),
            self.busy.eq(engine.busy | frag.busy), self.error.eq(frag.error),
        ]
        m.d.comb += [getattr(self, n).eq(getattr(frag, n)) for n in COUNTERS]
        return m

"""Shares the one AXI4 manager port between the DMA engines."""

from amaranth import Signal, Module, Mux, Cat, Const
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..axi import axi4_signature
from hotline_spec.config import DeviceConfig

__all__ = ["AxiMux", "read_id_bits"]

_AR = ("araddr", "arlen", "arsize", "arburst", "arcache", "arprot")
_AW = ("awaddr", "awlen", "awsize", "awburst", "awcache", "awprot")
_W = ("wdata", "wstrb", "wlast")


def read_id_bits(dcfg: DeviceConfig):
    """ID bits of the row mover (one ID per read in flight)."""
    return (dcfg.read_ids - 1).bit_length()


class AxiMux(wiring.Component):
    """Reads of the list reader and the row mover at once; writes of one writer at a time.

    The top bit of the outer ID says whose read it is (1: list reader, 0: row mover, whose
    own ID is the low bits). AR is granted round-robin and the grant is held while a
    request waits for ``arready``, so the request does not change under a raised valid. R
    and B are routed by ID / by the selected writer.

    Ports
    -----
    out : Out(axi4_signature with ``read_id_bits + 1`` ID bits)
        The manager port of the core.
    rows : In(axi4_signature, row mover)
    lists : In(axi4_signature, list reader; reads only)
    words : In(axi4_signature, word writer; writes only)
    write_words : In(1)
        Writes come from ``words`` (1) or ``rows`` (0); change it only while both are idle.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        rb = read_id_bits(dcfg)
        a, d = dcfg.addr_bits, dcfg.bus_bits
        super().__init__({
            "out": Out(axi4_signature(a, d, rb + 1)),
            "rows": In(axi4_signature(a, d, rb)),
            "lists": In(axi4_signature(a, d, 1)),
            "words": In(axi4_signature(a, d, 1)),
            "write_words": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        rb = read_id_bits(self.dcfg)
        out, rows, lists, words = self.out, self.rows, self.lists, self.words

        # ---- AR: round-robin, grant held while waiting -------------------------------
        held = Signal()
        owner = Signal()          # 1 = list reader
        last = Signal()
        pick = Signal()
        with m.If(held):
            m.d.comb += pick.eq(owner)
        with m.Elif(lists.arvalid & rows.arvalid):
            m.d.comb += pick.eq(~last)
        with m.Else():
            m.d.comb += pick.eq(lists.arvalid)
        for name in _AR:
            m.d.comb += getattr(out, name).eq(Mux(pick, getattr(lists, name), getattr(rows, name)))
        m.d.comb += [
            out.arid.eq(Mux(pick, 1 << rb, rows.arid)),
            out.arvalid.eq(Mux(pick, lists.arvalid, rows.arvalid)),
            lists.arready.eq(pick & out.arready),
            rows.arready.eq(~pick & out.arready),
        ]
        m.d.sync += [held.eq(out.arvalid & ~out.arready), owner.eq(pick)]
        with m.If(out.arvalid & out.arready):
            m.d.sync += last.eq(pick)

        # ---- R: by the ID's top bit ----------------------------------------------------
        to_lists = out.rid[rb]
        for sub in (rows, lists):
            m.d.comb += [sub.rdata.eq(out.rdata), sub.rresp.eq(out.rresp),
                         sub.rlast.eq(out.rlast)]
        m.d.comb += [
            rows.rid.eq(out.rid[:rb]), lists.rid.eq(0),
            rows.rvalid.eq(out.rvalid & ~to_lists), lists.rvalid.eq(out.rvalid & to_lists),
            out.rready.eq(Mux(to_lists, lists.rready, rows.rready)),
        ]

        # ---- AW, W, B: the selected writer --------------------------------------------
        sel = self.write_words
        for name in _AW + _W:
            m.d.comb += getattr(out, name).eq(Mux(sel, getattr(words, name), getattr(rows, name)))
        m.d.comb += [
            out.awid.eq(Mux(sel, 0, rows.awid)),
            out.awvalid.eq(Mux(sel, words.awvalid, rows.awvalid)),
            out.wvalid.eq(Mux(sel, words.wvalid, rows.wvalid)),
            words.awready.eq(sel & out.awready), rows.awready.eq(~sel & out.awready),
            words.wready.eq(sel & out.wready), rows.wready.eq(~sel & out.wready),
            out.bready.eq(Mux(sel, words.bready, rows.bready)),
            words.bvalid.eq(sel & out.bvalid), rows.bvalid.eq(~sel & out.bvalid),
            words.bresp.eq(out.bresp), rows.bresp.eq(out.bresp),
            words.bid.eq(0), rows.bid.eq(out.bid[:rb]),
        ]
        return m

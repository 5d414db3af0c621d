"""Writes single 64-bit words to host memory over AXI4 (lookup results, dump entries)."""

from amaranth import Signal, Module, Mux, Cat, Const
from amaranth.lib import wiring, stream, data, fifo
from amaranth.lib.wiring import In, Out

from ..axi import axi4_signature, BURST_INCR, RESP_OKAY
from hotline_spec.config import DeviceConfig

__all__ = ["WordWriter", "word_request"]

def word_request(dcfg: DeviceConfig):
    """A word to write: its 8-byte aligned bus address and the data."""
    return data.StructLayout({"addr": dcfg.addr_bits, "data": 64})


class WordWriter(wiring.Component):
    """One single-beat AXI4 write per request: a full-width beat at the bus-aligned address
    with the word on its byte lanes and strobes for those eight lanes only (full-size beats
    are what every bridge and memory controller takes), up to one per cycle,
    ``word_writes`` in flight (their addresses are kept, in order, to name a failing one).

    Ports
    -----
    axi : Out(axi4_signature)
        Write channels only (AW, W, B); ID 0.
    requests : In(stream of :func:`word_request`)
    idle : Out(1)
        No request held and every write acknowledged.
    clear : In(1)
        Pulse: forget a recorded error (start of a command).
    error, err_resp, err_addr : Out
        Sticky from the first write answered with an error: its ``bresp`` and address.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({
            "axi": Out(axi4_signature(dcfg.addr_bits, dcfg.bus_bits, 1)),
            "requests": In(stream.Signature(word_request(dcfg))),
            "idle": Out(1), "clear": In(1),
            "error": Out(1), "err_resp": Out(2), "err_addr": Out(dcfg.addr_bits),
        })

    def elaborate(self, platform):
        c = self.dcfg
        m = Module()
        axi = self.axi
        W = c.words_per_beat
        lane_bits = (c.bus_bytes - 1).bit_length()
        # Unbuffered: a B response cannot arrive in the cycle its address is written.
        m.submodules.pending = pend = fifo.SyncFIFO(width=c.addr_bits, depth=c.word_writes)

        aw_busy = Signal()
        w_busy = Signal()
        addr = Signal(c.addr_bits)
        wdata = Signal(c.bus_bits)
        wstrb = Signal(c.bus_bytes)
        m.d.comb += [axi.awvalid.eq(aw_busy), axi.awaddr.eq(addr), axi.awlen.eq(0),
                     axi.awsize.eq(lane_bits), axi.awburst.eq(BURST_INCR), axi.awid.eq(0),
                     axi.awcache.eq(0b0011), axi.awprot.eq(0),
                     axi.wvalid.eq(w_busy), axi.wdata.eq(wdata), axi.wstrb.eq(wstrb),
                     axi.wlast.eq(1)]
        aw_done = axi.awvalid & axi.awready
        w_done = axi.wvalid & axi.wready
        # The held request is finished when both its AW and W have been accepted.
        aw_left = Signal()
        w_left = Signal()
        m.d.comb += [aw_left.eq(aw_busy & ~aw_done), w_left.eq(w_busy & ~w_done)]
        take = Signal()
        m.d.comb += [take.eq(self.requests.valid & ~aw_left & ~w_left & pend.w_rdy),
                     self.requests.ready.eq(take)]
        with m.If(aw_done):
            m.d.sync += aw_busy.eq(0)
        with m.If(w_done):
            m.d.sync += w_busy.eq(0)
        req = self.requests.payload
        lane = req.addr[3:lane_bits] if W > 1 else Const(0, 1)
        with m.If(take):
            m.d.sync += [aw_busy.eq(1), w_busy.eq(1),
                         addr.eq(Cat(Const(0, lane_bits), req.addr[lane_bits:])),
                         wdata.eq(Cat(*([req.data] * W))),
                         wstrb.eq(Const(0xFF, c.bus_bytes) << (lane * 8))]
        m.d.comb += [pend.w_en.eq(take), pend.w_data.eq(req.addr)]   # the word's own address

        # B: in order (one ID); the FIFO names each response's address.
        m.d.comb += [axi.bready.eq(1), pend.r_en.eq(axi.bvalid)]
        with m.If(self.clear):
            m.d.sync += [self.error.eq(0), self.err_resp.eq(0), self.err_addr.eq(0)]
        with m.Elif(axi.bvalid & (axi.bresp != RESP_OKAY) & ~self.error):
            m.d.sync += [self.error.eq(1), self.err_resp.eq(axi.bresp),
                         self.err_addr.eq(pend.r_data)]
        m.d.comb += self.idle.eq(~aw_busy & ~w_busy & (pend.level == 0) & ~self.requests.valid)
        # Read channels unused.
        m.d.comb += [axi.arvalid.eq(0), axi.rready.eq(1)]
        return m

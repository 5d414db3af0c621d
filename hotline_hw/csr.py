"""The register file: an AXI4-Lite subordinate generated from the register description.

:class:`CsrBank` decodes every register of a :class:`~hotline_hw.registers.RegisterMap`;
nothing here names a register except the two it keeps itself (``REG_ERROR`` and
``REG_ERROR_ADDR``, the record of refused accesses).
"""

from amaranth import Signal, Module, Cat, Mux, Const
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import axil_signature, RESP_OKAY, RESP_SLVERR
from .registers import RegisterMap

__all__ = ["CsrBank"]


class CsrBank(wiring.Component):
    """AXI4-Lite register file for ``rmap``; one access at a time, one cycle of decode.

    Ports
    -----
    bus : In(axil_signature)
        The register bus (subordinate side).
    q_<NAME> : Out(32)
        Value of each ``rw`` and ``w1c`` register.
    r_<NAME> : In(32)
        Value the core drives for each ``ro`` register (the two ``REG_ERROR*`` excepted).
    set_<NAME> : In(32)
        For each ``w1c`` register: bits the core sets this cycle (a set wins over a clear
        in the same cycle, so no event is lost).
    stb_<NAME> : Out(1)
        For each ``wo`` register: one-cycle pulse on an accepted write; ``wdata`` holds
        the written value that cycle.
    refuse_<NAME> : In(1)
        For each ``wo`` register: answer a write with SLVERR, set ``REG_ERROR.refused`` and
        do not pulse ``stb_<NAME>`` (e.g. ``CMD_SUBMIT`` while the FIFO is full).
    wdata : Out(32)
        Data of the write being performed.

    Writes to ``ro`` registers and any access to an unmapped offset answer SLVERR and are
    recorded in ``REG_ERROR`` / ``REG_ERROR_ADDR``; they change nothing else.
    """

    _OWN = ("REG_ERROR", "REG_ERROR_ADDR")

    def __init__(self, rmap: RegisterMap):
        self.rmap = rmap
        addr_bits = rmap.config.csr_addr_bits
        members = {"bus": In(axil_signature(addr_bits)), "wdata": Out(32)}
        for r in rmap:
            if r.access in ("rw", "w1c"):
                members[f"q_{r.name}"] = Out(32, init=r.reset)
            if r.access == "ro" and r.name not in self._OWN:
                members[f"r_{r.name}"] = In(32)
            if r.access == "w1c" and r.name not in self._OWN:
                members[f"set_{r.name}"] = In(32)
            if r.access == "wo":
                members[f"stb_{r.name}"] = Out(1)
                members[f"refuse_{r.name}"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        rmap = self.rmap
        bus = self.bus
        m = Module()
        word_lo = 2
        word_bits = rmap.config.csr_addr_bits - word_lo
        reg_error = self.q_REG_ERROR
        reg_error_addr = Signal(32)
        f_unmapped = rmap["REG_ERROR"].field("unmapped").lsb
        f_read_only = rmap["REG_ERROR"].field("read_only").lsb
        f_refused = rmap["REG_ERROR"].field("refused").lsb

        # ---- write: take AW and W together, answer on B --------------------------------
        bvalid = Signal()
        bresp = Signal(2)
        take_w = Signal()
        m.d.comb += [take_w.eq(bus.awvalid & bus.wvalid & ~bvalid),
                     bus.awready.eq(take_w), bus.wready.eq(take_w),
                     bus.bvalid.eq(bvalid), bus.bresp.eq(bresp),
                     self.wdata.eq(bus.wdata)]
        with m.If(bvalid & bus.bready):
            m.d.sync += bvalid.eq(0)
        byte_mask = Cat(bus.wstrb[i].replicate(8) for i in range(4))

        # Events of the core's own w1c registers this cycle.
        err_set = Signal(32)
        err_addr_new = Signal(32)
        err_addr_set = Signal()

        w1c_clear = {r.name: Signal(32, name=f"clr_{r.name}") for r in rmap if r.access == "w1c"}
        with m.If(take_w):
            m.d.sync += [bvalid.eq(1), bresp.eq(RESP_OKAY)]
            with m.Switch(bus.awaddr[word_lo:word_lo + word_bits]):
                for r in rmap:
                    with m.Case(r.offset >> word_lo):
                        if r.access == "rw":
                            q = getattr(self, f"q_{r.name}")
                            new = (q & ~byte_mask) | (bus.wdata & byte_mask)
                            m.d.sync += q.eq(new & r.mask)
                        elif r.access == "w1c":
                            m.d.comb += w1c_clear[r.name].eq(bus.wdata & byte_mask & r.mask)
                        elif r.access == "wo":
                            refuse = getattr(self, f"refuse_{r.name}")
                            with m.If(refuse):
                                m.d.sync += bresp.eq(RESP_SLVERR)
                                m.d.comb += [err_set[f_refused].eq(1), err_addr_set.eq(1)]
                            with m.Else():
                                m.d.comb += getattr(self, f"stb_{r.name}").eq(1)
                        else:  # ro
                            m.d.sync += bresp.eq(RESP_SLVERR)
                            m.d.comb += [err_set[f_read_only].eq(1), err_addr_set.eq(1)]
                with m.Default():
                    m.d.sync += bresp.eq(RESP_SLVERR)
                    m.d.comb += [err_set[f_unmapped].eq(1), err_addr_set.eq(1)]
            m.d.comb += err_addr_new.eq(bus.awaddr)

        # ---- read: one cycle of decode, data registered ----------------------------------
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        take_r = Signal()
        m.d.comb += [take_r.eq(bus.arvalid & ~rvalid),
                     bus.arready.eq(take_r), bus.rvalid.eq(rvalid),
                     bus.rdata.eq(rdata), bus.rresp.eq(rresp)]
        with m.If(rvalid & bus.rready):
            m.d.sync += rvalid.eq(0)
        with m.If(take_r):
            m.d.sync += [rvalid.eq(1), rresp.eq(RESP_OKAY), rdata.eq(0)]
            with m.Switch(bus.araddr[word_lo:word_lo + word_bits]):
                for r in rmap:
                    with m.Case(r.offset >> word_lo):
                        if r.name == "REG_ERROR_ADDR":
                            m.d.sync += rdata.eq(reg_error_addr)
                        elif r.access in ("rw", "w1c"):
                            m.d.sync += rdata.eq(getattr(self, f"q_{r.name}"))
                        elif r.access == "ro":
                            m.d.sync += rdata.eq(getattr(self, f"r_{r.name}") & r.mask)
                with m.Default():
                    m.d.sync += rresp.eq(RESP_SLVERR)
                    m.d.comb += [err_set[f_unmapped].eq(1)]
            # A refused write in the same cycle names its own address (writes take priority).
            with m.If(~err_addr_set):
                m.d.comb += err_addr_new.eq(bus.araddr)
            with m.If(err_set[f_unmapped] & ~take_w):
                m.d.comb += err_addr_set.eq(1)

        # ---- sticky bits: set wins over clear --------------------------------------------
        for r in rmap:
            if r.access != "w1c":
                continue
            q = getattr(self, f"q_{r.name}")
            sets = err_set if r.name == "REG_ERROR" else getattr(self, f"set_{r.name}")
            m.d.sync += q.eq(((q & ~w1c_clear[r.name]) | sets) & r.mask)
        with m.If(err_addr_set):
            m.d.sync += reg_error_addr.eq(err_addr_new & ((1 << rmap.config.csr_addr_bits) - 1))
        return m

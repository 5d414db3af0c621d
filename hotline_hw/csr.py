"""The register file: an AXI4-Lite subordinate generated from the register description.

:class:`CsrBank` decodes every register of a :class:`~hotline_spec.registers.RegisterMap`;
nothing here names a register except the two it keeps itself (``REG_ERROR`` and
``REG_ERROR_ADDR``, the record of refused accesses).
"""

from amaranth import Signal, Module, Cat, Mux, Const
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import axil_signature, RESP_OKAY, RESP_SLVERR
from .logic import or_tree
from hotline_spec.registers import RegisterMap

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
        reg_error_addr = Signal(32)
        f_unmapped = rmap["REG_ERROR"].field("unmapped").lsb
        f_read_only = rmap["REG_ERROR"].field("read_only").lsb
        f_refused = rmap["REG_ERROR"].field("refused").lsb

        # One comparator per register and bus side: the decode is a select signal per
        # register, not a `case` per driven signal (which repeats every offset).
        def decode(addr, prefix):
            word = addr[word_lo:word_lo + word_bits]
            sel = {}
            for r in rmap:
                sel[r.name] = Signal(name=f"{prefix}_{r.name}")
                m.d.comb += sel[r.name].eq(word == (r.offset >> word_lo))
            return sel

        def any_of(sel, names):
            names = list(names)
            return or_tree(sel[n] for n in names) if names else Const(0)

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
        wsel = decode(bus.awaddr, "wsel")
        w_unmapped = Signal()
        w_read_only = Signal()
        w_refused = Signal()
        m.d.comb += [
            w_unmapped.eq(take_w & ~any_of(wsel, wsel)),
            w_read_only.eq(take_w & any_of(wsel, (r.name for r in rmap if r.access == "ro"))),
            w_refused.eq(take_w & or_tree([Const(0)] + [
                wsel[r.name] & getattr(self, f"refuse_{r.name}")
                for r in rmap if r.access == "wo"])),
        ]
        with m.If(take_w):
            m.d.sync += [bvalid.eq(1),
                         bresp.eq(Mux(w_unmapped | w_read_only | w_refused,
                                      RESP_SLVERR, RESP_OKAY))]
        w1c_clear = {}
        for r in rmap:
            hit = take_w & wsel[r.name]
            if r.access == "rw":
                q = getattr(self, f"q_{r.name}")
                with m.If(hit):
                    m.d.sync += q.eq(((q & ~byte_mask) | (bus.wdata & byte_mask)) & r.mask)
            elif r.access == "w1c":
                w1c_clear[r.name] = Mux(hit, bus.wdata & byte_mask & r.mask, 0)
            elif r.access == "wo":
                m.d.comb += getattr(self, f"stb_{r.name}").eq(
                    hit & ~getattr(self, f"refuse_{r.name}"))

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
        rsel = decode(bus.araddr, "rsel")
        values = []
        for r in rmap:
            if r.name == "REG_ERROR_ADDR":
                value = reg_error_addr
            elif r.access in ("rw", "w1c"):
                value = getattr(self, f"q_{r.name}")
            elif r.access == "ro":
                value = getattr(self, f"r_{r.name}") & r.mask
            else:  # wo: reads give 0
                continue
            values.append(rsel[r.name].replicate(32) & value)
        r_unmapped = Signal()
        m.d.comb += r_unmapped.eq(take_r & ~any_of(rsel, rsel))
        with m.If(take_r):
            m.d.sync += [rvalid.eq(1), rresp.eq(Mux(r_unmapped, RESP_SLVERR, RESP_OKAY)),
                         rdata.eq(or_tree(values))]

        # ---- refused accesses: sticky bits and the offset (a write's wins a tie) --------
        err_set = Signal(32)
        m.d.comb += [err_set[f_unmapped].eq(w_unmapped | r_unmapped),
                     err_set[f_read_only].eq(w_read_only), err_set[f_refused].eq(w_refused)]
        offset_mask = (1 << rmap.config.csr_addr_bits) - 1
        with m.If(w_unmapped | w_read_only | w_refused):
            m.d.sync += reg_error_addr.eq(bus.awaddr & offset_mask)
        with m.Elif(r_unmapped):
            m.d.sync += reg_error_addr.eq(bus.araddr & offset_mask)

        # ---- sticky bits: set wins over clear --------------------------------------------
        for r in rmap:
            if r.access != "w1c":
                continue
            q = getattr(self, f"q_{r.name}")
            sets = err_set if r.name == "REG_ERROR" else getattr(self, f"set_{r.name}")
            m.d.sync += q.eq(((q & ~w1c_clear[r.name]) | sets) & r.mask)
        return m

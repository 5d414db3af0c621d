"""The register file: an AXI4-Lite subordinate generated from the register description.

:class:`CsrBank` decodes every register of a :class:`~hotline_spec.registers.RegisterMap`;
nothing here names a register except the two it keeps itself (``REG_ERROR`` and
``REG_ERROR_ADDR``, the record of refused accesses). Its ports are typed views of the
registers' fields (:func:`register_layout`), so the core writes ``csr.q_CMD_CTRL.opcode``.
The table slots (group ``"table"``) live in one small RAM read through
:func:`~hotline_hw.tables.table_read_signature` ports, not in flip-flops.
"""

from amaranth import Signal, Module, Cat, Mux, Const, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import axil_signature, RESP_OKAY, RESP_SLVERR
from .logic import or_tree
from .tables import TABLE_WORDS, table_read_signature
from hotline_spec.registers import Register, RegisterMap

__all__ = ["CsrBank", "register_layout"]


def register_layout(register: Register) -> data.FlexibleLayout:
    """The 32-bit layout of ``register``: one :class:`~amaranth.lib.data.Field` per field of
    the description (a whole-word register has its one field, usually ``value``)."""
    if not register.fields:
        return data.FlexibleLayout(32, {"value": data.Field(unsigned(32), 0)})
    return data.FlexibleLayout(32, {f.name: data.Field(unsigned(f.width), f.lsb)
                                    for f in register.fields})


def _field_init(register):
    return {f.name: f.reset for f in register.fields}


class _TableBlock:
    """Where the table slots are: ``slots`` slots of ``len(TABLE_WORDS)`` words from word
    address ``first`` (checked against the register map, so the decode cannot drift)."""

    def __init__(self, rmap):
        self.slots = rmap.config.max_tables
        self.words = len(TABLE_WORDS)
        table = [r for r in rmap if r.group == "table"]
        if len(table) != self.slots * self.words:
            raise ValueError(f"{len(table)} table registers, expected "
                             f"{self.slots} x {self.words}")
        self.first = rmap.offset(rmap.table(0, TABLE_WORDS[0].upper())) >> 2
        for t in range(self.slots):
            for j, word in enumerate(TABLE_WORDS):
                r = rmap[rmap.table(t, word.upper())]
                if r.access != "rw" or r.offset >> 2 != self.first + self.words * t + j:
                    raise ValueError(f"table register {r.name} is not where the block "
                                     f"layout puts it")
        self.slot_bits = (self.slots - 1).bit_length()

    def decode(self, word):
        """``(hit, slot, word_one_hot)`` of the word address ``word`` (a Value)."""
        span = self.slots * self.words  # a power of two: max_tables = 2**table_bits
        span_bits = span.bit_length() - 1
        if self.first % span == 0:      # aligned block: compare the upper bits only
            hit = word[span_bits:] == (self.first >> span_bits)
            rel = word[:span_bits]
        else:
            hit = (word >= self.first) & (word < self.first + span)
            rel = (word - self.first)[:span_bits]
        one_hot = Cat(hit & (rel[:2] == j) for j in range(self.words))
        return hit, rel[2:2 + self.slot_bits], one_hot


class CsrBank(wiring.Component):
    """AXI4-Lite register file for ``rmap``; one read and one write at a time, pipelined.

    Every register but the table slots is flip-flops; the table slots (``TABLE<t>_BASE_LO``,
    ``_BASE_HI``, ``_STRIDE``, ``_ROWS``) are one :class:`~amaranth.lib.memory.Memory` of
    ``max_tables`` entries of :func:`~hotline_hw.tables.table_entry`, read by the core through
    ``table_reads`` and by the bus through a read port of its own. ``BASE_HI`` keeps only the
    bits an ``addr_bits``-wide address has (the others read 0).

    Parameters
    ----------
    rmap : RegisterMap
        The register description (:func:`hotline_spec.registers.register_map`).
    table_read_ports : int
        Read ports of the table RAM for the core (``table_reads``).

    Attributes
    ----------
    bus : In(axil_signature(csr_addr_bits))
        The register bus (subordinate side). No path from a ``bus`` input to a ``bus``
        output is combinational.
    q_<NAME> : Out(register_layout(NAME))
        State of each ``rw`` and ``w1c`` register (table slots excepted), e.g.
        ``q_CMD_CTRL.opcode``; reset value from the description.
    r_<NAME> : In(register_layout(NAME))
        Value the core drives for each ``ro`` register (``REG_ERROR_ADDR`` excepted); bits
        outside the fields are ignored.
    set_<NAME> : In(register_layout(NAME))
        For each ``w1c`` register (``REG_ERROR`` excepted): bits the core sets this cycle (a
        set wins over a clear in the same cycle, so no event is lost).
    stb_<NAME> : Out(1)
        For each ``wo`` register: one-cycle pulse when a write to it is performed and not
        refused; ``wdata`` holds the written value that cycle.
    refuse_<NAME> : In(1)
        For each ``wo`` register: sampled in the cycle the write is performed; when high the
        write answers SLVERR, sets ``REG_ERROR.refused`` and ``stb_<NAME>`` stays low (e.g.
        ``CMD_SUBMIT`` while the FIFO is full).
    wdata : Out(32)
        Data of the write being performed (valid in the cycle of ``stb_<NAME>``).
    table_reads : In(table_read_signature(dcfg)).array(table_read_ports)
        The core drives ``table`` in cycle ``n``; ``entry`` holds that slot in cycle ``n + 1``
        (as stored at the start of cycle ``n``: a bus write in cycle ``n`` shows in ``n + 2``).

    Notes
    -----
    Behaviour and timing:

    * Writes: AW and W are taken independently (``awready``/``wready`` low while one is held
      or the B response waits). The write is performed in the cycle after both are held
      ("cycle g"): ``rw`` registers and table slots take the bytes whose ``wstrb`` bit is set;
      ``w1c`` registers clear the bits written 1 (strobed bytes only) unless the core sets
      them in the same cycle; ``wo`` registers pulse ``stb_``. B follows in cycle g + 1.
    * Reads: after the AR handshake in cycle ``r`` the value is taken as it stands in cycle
      ``r + 1`` (register state, ``r_`` inputs, table RAM) and answered with ``rvalid`` from
      cycle ``r + 3``: stage 1 registers the decoded one-hot select, stage 2 ORs the
      selected values in groups of :attr:`GROUP` registers, stage 3 ORs the groups and the
      selected table word into ``rdata``. ``wo`` registers read 0 (OKAY).
    * A write to an ``ro`` register, a refused ``wo`` write and any access to an unmapped
      offset answer SLVERR, set the matching ``REG_ERROR`` bit (``unmapped``, ``read_only``,
      ``refused``) and record the offset in ``REG_ERROR_ADDR``; they change nothing else.
      A write records in cycle g, a read in cycle ``r + 1``; a write's offset wins a tie.
    * After reset the table RAM is cleared, one slot per cycle (``max_tables`` cycles);
      the bus channels are not ready until then.
    """

    _OWN = ("REG_ERROR", "REG_ERROR_ADDR")
    #: Registers ORed together in read stage 2 (the rest of the AND-OR is stage 3).
    GROUP = 8

    def __init__(self, rmap: RegisterMap, table_read_ports: int = 0):
        self.rmap = rmap
        self.table_read_ports = table_read_ports
        self._tables = _TableBlock(rmap)
        self._regs = [r for r in rmap if r.group != "table"]
        dcfg = rmap.config
        members = {"bus": In(axil_signature(dcfg.csr_addr_bits)), "wdata": Out(32)}
        for r in self._regs:
            layout = register_layout(r)
            if r.access in ("rw", "w1c"):
                members[f"q_{r.name}"] = Out(layout, init=_field_init(r))
            if r.access == "ro" and r.name not in self._OWN:
                members[f"r_{r.name}"] = In(layout)
            if r.access == "w1c" and r.name not in self._OWN:
                members[f"set_{r.name}"] = In(layout)
            if r.access == "wo":
                members[f"stb_{r.name}"] = Out(1)
                members[f"refuse_{r.name}"] = In(1)
        members["table_reads"] = In(table_read_signature(dcfg)).array(table_read_ports)
        super().__init__(members)

    def _decode(self, m, addr, prefix):
        """The select of each non-table register (and the table decode) for the byte
        address ``addr``, to be registered by the caller. A select is the AND of two small
        comparators (low and high half of the word address), so the ~60 selects share ~40
        comparators instead of each having its own 10-bit one."""
        word = addr[2:]
        half = len(word) // 2
        lows, highs, sel = {}, {}, {}
        for r in self._regs:
            w = r.offset >> 2
            lo, hi = w & ((1 << half) - 1), w >> half
            if lo not in lows:
                lows[lo] = Signal(name=f"{prefix}_lo{lo}")
                m.d.comb += lows[lo].eq(word[:half] == lo)
            if hi not in highs:
                highs[hi] = Signal(name=f"{prefix}_hi{hi}")
                m.d.comb += highs[hi].eq(word[half:] == hi)
            sel[r.name] = lows[lo] & highs[hi]
        return sel, self._tables.decode(word)

    def elaborate(self, platform):
        rmap = self.rmap
        dcfg = rmap.config
        tb = self._tables
        bus = self.bus
        m = Module()
        regs = self._regs
        readable = [r for r in regs if r.access != "wo"]
        f_unmapped = rmap["REG_ERROR"].field("unmapped").lsb
        f_read_only = rmap["REG_ERROR"].field("read_only").lsb
        f_refused = rmap["REG_ERROR"].field("refused").lsb
        reg_error_addr = Signal(dcfg.csr_addr_bits)

        # ---- the table RAM ---------------------------------------------------------------
        # One entry per slot, stored as byte lanes with a write granularity of 8 bits: a
        # strobed bus write is then one write-port cycle with no read-modify-write (which
        # would need the bus read port, a second cycle and a hazard check), and in LUTRAM a
        # per-lane write enable costs nothing (each DPR16X4 has its own).
        hi_bits = dcfg.addr_bits - 32
        word_bits = [32, hi_bits, 32, 32]
        lanes = [(j, k) for j, bits in enumerate(word_bits) for k in range((bits + 7) // 8)]
        mem = Memory(shape=unsigned(8 * len(lanes)), depth=tb.slots, init=[])
        m.submodules.tables = mem

        def unpack(value):
            """The four words (base_lo, base_hi's existing bits, stride, rows) of an entry."""
            words = []
            for j, bits in enumerate(word_bits):
                words.append(Cat(value[8 * i:8 * i + 8] for i, (jj, _) in enumerate(lanes)
                                 if jj == j)[:bits])
            return words

        clearing = Signal(init=1)   # walking the slots after reset, writing zeros
        clear_slot = Signal(range(max(2, tb.slots)))
        with m.If(clearing):
            m.d.sync += clear_slot.eq(clear_slot + 1)
            with m.If(clear_slot == tb.slots - 1):
                m.d.sync += clearing.eq(0)

        for i, port in enumerate(self.table_reads):
            rp = mem.read_port(domain="sync")   # not transparent: no bypass mux
            base_lo, base_hi, stride, rows = unpack(rp.data)
            m.d.comb += [rp.addr.eq(port.table),
                         port.entry.base.eq(Cat(base_lo, base_hi)),
                         port.entry.stride.eq(stride), port.entry.rows.eq(rows)]

        # ---- write: AW and W into registers, performed when both are held -----------------
        aw_held = Signal()
        w_held = Signal()
        bvalid = Signal()
        bresp = Signal(2)
        aw_addr = Signal(dcfg.csr_addr_bits)
        w_data = Signal(32)
        w_strb = Signal(4)
        m.d.comb += [bus.awready.eq(~aw_held & ~bvalid & ~clearing),
                     bus.wready.eq(~w_held & ~bvalid & ~clearing),
                     bus.bvalid.eq(bvalid), bus.bresp.eq(bresp), self.wdata.eq(w_data)]
        take_aw = bus.awvalid & bus.awready
        take_w = bus.wvalid & bus.wready
        dsel, (dt_hit, dt_slot, dt_word) = self._decode(m, bus.awaddr, "wdec")
        wsel = {r.name: Signal(name=f"wsel_{r.name}") for r in regs}
        wt_word = Signal(tb.words)          # one-hot table word, zero unless a table slot
        wt_slot = Signal(tb.slot_bits)
        with m.If(take_aw):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr), wt_word.eq(dt_word),
                         wt_slot.eq(dt_slot)]
            m.d.sync += [wsel[n].eq(s) for n, s in dsel.items()]
        with m.If(take_w):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        go = Signal()
        m.d.comb += go.eq(aw_held & w_held)

        w_unmapped = Signal()
        w_read_only = Signal()
        w_refused = Signal()
        m.d.comb += [
            w_unmapped.eq(go & ~(or_tree(list(wsel.values())) | wt_word.any())),
            w_read_only.eq(go & or_tree([Const(0)] + [wsel[r.name] for r in regs
                                                      if r.access == "ro"])),
            w_refused.eq(go & or_tree([Const(0)] + [
                wsel[r.name] & getattr(self, f"refuse_{r.name}")
                for r in regs if r.access == "wo"])),
        ]
        with m.If(go):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), bvalid.eq(1),
                         bresp.eq(Mux(w_unmapped | w_read_only | w_refused,
                                      RESP_SLVERR, RESP_OKAY))]
        with m.If(bvalid & bus.bready):
            m.d.sync += bvalid.eq(0)

        byte_go = [Signal(name=f"byte_go{k}") for k in range(4)]
        m.d.comb += [byte_go[k].eq(go & w_strb[k]) for k in range(4)]
        w1c_clear = {}
        for r in regs:
            hit = wsel[r.name]
            if r.access == "rw":
                q = getattr(self, f"q_{r.name}").as_value()
                for k in range(4):
                    bits = (r.mask >> 8 * k) & 0xFF
                    if bits:    # a comparator's output and a mux per bit
                        with m.If(hit & byte_go[k]):
                            m.d.sync += q[8 * k:8 * k + 8].eq(w_data[8 * k:8 * k + 8] & bits)
            elif r.access == "w1c":
                w1c_clear[r.name] = Cat((hit & byte_go[k]).replicate(8) for k in range(4)) \
                    & w_data & r.mask
            elif r.access == "wo":
                m.d.comb += getattr(self, f"stb_{r.name}").eq(
                    go & hit & ~getattr(self, f"refuse_{r.name}"))

        wp = mem.write_port(granularity=8)
        with m.If(clearing):
            m.d.comb += [wp.addr.eq(clear_slot), wp.en.eq(-1), wp.data.eq(0)]
        with m.Else():
            # Bits of a BASE_HI lane beyond addr_bits are stored but never read (unpack).
            m.d.comb += [wp.addr.eq(wt_slot),
                         wp.data.eq(Cat(w_data[8 * k:8 * k + 8] for _, k in lanes)),
                         wp.en.eq(Cat(wt_word[j] & byte_go[k] for j, k in lanes))]

        # ---- read: select (stage 1), group AND-OR (stage 2), final OR (stage 3) ----------
        r_busy = Signal()
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        m.d.comb += [bus.arready.eq(~r_busy & ~clearing), bus.rvalid.eq(rvalid),
                     bus.rdata.eq(rdata), bus.rresp.eq(rresp)]
        take_r = bus.arvalid & bus.arready
        dsel, (dt_hit, dt_slot, dt_word) = self._decode(m, bus.araddr, "rdec")
        rsel = {r.name: Signal(name=f"rsel_{r.name}") for r in regs}
        rt_word = Signal(tb.words)
        rt_slot = Signal(tb.slot_bits)
        r_addr = Signal(dcfg.csr_addr_bits)
        s1 = Signal()   # stage 1 holds the decoded select: cycle r + 1
        s2 = Signal()   # stage 2 holds the group ORs and the table RAM word: cycle r + 2
        with m.If(take_r):
            m.d.sync += [r_busy.eq(1), r_addr.eq(bus.araddr), rt_word.eq(dt_word),
                         rt_slot.eq(dt_slot)]
            m.d.sync += [rsel[n].eq(s) for n, s in dsel.items()]
        m.d.sync += [s1.eq(take_r), s2.eq(s1)]

        r_unmapped = Signal()
        r_unmapped_s2 = Signal()
        m.d.comb += r_unmapped.eq(s1 & ~(or_tree(list(rsel.values())) | rt_word.any()))
        m.d.sync += r_unmapped_s2.eq(r_unmapped)

        def value(r):
            if r.name == "REG_ERROR_ADDR":
                return reg_error_addr
            if r.access in ("rw", "w1c"):
                return getattr(self, f"q_{r.name}").as_value()
            return getattr(self, f"r_{r.name}").as_value() & r.mask

        # The selects and the RAM address hold still while a read is in flight, so the
        # stages run every cycle without enables; only s1 -> s2 -> rvalid say when.
        groups = []
        for g in range(0, len(readable), self.GROUP):
            part = Signal(32, name=f"rpart{g // self.GROUP}")
            m.d.sync += part.eq(or_tree(rsel[r.name].replicate(32) & value(r)
                                        for r in readable[g:g + self.GROUP]))
            groups.append(part)
        rp = mem.read_port(domain="sync")       # the bus's own port
        m.d.comb += rp.addr.eq(rt_slot)
        words = unpack(rp.data)
        table_word = or_tree(rt_word[j].replicate(32) & words[j] for j in range(tb.words))
        with m.If(s2):
            m.d.sync += [rvalid.eq(1), rdata.eq(or_tree(groups + [table_word])),
                         rresp.eq(Mux(r_unmapped_s2, RESP_SLVERR, RESP_OKAY))]
        with m.If(rvalid & bus.rready):
            m.d.sync += [rvalid.eq(0), r_busy.eq(0)]

        # ---- refused accesses: sticky bits and the offset (a write's wins a tie) --------
        err_set = Signal(32)
        m.d.comb += [err_set[f_unmapped].eq(w_unmapped | r_unmapped),
                     err_set[f_read_only].eq(w_read_only), err_set[f_refused].eq(w_refused)]
        with m.If(w_unmapped | w_read_only | w_refused):
            m.d.sync += reg_error_addr.eq(aw_addr)
        with m.Elif(r_unmapped):
            m.d.sync += reg_error_addr.eq(r_addr)

        # ---- sticky bits: set wins over clear --------------------------------------------
        for r in regs:
            if r.access != "w1c":
                continue
            q = getattr(self, f"q_{r.name}").as_value()
            sets = err_set if r.name == "REG_ERROR" else \
                getattr(self, f"set_{r.name}").as_value()
            m.d.sync += q.eq(((q & ~w1c_clear[r.name]) | sets) & r.mask)
        return m

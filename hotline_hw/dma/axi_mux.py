"""Shares the one AXI4 manager port between the DMA engines: several readers and writers."""

from amaranth import Signal, Module, Mux, Cat, Const
from amaranth.lib import wiring, fifo
from amaranth.lib.wiring import In, Out

from ..axi import axi4_signature
from ..job import first_set
from ..logic import or_tree, one_hot_index
from hotline_spec.config import DeviceConfig

__all__ = ["AxiArbiter", "read_id_bits", "id_prefixes"]

_AR = ("araddr", "arlen", "arsize", "arburst", "arcache", "arprot")
_AW = ("awaddr", "awlen", "awsize", "awburst", "awcache", "awprot")
_W = ("wdata", "wstrb", "wlast")


def read_id_bits(dcfg: DeviceConfig):
    """ID bits of the row mover (one ID per read in flight)."""
    return (dcfg.read_ids - 1).bit_length()


def id_prefixes(id_bits):
    """A prefix code for ports with ``id_bits`` (``{name: own ID bits}``).

    Returns ``(outer_bits, {name: base})``: port ``name`` owns the outer IDs ``base ..
    base + 2**id_bits[name] - 1`` (its own ID in the low bits, a prefix above them).
    ``outer_bits`` is the fewest bits that hold them all (``sum 2**bits <= 2**outer``, the
    Kraft inequality). Ports with more ID bits come first, so each base is aligned: with
    ``{"rows": 7, "lists": 1}`` rows own 0..127 (top bit 0) and lists 128..129.
    """
    order = sorted(id_bits, key=lambda name: -id_bits[name])     # stable: ties keep order
    base, bases = 0, {}
    for name in order:
        bases[name] = base
        base += 1 << id_bits[name]
    return max(0, (base - 1).bit_length()), bases


def _round_robin(m, valids, name):
    """One-hot grant among ``valids`` (a list of 1-bit values): the first requester after
    the last one granted (``last``, one-hot, updated by the caller through ``commit``)."""
    n = len(valids)
    v = Signal(n, name=f"{name}_req")
    m.d.comb += v.eq(Cat(*valids))
    if n == 1:
        return v, (lambda grant: [])
    last = Signal(n, name=f"{name}_last", init=1 << (n - 1))
    # Requesters above the last one granted: positions strictly higher than its bit.
    above = Signal(n, name=f"{name}_above")
    for i in range(n):
        m.d.comb += above[i].eq(or_tree([last[j] for j in range(i)])
                                if i else 0)
    hi_any, _, hi_one = first_set(m, v & above, f"{name}_hi")
    _, _, lo_one = first_set(m, v, f"{name}_lo")
    grant = Signal(n, name=f"{name}_pick")
    m.d.comb += grant.eq(Mux(hi_any, hi_one, lo_one))
    return grant, (lambda g: [last.eq(g)])


def _select(grant, values):
    """AND-OR multiplexer: the value whose one-hot ``grant`` bit is set (0 if none)."""
    return or_tree([Mux(grant[i], v, 0) for i, v in enumerate(values)])


class AxiArbiter(wiring.Component):
    """Several AXI4 readers and writers on one AXI4 manager port.

    Every port is a full ``axi4_signature``; a port named in ``readers`` uses its read
    channels, one named in ``writers`` its write channels (the row mover is both), the
    other channels are tied off (``ready``/``valid`` 0). Each port's own IDs travel under a
    prefix (:func:`id_prefixes`; read and write IDs are separate spaces), so responses are
    routed by ID.

    * AR: round-robin among the ports with ``arvalid``; a grant is held while the request
      waits for ``arready`` (the request stays unchanged under a raised valid). R by ID.
    * AW: the same at burst granularity (an AW is one burst). Every AW accepted queues its
      writer (``w_order`` deep, AW stops while the queue is full), and W is taken from the
      writer at the head of that queue until its ``wlast``: W never interleaves and follows
      the AW order even when AW runs bursts ahead. A writer's W beats pass only after its
      AW has been accepted. B by ID.
    * ``rready`` and ``bready`` are 1 (every reader and writer reserves room before it
      requests); the ports' own ``rready``/``bready`` are not looked at.

    Outgoing valids depend on the ports' valids and registers only, never on the
    outgoing channel's ``ready``; each port's ``ready`` is its grant AND the outgoing ready.

    Parameters
    ----------
    dcfg : DeviceConfig
        ``addr_bits``, ``bus_bits`` (and ``read_ids`` for the defaults).
    readers, writers : dict, optional
        ``{name: own ID bits}``; defaults ``{"lists": 1, "rows": read_id_bits}`` and
        ``{"rows": read_id_bits, "words": 1}``. A name in both is one port (same ID bits).
    out_id_bits : int, optional
        Outer ID width (default: the fewest that hold the prefix codes; ``read_id_bits +
        1`` for the defaults).
    w_order : int
        Accepted AWs whose W may wait (depth of the writer queue), >= 2.

    Attributes
    ----------
    <name> : In(axi4_signature(addr_bits, bus_bits, own ID bits))
        One per name (also ``ports[name]``).
    out : Out(axi4_signature(addr_bits, bus_bits, out_id_bits))
        The manager port.
    """

    def __init__(self, dcfg: DeviceConfig, readers=None, writers=None, out_id_bits=None,
                 w_order=4):
        rb = read_id_bits(dcfg)
        self.dcfg = dcfg
        self.readers = dict({"lists": 1, "rows": rb} if readers is None else readers)
        self.writers = dict({"rows": rb, "words": 1} if writers is None else writers)
        self.w_order = w_order
        for name in set(self.readers) & set(self.writers):
            if self.readers[name] != self.writers[name]:
                raise ValueError(f"AxiArbiter: port {name!r} has {self.readers[name]} read "
                                 f"and {self.writers[name]} write ID bits")
        if not self.readers and not self.writers:
            raise ValueError("AxiArbiter: no port")
        r_bits, self.read_base = id_prefixes(self.readers)
        w_bits, self.write_base = id_prefixes(self.writers)
        need = max(r_bits, w_bits, 1)
        if out_id_bits is None:
            out_id_bits = need
        elif out_id_bits < need:
            raise ValueError(f"AxiArbiter: the ports' IDs need {need} outer ID bits, not "
                             f"{out_id_bits}")
        self.out_id_bits = out_id_bits
        names = list(self.readers) + [n for n in self.writers if n not in self.readers]
        a, d = dcfg.addr_bits, dcfg.bus_bits
        members = {"out": Out(axi4_signature(a, d, out_id_bits))}
        for name in names:
            if name == "out":
                raise ValueError(f"AxiArbiter: {name!r} cannot name a port")
            bits = self.readers.get(name, self.writers.get(name))
            members[name] = In(axi4_signature(a, d, bits))
        self._names = names
        super().__init__(members)
        self.ports = {name: getattr(self, name) for name in names}

    def _route(self, m, out_id, out_valid, names, bases, widths, kind):
        """Response routing: ``{kind}valid`` to the port whose prefix ``out_id`` carries."""
        for name in names:
            port, w = self.ports[name], widths[name]
            hit = (out_id[w:] == (bases[name] >> w)) if w < len(out_id) else Const(1)
            m.d.comb += [getattr(port, f"{kind}valid").eq(out_valid & hit),
                         getattr(port, f"{kind}id").eq(out_id[:w])]

    def elaborate(self, platform):
        m = Module()
        out = self.out
        ob = self.out_id_bits

        # ---- AR: round-robin, grant held while waiting --------------------------------
        readers = list(self.readers)
        if readers:
            ports = [self.ports[n] for n in readers]
            pick, commit = _round_robin(m, [p.arvalid for p in ports], "ar")
            held = Signal()
            owner = Signal(len(ports))
            grant = Signal(len(ports))
            m.d.comb += grant.eq(Mux(held, owner, pick))
            for name in _AR:
                m.d.comb += getattr(out, name).eq(_select(grant, [getattr(p, name) for p in ports]))
            m.d.comb += [
                out.arid.eq(_select(grant, [Const(self.read_base[n], ob) | p.arid
                                            for n, p in zip(readers, ports)])),
                out.arvalid.eq((grant & Cat(*[p.arvalid for p in ports])) != 0),
            ]
            for i, p in enumerate(ports):
                m.d.comb += p.arready.eq(grant[i] & out.arready)
            m.d.sync += [held.eq(out.arvalid & ~out.arready), owner.eq(grant)]
            with m.If(out.arvalid & out.arready):
                m.d.sync += commit(grant)
            # R: by ID.
            self._route(m, out.rid, out.rvalid, readers, self.read_base, self.readers, "r")
            for p in ports:
                m.d.comb += [p.rdata.eq(out.rdata), p.rresp.eq(out.rresp), p.rlast.eq(out.rlast)]
        m.d.comb += out.rready.eq(1)

        # ---- AW: round-robin per burst; W follows the accepted AWs in order --------------
        writers = list(self.writers)
        if writers:
            ports = [self.ports[n] for n in writers]
            n = len(ports)
            m.submodules.w_order = order = fifo.SyncFIFO(width=max(1, (n - 1).bit_length()),
                                                         depth=self.w_order)
            pick, commit = _round_robin(m, [p.awvalid for p in ports], "aw")
            held = Signal()
            owner = Signal(n)
            grant = Signal(n)
            # No grant while the writer queue is full (it only fills on an accepted AW, so a
            # raised awvalid keeps its room until accepted).
            m.d.comb += grant.eq(Mux(held, owner, Mux(order.w_rdy, pick, 0)))
            for name in _AW:
                m.d.comb += getattr(out, name).eq(_select(grant, [getattr(p, name) for p in ports]))
            m.d.comb += [
                out.awid.eq(_select(grant, [Const(self.write_base[nm], ob) | p.awid
                                            for nm, p in zip(writers, ports)])),
                out.awvalid.eq((grant & Cat(*[p.awvalid for p in ports])) != 0),
            ]
            for i, p in enumerate(ports):
                m.d.comb += p.awready.eq(grant[i] & out.awready)
            aw_done = out.awvalid & out.awready
            m.d.sync += [held.eq(out.awvalid & ~out.awready), owner.eq(grant)]
            with m.If(aw_done):
                m.d.sync += commit(grant)
            m.d.comb += [order.w_en.eq(aw_done),
                         order.w_data.eq(one_hot_index(m, grant, "aw_index"))]

            # W: the writer at the head of the queue, until its wlast.
            head = Signal(n)
            for i in range(n):
                m.d.comb += head[i].eq(order.r_rdy & (order.r_data == i))
            for name in _W:
                m.d.comb += getattr(out, name).eq(_select(head, [getattr(p, name) for p in ports]))
            m.d.comb += out.wvalid.eq((head & Cat(*[p.wvalid for p in ports])) != 0)
            for i, p in enumerate(ports):
                m.d.comb += p.wready.eq(head[i] & out.wready)
            m.d.comb += order.r_en.eq(out.wvalid & out.wready & out.wlast)

            # B: by ID.
            self._route(m, out.bid, out.bvalid, writers, self.write_base, self.writers, "b")
            for p in ports:
                m.d.comb += p.bresp.eq(out.bresp)
        m.d.comb += out.bready.eq(1)
        return m

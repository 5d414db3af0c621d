"""AXI4 and AXI4-Lite interface signatures, and the flat port names of the top level.

Signatures are written from the manager's (master's) side: ``Out`` members are driven by the
manager. A block that is a subordinate (slave) takes ``In(signature)``, which flips them.
Inside the design the buses are nested interfaces (``bus.arvalid``); at the top level they
become flat ports named as bus models and vendor IP expect (``m_axi_arvalid``,
``s_axil_awaddr``): see :func:`flat_members` and :func:`connect_flat`.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, Signature

__all__ = ["axi4_signature", "axil_signature", "flat_members", "connect_flat",
           "RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR", "RESP_DECERR", "BURST_INCR"]

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
BURST_INCR = 1


def axi4_signature(addr_bits, data_bits, id_bits):
    """An AXI4 manager port with read and write channels (INCR bursts, no user signals)."""
    return Signature({
        "awid": Out(id_bits), "awaddr": Out(addr_bits), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awcache": Out(4), "awprot": Out(3),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_bits), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "arid": Out(id_bits), "araddr": Out(addr_bits), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arcache": Out(4), "arprot": Out(3),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(id_bits), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def axil_signature(addr_bits, data_bits=32):
    """An AXI4-Lite manager port (the register bus)."""
    return Signature({
        "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_bits), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def flat_members(prefix, signature, flipped=False):
    """``{f"{prefix}_{name}": member}`` for every port of ``signature`` (flipped for a
    subordinate port): the members of a top-level component with AXI-convention names."""
    sig = signature.flip() if flipped else signature
    return {f"{prefix}_{name}": member for name, member in sig.members.items()}


def connect_flat(m, component, prefix, interface):
    """Connect the flat ports ``component.<prefix>_<name>`` to the nested ``interface``
    (the port of an inner block, either direction)."""
    for name, member in interface.signature.members.items():
        outer = getattr(component, f"{prefix}_{name}")
        inner = getattr(interface, name)
        if member.flow == wiring.Out:
            m.d.comb += outer.eq(inner)
        else:
            m.d.comb += inner.eq(outer)

"""The table parameters as the core reads them: one entry per table slot, read by table index.

The host writes ``TABLE<t>_BASE_LO/_HI``, ``_STRIDE`` and ``_ROWS`` through the register bus
(:mod:`hotline_spec.registers`); :class:`~hotline_hw.csr.CsrBank` keeps them in one small RAM,
not in flip-flops, and gives each reader (the key checker's words, the row mover, the register
read-back) a read port of :func:`table_read_signature`: drive ``table`` in cycle ``n``, the
:func:`table_entry` of that slot is on ``entry`` in cycle ``n + 1`` (a synchronous RAM read,
so a reader spends one pipeline stage on it, never a 32:1 multiplexer).
"""

from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hotline_spec.config import DeviceConfig

__all__ = ["table_entry", "table_read_signature", "TABLE_WORDS"]

#: The words of a table slot in register order (``TABLE_REGISTERS`` of
#: :mod:`hotline_spec.registers`): word ``j`` is at ``TABLE_BLOCK + 16 t + 4 j``.
TABLE_WORDS = ("base_lo", "base_hi", "stride", "rows")


def table_entry(dcfg: DeviceConfig):
    """A table slot as the core uses it: row 0's bus address, bytes per row step, rows."""
    return data.StructLayout({"base": dcfg.addr_bits, "stride": 32, "rows": 32})


def table_read_signature(dcfg: DeviceConfig):
    """A reader's side of a table RAM read port (``Out`` the index, ``In`` the entry one
    cycle later)."""
    return wiring.Signature({
        "table": Out(max(1, dcfg.eal.table_bits)),
        "entry": In(table_entry(dcfg)),
    })

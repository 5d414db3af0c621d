"""Which of several error records a failed command reports."""

from amaranth import Signal

from ..job import error_record

__all__ = ["first_in_list"]


def first_in_list(m, check, read, *later):
    """The record to report, as a signal of ``m``: of the key check's and the list reader's
    records, the one earlier in the list (a read error truncates the stream, so a bad key
    behind it is never seen; a bad key ends it, so a read error behind it does not matter),
    else the first valid one of ``later`` (errors of the command's own writes, in order).

    The address compare is registered: the records are sticky and the caller reads the
    result at least one cycle after the last of them can change.
    """
    check_first = Signal()
    m.d.sync += check_first.eq(check.valid & (~read.valid | (check.addr < read.addr)))
    out = Signal(error_record())
    # Priority: the check (when first), the read, then each later record in order.
    chain = Signal(error_record())
    m.d.comb += chain.eq(0)
    for rec in reversed(later):
        with m.If(rec.valid):
            m.d.comb += chain.eq(rec)
    with m.If(check_first):
        m.d.comb += out.eq(check)
    with m.Elif(read.valid):
        m.d.comb += out.eq(read)
    with m.Elif(check.valid):
        m.d.comb += out.eq(check)
    with m.Else():
        m.d.comb += out.eq(chain)
    return out

"""What every command executor and DMA block of the device shares: the job handshake, the
error record, the first-error latch and the priority encoder.

A command executor (``hotline_hw/device/``) is started by the sequencer with a one-cycle
``start`` and its parameters, is ``busy`` until it has finished, pulses ``done`` once (after
every write it issued has its B response) and then holds its :func:`error_record` until the
next ``start``. A DMA block that reports errors keeps its own record the same way, with
:func:`record_first`, so the first error of a command is the one reported.
"""

from amaranth import Signal, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hotline_spec.commands import ErrorCause
from .logic import one_hot_index

__all__ = ["error_record", "job_signature", "record_first", "resp_cause", "first_set"]


def error_record():
    """One error: ``valid``, its :class:`~hotline_spec.commands.ErrorCause`, the
    :class:`~hotline_spec.commands.Engine` that saw it, the bus address it names (the bad
    key's, the failing burst's) and the list ``index`` of the key involved, when there is one."""
    return data.StructLayout({"valid": 1, "cause": 8, "engine": 4, "addr": 64, "index": 32})


def job_signature(params):
    """The sequencer's side of a command executor taking ``params`` (a layout)."""
    return wiring.Signature({
        "start": Out(1),
        "params": Out(params),
        "busy": In(1),
        "done": In(1),
        "error": In(error_record()),
    })


def record_first(m, record, condition, *, cause, engine, addr=0, index=0):
    """In ``m``: when ``condition`` holds and ``record`` holds no error yet, latch one.

    Clearing ``record`` (at a job's start) is the caller's: ``m.d.sync += record.valid.eq(0)``
    placed *before* this call, so that an error in the start cycle still wins.
    """
    with m.If(condition & ~record.valid):
        m.d.sync += [record.valid.eq(1), record.cause.eq(cause), record.engine.eq(engine),
                     record.addr.eq(addr), record.index.eq(index)]


def resp_cause(write, resp):
    """The :class:`ErrorCause` of an AXI error response ``resp`` (SLVERR or DECERR) on the
    read (``write`` = 0) or write side."""
    base = Mux(write, ErrorCause.WRITE_SLVERR, ErrorCause.READ_SLVERR)
    return base + (resp == 0b11)


def first_set(m, bits, name="first"):
    """The lowest set bit of ``bits``: ``(any, index, one_hot)`` as signals of ``m``.

    ``bits & -bits`` isolates it; :func:`~hotline_hw.logic.one_hot_index` encodes it.
    """
    n = len(bits)
    one_hot = Signal(n, name=f"{name}_one_hot")
    anyset = Signal(name=f"{name}_any")
    m.d.comb += [one_hot.eq(bits & (-bits)[:n]), anyset.eq(bits != 0)]
    return anyset, one_hot_index(m, one_hot, f"{name}_index"), one_hot

"""The command decoder: which executor runs a command, or why it is refused."""

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hotline_spec.commands import Opcode, ErrorCause, Engine
from hotline_spec.config import DeviceConfig
from ..job import error_record
from .command import command_layout, ExecutorKind

__all__ = ["CommandDecoder"]


class CommandDecoder(wiring.Component):
    """Purely combinational checks of a command before anything moves (``docs/device.md``,
    "Errors", refused commands), in this order: opcode, count, alignment of the key list,
    of the destination, ``ROW_BYTES``.

    Attributes
    ----------
    command : In(command_layout())
    row_bytes : In(16)
        ``ROW_BYTES`` as it will be used by the command.
    kind : Out(ExecutorKind)
        The executor that runs it (``NONE`` for FENCE and for a refused command).
    error : Out(error_record())
        ``valid`` when the command is refused: its cause, engine ``DECODER`` and the address
        it names (the misaligned one; 0 otherwise).
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        super().__init__({"command": In(command_layout()), "row_bytes": In(16),
                          "kind": Out(ExecutorKind), "error": Out(error_record())})

    def elaborate(self, platform):
        c = self.dcfg
        m = Module()
        cmd = self.command
        op = cmd.opcode
        is_rows = (op == Opcode.GATHER) | (op == Opcode.WRITE_BACK)
        is_lookup = (op == Opcode.LEARN) | (op == Opcode.LOOKUP)
        is_list = is_rows | is_lookup
        beat_mask = c.bus_bytes - 1
        rb = self.row_bytes
        bad_count = Mux(op == Opcode.DUMP, cmd.count != c.eal.entries,
                        is_list & ((cmd.count == 0) | (cmd.count > c.max_count)))
        err = self.error
        m.d.comb += err.engine.eq(Engine.DECODER)
        with m.If(op > max(Opcode)):
            m.d.comb += [err.valid.eq(1), err.cause.eq(ErrorCause.BAD_OPCODE)]
        with m.Elif(bad_count):
            m.d.comb += [err.valid.eq(1), err.cause.eq(ErrorCause.BAD_COUNT)]
        with m.Elif(is_list & (cmd.addr0[:3] != 0)):
            m.d.comb += [err.valid.eq(1), err.cause.eq(ErrorCause.MISALIGNED),
                         err.addr.eq(cmd.addr0)]
        with m.Elif((is_lookup | (op == Opcode.DUMP)) & (cmd.addr1[:3] != 0)):
            m.d.comb += [err.valid.eq(1), err.cause.eq(ErrorCause.MISALIGNED),
                         err.addr.eq(cmd.addr1)]
        with m.Elif(is_rows & ((cmd.addr1 & beat_mask) != 0)):
            m.d.comb += [err.valid.eq(1), err.cause.eq(ErrorCause.MISALIGNED),
                         err.addr.eq(cmd.addr1)]
        with m.Elif(is_rows & ((rb == 0) | ((rb & beat_mask) != 0) | (rb > c.max_row_bytes))):
            m.d.comb += [err.valid.eq(1), err.cause.eq(ErrorCause.BAD_ROW_BYTES)]
        with m.Elif(is_lookup):
            m.d.comb += self.kind.eq(ExecutorKind.LOOKUP)
        with m.Elif(is_rows):
            m.d.comb += self.kind.eq(ExecutorKind.ROWS)
        with m.Elif(op == Opcode.DUMP):
            m.d.comb += self.kind.eq(ExecutorKind.DUMP)
        with m.Elif(op == Opcode.CLEAR):
            m.d.comb += self.kind.eq(ExecutorKind.CLEAR)
        return m

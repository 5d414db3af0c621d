"""A command as the sequencer holds it, and the parameters every executor starts with."""

import enum

from amaranth.lib import data

__all__ = ["command_layout", "job_params", "ExecutorKind"]


def command_layout():
    """A command in the FIFO: the staged registers and its sequence number."""
    return data.StructLayout({"opcode": 4, "irq": 1, "count": 32, "addr0": 64, "addr1": 64,
                              "seq": 32})


def job_params():
    """What an executor is started with: the command and the control registers it reads,
    sampled when it starts (so a register write during a command does not change it)."""
    return data.StructLayout({"opcode": 4, "count": 32, "addr0": 64, "addr1": 64,
                              "row_bytes": 16, "threshold": 2})


class ExecutorKind(enum.IntEnum):
    """Which executor runs a decoded command."""

    NONE = 0     #: FENCE: nothing to run, completes at once
    LOOKUP = 1   #: LEARN, LOOKUP
    ROWS = 2     #: GATHER, WRITE_BACK
    DUMP = 3     #: DUMP
    CLEAR = 4    #: CLEAR

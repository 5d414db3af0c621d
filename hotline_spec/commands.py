"""The accelerator's command set and host-memory word formats: the one description.

The RTL sequencer (:mod:`hotline_hw.accelerator`), the golden device model of the ``model``
transport, the ``sim`` transport and ``docs/device.md`` all take opcodes, error causes and
the layouts of the 64-bit words in host memory from here. Plain Python: the host software
reads the word fields as ``(name, width)`` tuples; the gateware builds its Amaranth layouts
from the same tuples (:func:`hotline_hw.layouts.result_word`, :func:`hotline_hw.layouts.dump_word`).

A command is staged in the ``CMD_*`` registers and pushed into the command FIFO by a write
to ``CMD_SUBMIT`` (``docs/registers.md``). Commands run one after another, in submission
order; each one completes (all its writes acknowledged by the bus) before the next starts.
"""

import enum

__all__ = ["Opcode", "ErrorCause", "Engine", "KEY_WORD_BYTES", "RESULT_WORD", "DUMP_WORDS",
           "word_fields", "LIST_OPCODES", "SINGLE_PASS_OPCODES", "MAGIC", "VERSION"]

#: ``ID_MAGIC`` register value: ASCII "HOTL".
MAGIC = 0x484F544C
#: (major, minor, patch) of the register interface; ``ID_VERSION`` = major << 16 | minor << 8
#: | patch. The driver refuses a core whose major differs or whose minor is older.
VERSION = (1, 0, 0)

#: Every list word in host memory (keys, lookup results, dump entries) is 64 bits, little
#: endian.
KEY_WORD_BYTES = 8


class Opcode(enum.IntEnum):
    """``CMD_CTRL.opcode``: what a command does (``docs/device.md``, "Commands").

    ``addr0`` / ``addr1`` / ``count`` are the ``CMD_ADDR0``, ``CMD_ADDR1`` and ``CMD_COUNT``
    registers staged with it.
    """

    #: Completes once every earlier command has completed (they run in order; a fence is
    #: the point to raise an interrupt at, with ``CMD_CTRL.irq``).
    FENCE = 0
    #: Learn-mode lookups of ``count`` keys read from ``addr0``; one result word per key is
    #: written to ``addr1``.
    LEARN = 1
    #: Frozen-mode lookups (threshold ``POPULAR_MAX_RRPV``), same lists as ``LEARN``.
    LOOKUP = 2
    #: Writes the whole tag store to ``addr1``: one dump word per entry, entry ``slot`` at
    #: ``addr1 + 8 * slot``; ``count`` must equal the number of entries.
    DUMP = 3
    #: Zeroes the tag store (``sets`` cycles).
    CLEAR = 4
    #: For each of ``count`` keys at ``addr0`` (``(table << row_bits) | row``), reads the
    #: row at ``TABLE_BASE[table] + row * TABLE_STRIDE[table]`` (``ROW_BYTES`` bytes) and
    #: writes it to ``addr1 + i * ROW_BYTES``.
    GATHER = 5
    #: The reverse of ``GATHER``: reads ``addr1 + i * ROW_BYTES`` and writes it to the row
    #: of key ``i``.
    WRITE_BACK = 6


#: Opcodes whose ``addr0`` holds a key list of ``count`` words (checked before anything moves).
LIST_OPCODES = (Opcode.LEARN, Opcode.LOOKUP, Opcode.GATHER, Opcode.WRITE_BACK)
#: The list opcodes that read their key list once and check it inline: a bad key (or a failed
#: list read) ends the command after the keys before it (``docs/device.md``, "Errors").
#: WRITE_BACK changes the tables, so it checks the whole list before it moves anything.
SINGLE_PASS_OPCODES = (Opcode.LEARN, Opcode.LOOKUP, Opcode.GATHER)


class ErrorCause(enum.IntEnum):
    """``ERR_CAUSE.cause``: why the command ``ERR_COMMAND`` failed; ``ERR_ADDR`` holds the
    address named. Causes below ``READ_SLVERR`` refuse a command before it moves or changes
    anything; DMA errors stop it part-way (``docs/device.md``, "Errors")."""

    NONE = 0
    #: ``CMD_CTRL.opcode`` is not an :class:`Opcode`. ERR_ADDR: 0.
    BAD_OPCODE = 1
    #: ``count`` is zero, above ``max_count``, or (``DUMP``) not the number of entries.
    BAD_COUNT = 2
    #: ``addr0`` / ``addr1`` not aligned (8 bytes for word lists, ``bus_bytes`` for rows).
    MISALIGNED = 3
    #: ``ROW_BYTES`` is zero, above ``max_row_bytes`` or not a multiple of ``bus_bytes``.
    BAD_ROW_BYTES = 4
    #: A key names a table whose ``TABLE_BASE``/``TABLE_STRIDE`` is not a multiple of
    #: ``bus_bytes`` or whose stride is below ``ROW_BYTES``. ERR_ADDR: the key's address.
    BAD_TABLE = 5
    #: A key's row is at or beyond its table's ``TABLE_ROWS``. ERR_ADDR: the key's address.
    ROW_OUT_OF_RANGE = 6
    #: A key word has bits set above ``key_bits``. ERR_ADDR: the key's address.
    BAD_KEY = 7
    #: A read answered SLVERR / DECERR. ERR_ADDR: the burst's start address.
    READ_SLVERR = 8
    READ_DECERR = 9
    #: A write answered SLVERR / DECERR. ERR_ADDR: the burst's start address.
    WRITE_SLVERR = 10
    WRITE_DECERR = 11

    @property
    def is_dma(self):
        """A bus error (the command stopped part-way) rather than a refused command."""
        return self >= ErrorCause.READ_SLVERR


class Engine(enum.IntEnum):
    """``ERR_CAUSE.engine``: the block that found the error."""

    DECODER = 0     #: command checks before it starts
    LIST_CHECK = 1  #: the pass over the key list that checks every key before anything moves
    LIST_READ = 2   #: key / index list reads
    ROW_READ = 3    #: gather and write-back row reads
    ROW_WRITE = 4   #: gather and write-back row writes
    WORD_WRITE = 5  #: lookup result and dump word writes


#: One lookup result in host memory (64 bits), fields from bit 0 up: ``slot`` (32 bits: the
#: hot-table slot, spec section 4), ``hit`` (bit 32), the rest zero.
RESULT_WORD = (("slot", 32), ("hit", 1), ("zero", 31))

#: One tag-store entry in host memory (64 bits) at ``addr1 + 8 * slot``, per EAL policy.
#: srrip: ``tag`` in bits 0..59 (zero-extended), ``rrpv`` in bits 60..61, bit 62 zero,
#: ``valid`` in bit 63. lfu: ``tag`` in bits 0..54, ``count`` in bits 55..62
#: (zero-extended), ``valid`` in bit 63. The lfu sketch stays on the device (it matters only
#: while learning).
DUMP_WORDS = {
    "srrip": (("tag", 60), ("rrpv", 2), ("zero", 1), ("valid", 1)),
    "lfu": (("tag", 55), ("count", 8), ("valid", 1)),
}


def word_fields(fields):
    """``{name: (lsb, width)}`` of a word given as ``(name, width)`` tuples from bit 0 up."""
    out, lsb = {}, 0
    for name, width in fields:
        out[name] = (lsb, width)
        lsb += width
    return out

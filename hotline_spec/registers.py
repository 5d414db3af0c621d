"""The register map of the accelerator: described once, here.

From :func:`register_map` come the CSR decode logic (:class:`hotline_hw.csr.CsrBank`), the
constants the driver uses (it reads this description: ``sw_driver`` never spells an offset)
and ``docs/registers.md`` (:func:`registers_markdown`, written by ``make rtl`` and checked
current in CI).

Registers are 32 bits wide and 4-byte aligned. Access kinds:

``ro``   read-only: written by the core; a write answers SLVERR and sets ``REG_ERROR.read_only``.
``rw``   read-write storage with a reset value.
``wo``   write-only action: a write triggers something (the data may matter); reads give 0.
``w1c``  sticky bits set by the core; writing 1 to a bit clears it.

A read or write of an offset that is not in the map answers SLVERR, sets
``REG_ERROR.unmapped`` and changes nothing else.
"""

from dataclasses import dataclass, field

from hotline_spec.commands import MAGIC, VERSION, Opcode, ErrorCause, Engine
from hotline_spec.config import DeviceConfig

__all__ = ["Field", "Register", "RegisterMap", "register_map", "registers_markdown",
           "ID_PARAMETERS", "COUNTERS", "TABLE_BLOCK", "TABLE_STRIDE_BYTES"]

ACCESS = ("ro", "rw", "wo", "w1c")


@dataclass(frozen=True)
class Field:
    """A field of a register: bits ``lsb .. lsb + width - 1``."""

    name: str
    lsb: int
    width: int
    reset: int = 0
    doc: str = ""

    @property
    def mask(self):
        """The field's bits in the register."""
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """One 32-bit register at byte ``offset`` of the register space."""

    name: str
    offset: int
    access: str
    doc: str
    fields: tuple = ()
    group: str = ""

    def __post_init__(self):
        if self.access not in ACCESS:
            raise ValueError(f"register {self.name}: access {self.access!r} not in {ACCESS}")
        if self.offset % 4:
            raise ValueError(f"register {self.name}: offset {self.offset:#x} not 4-aligned")
        used = 0
        for f in self.fields:
            if f.lsb < 0 or f.width < 1 or f.lsb + f.width > 32 or used & f.mask:
                raise ValueError(f"register {self.name}: field {f.name} overlaps or overflows")
            used |= f.mask

    @property
    def reset(self):
        """The register's value after reset (``rw`` and ``w1c``; 0 for the others)."""
        value = 0
        for f in self.fields:
            value |= (f.reset << f.lsb) & f.mask
        return value

    @property
    def mask(self):
        """The bits that exist (the union of the fields; all 32 when there is no field)."""
        if not self.fields:
            return 0xFFFF_FFFF
        value = 0
        for f in self.fields:
            value |= f.mask
        return value

    def field(self, name):
        """The :class:`Field` called ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")


def _whole(doc, reset=0, width=32):
    return (Field("value", 0, width, reset, doc),)


#: ``(name, value(config), doc)`` of the ID block's parameter registers, in offset order
#: from ``0x010``. The driver compares each with its own configuration at open.
ID_PARAMETERS = (
    ("P_LANES", lambda c: c.eal.lanes, "lookup lanes"),
    ("P_BANKS", lambda c: c.eal.banks, "tag-store banks"),
    ("P_SETS", lambda c: c.eal.sets, "sets per bank"),
    ("P_WAYS", lambda c: c.eal.ways, "ways per set"),
    ("P_TABLE_BITS", lambda c: c.eal.table_bits, "table-id bits of a key"),
    ("P_ROW_BITS", lambda c: c.eal.row_bits, "row bits of a key"),
    ("P_HASH_ROUNDS", lambda c: c.eal.hash_rounds, "Feistel rounds"),
    ("P_BEATS_IN_FLIGHT", lambda c: c.eal.beats_in_flight, "lookup beats in flight"),
    ("P_BUS_BITS", lambda c: c.bus_bits, "DMA data bus width"),
    ("P_ADDR_BITS", lambda c: c.addr_bits, "DMA address width"),
    ("P_READ_IDS", lambda c: c.read_ids, "row reads in flight (AXI IDs)"),
    ("P_BURST_BEATS", lambda c: c.burst_beats, "longest DMA burst, beats"),
    ("P_MAX_ROW_BYTES", lambda c: c.max_row_bytes, "largest ROW_BYTES"),
    ("P_CMD_DEPTH", lambda c: c.cmd_depth, "command FIFO depth"),
    ("P_MAX_COUNT", lambda c: c.max_count, "most list entries per command"),
    ("P_MAX_TABLES", lambda c: c.max_tables, "table register slots"),
    ("P_WORD_WRITES", lambda c: c.word_writes, "result / dump words in write bursts in flight"),
)

#: ``(name, doc)`` of the 64-bit event counters (``<name>_LO`` then ``<name>_HI`` from
#: ``0x200``). Read HI, LO, HI again and retry if HI changed. ``COUNTER_RESET`` zeroes them.
COUNTERS = (
    ("LOOKUPS", "keys looked up (LEARN and LOOKUP commands)"),
    ("HITS", "lookups that hit (learn: key present; frozen: popular)"),
    ("ROWS_GATHERED", "rows moved by completed GATHER commands"),
    ("ROWS_WRITTEN", "rows moved by completed WRITE_BACK commands"),
    ("BYTES_READ", "bytes of read data accepted on m_axi (R beats x bus bytes)"),
    ("BYTES_WRITTEN", "bytes written on m_axi (W beats, enabled strobes)"),
    ("READ_STALL_CYCLES", "cycles with m_axi_arvalid high and m_axi_arready low"),
    ("WRITE_STALL_CYCLES", "cycles with awvalid & !awready or wvalid & !wready on m_axi"),
    ("COMMANDS_COMPLETED", "commands completed, with or without error"),
    ("ERRORS", "commands that failed (refused or DMA error)"),
    ("CYCLES", "clock cycles since reset or COUNTER_RESET"),
)

#: Table register block: slot ``t`` at ``TABLE_BLOCK + t * TABLE_STRIDE_BYTES``.
TABLE_BLOCK = 0x400
TABLE_STRIDE_BYTES = 16
TABLE_REGISTERS = (
    ("BASE_LO", "bus address of the table's row 0, bits 31..0 (multiple of bus_bytes)"),
    ("BASE_HI", "bus address of the table's row 0, bits 63..32"),
    ("STRIDE", "bytes from one row to the next (multiple of bus_bytes, >= ROW_BYTES)"),
    ("ROWS", "rows in the table; a key with row >= ROWS is refused (0: table unused)"),
)


class RegisterMap:
    """The registers of one :class:`~hotline_spec.config.DeviceConfig`, by name and offset."""

    def __init__(self, config, registers):
        self.config = config
        self.registers = tuple(sorted(registers, key=lambda r: r.offset))
        self._by_name = {}
        self._by_offset = {}
        for r in self.registers:
            if r.name in self._by_name or r.offset in self._by_offset:
                raise ValueError(f"register {r.name} at {r.offset:#x} is defined twice")
            self._by_name[r.name] = r
            self._by_offset[r.offset] = r
        top = 1 << config.csr_addr_bits
        if self.registers[-1].offset >= top:
            raise ValueError(f"register {self.registers[-1].name} at "
                             f"{self.registers[-1].offset:#x} is beyond the {top}-byte space")

    def __getitem__(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no register called {name!r}") from None

    def __contains__(self, name):
        return name in self._by_name

    def __iter__(self):
        return iter(self.registers)

    def at(self, offset):
        """The register at ``offset``, or ``None``."""
        return self._by_offset.get(offset)

    def offset(self, name):
        """Byte offset of register ``name``."""
        return self[name].offset

    def table(self, t, what):
        """Name of table slot ``t``'s register ``what`` (``BASE_LO``, ``BASE_HI``,
        ``STRIDE``, ``ROWS``)."""
        return f"TABLE{t}_{what}"

    def id_values(self):
        """``{name: value}`` of the ID block that this configuration's core reports."""
        values = {"ID_MAGIC": MAGIC,
                  "ID_VERSION": VERSION[0] << 16 | VERSION[1] << 8 | VERSION[2]}
        for name, value, _ in ID_PARAMETERS:
            values[name] = value(self.config)
        return values


def register_map(config: DeviceConfig) -> RegisterMap:
    """The register map of ``config`` (the layout is the same for every configuration; the
    ID values, reset values and the number of table slots follow the parameters)."""
    if not isinstance(config, DeviceConfig):
        raise TypeError(f"config must be a DeviceConfig, not {type(config).__name__}")
    c = config
    regs = [
        Register("ID_MAGIC", 0x000, "ro", f"magic number {MAGIC:#010x} (ASCII 'HOTL')",
                 _whole("magic"), "id"),
        Register("ID_VERSION", 0x004, "ro", "register interface version",
                 (Field("patch", 0, 8, doc="patch"), Field("minor", 8, 8, doc="minor"),
                  Field("major", 16, 8, doc="major")), "id"),
    ]
    for i, (name, _, doc) in enumerate(ID_PARAMETERS):
        regs.append(Register(name, 0x010 + 4 * i, "ro", f"elaboration parameter: {doc}",
                             _whole(doc), "id"))
    opcodes = ", ".join(f"{o.value} {o.name}" for o in Opcode)
    causes = ", ".join(f"{e.value} {e.name}" for e in ErrorCause)
    engines = ", ".join(f"{e.value} {e.name}" for e in Engine)
    regs += [
        Register("CONTROL", 0x080, "rw", "global control",
                 (Field("irq_enable", 0, 1, 0, "drive `irq` while IRQ_STATUS has a bit set"),),
                 "control"),
        Register("STATUS", 0x084, "ro", "core state",
                 (Field("busy", 0, 1, doc="a command runs or is queued, or the reset clear runs"),
                  Field("init", 1, 1, doc="the tag store is being cleared after reset; commands "
                                          "wait"),
                  Field("halted", 2, 1, doc="a command failed: see ERR_*; write ERR_ACK"),
                  Field("reg_error", 3, 1, doc="REG_ERROR has a bit set")), "control"),
        Register("IRQ_STATUS", 0x088, "w1c", "interrupt causes (sticky; write 1 to clear)",
                 (Field("done", 0, 1, doc="a command with CMD_CTRL.irq completed"),
                  Field("error", 1, 1, doc="a command failed")), "control"),
        Register("POPULAR_MAX_RRPV", 0x08C, "rw", "frozen-mode popularity threshold (spec 4)",
                 (Field("value", 0, 2, c.eal.popular_max_rrpv, "0..3"),), "control"),
        Register("ROW_BYTES", 0x090, "rw", "bytes per row moved by GATHER / WRITE_BACK",
                 (Field("value", 0, 16, c.bus_bytes,
                        f"multiple of bus_bytes ({c.bus_bytes}), <= {c.max_row_bytes}"),),
                 "control"),
        Register("COUNTER_RESET", 0x094, "wo", "write 1 to bit 0: zero every counter",
                 (Field("reset", 0, 1, doc="zero the counters"),), "control"),
        Register("REG_ERROR", 0x0A0, "w1c", "register-access errors (sticky; write 1 to clear)",
                 (Field("unmapped", 0, 1, doc="an access to an offset not in the map"),
                  Field("read_only", 1, 1, doc="a write to a read-only register"),
                  Field("refused", 2, 1, doc="CMD_SUBMIT while the command FIFO was full")),
                 "control"),
        Register("REG_ERROR_ADDR", 0x0A4, "ro", "offset of the latest refused register access",
                 _whole("offset", width=c.csr_addr_bits), "control"),
        Register("ERR_CAUSE", 0x0B0, "ro", "why the failed command failed",
                 (Field("cause", 0, 8, doc=f"ErrorCause: {causes}"),
                  Field("engine", 8, 4, doc=f"Engine: {engines}")), "error"),
        Register("ERR_COMMAND", 0x0B4, "ro",
                 "sequence number of the failed command (CMD_SUBMITTED before it was pushed)",
                 _whole("sequence"), "error"),
        Register("ERR_ADDR_LO", 0x0B8, "ro", "address the error names, bits 31..0",
                 _whole("address"), "error"),
        Register("ERR_ADDR_HI", 0x0BC, "ro", "address the error names, bits 63..32",
                 _whole("address"), "error"),
        Register("ERR_ACK", 0x0C0, "wo",
                 "write 1 to bit 0: clear the error, drop the queued commands, resume",
                 (Field("ack", 0, 1, doc="acknowledge"),), "error"),
        Register("CMD_CTRL", 0x100, "rw", "staged command: opcode and flags",
                 (Field("opcode", 0, 4, doc=f"Opcode: {opcodes}"),
                  Field("irq", 8, 1, doc="set IRQ_STATUS.done when this command completes")),
                 "command"),
        Register("CMD_COUNT", 0x104, "rw", "staged command: list entries", _whole("count"),
                 "command"),
        Register("CMD_ADDR0_LO", 0x108, "rw", "staged command: key / index list address 31..0",
                 _whole("address"), "command"),
        Register("CMD_ADDR0_HI", 0x10C, "rw", "staged command: key / index list address 63..32",
                 _whole("address"), "command"),
        Register("CMD_ADDR1_LO", 0x110, "rw",
                 "staged command: result / row buffer / dump address 31..0", _whole("address"),
                 "command"),
        Register("CMD_ADDR1_HI", 0x114, "rw",
                 "staged command: result / row buffer / dump address 63..32",
                 _whole("address"), "command"),
        Register("CMD_SUBMIT", 0x118, "wo",
                 "any write pushes the staged command into the FIFO (SLVERR when full)",
                 _whole("ignored"), "command"),
        Register("CMD_FREE", 0x11C, "ro", "free command FIFO slots", _whole("slots"), "command"),
        Register("CMD_SUBMITTED", 0x120, "ro", "commands accepted since reset (wraps)",
                 _whole("count"), "command"),
        Register("CMD_COMPLETED", 0x124, "ro",
                 "commands completed since reset, with or without error (wraps)",
                 _whole("count"), "command"),
        Register("CMD_DROPPED", 0x128, "ro", "queued commands dropped by ERR_ACK (wraps)",
                 _whole("count"), "command"),
    ]
    for i, (name, doc) in enumerate(COUNTERS):
        regs.append(Register(f"{name}_LO", 0x200 + 8 * i, "ro", f"{doc}, bits 31..0",
                             _whole("count"), "counter"))
        regs.append(Register(f"{name}_HI", 0x204 + 8 * i, "ro", f"{doc}, bits 63..32",
                             _whole("count"), "counter"))
    for t in range(c.max_tables):
        for j, (what, doc) in enumerate(TABLE_REGISTERS):
            regs.append(Register(f"TABLE{t}_{what}", TABLE_BLOCK + TABLE_STRIDE_BYTES * t + 4 * j,
                                 "rw", doc, _whole(what.lower()), "table"))
    return RegisterMap(config, regs)


_GROUPS = (("id", "ID block"), ("control", "Control and status"), ("error", "Command errors"),
           ("command", "Command staging and completion"), ("counter", "Counters"),
           ("table", "Table slots"))


def registers_markdown(config: DeviceConfig) -> str:
    """``docs/registers.md`` for ``config``: every register and field with offset, access,
    reset value and meaning."""
    rmap = register_map(config)
    out = ["# Hotline register map",
           "",
           "Generated by `make rtl` from `hotline_spec/registers.py` (do not edit; CI checks it "
           "is current).",
           f"Configuration: `{config.describe()}`.",
           "",
           "Registers are 32 bits, little endian, on the AXI4-Lite slave `s_axil_*`. Access: "
           "`ro` read-only (a write answers SLVERR and sets `REG_ERROR.read_only`), `rw` "
           "storage, `wo` action on write (reads return 0), `w1c` sticky bits cleared by "
           "writing 1. An offset not listed answers SLVERR and sets `REG_ERROR.unmapped`; "
           "no other state changes. Commands and errors: `docs/device.md`.",
           ""]
    for group, title in _GROUPS:
        regs = [r for r in rmap if r.group == group]
        out += [f"## {title}", ""]
        if group == "table":
            out += [f"{config.max_tables} slots, one per table id `t`: slot `t` at "
                    f"`{TABLE_BLOCK:#05x} + {TABLE_STRIDE_BYTES} * t`. Reset value 0.", "",
                    "| offset in slot | name | access | meaning |", "|---|---|---|---|"]
            for j, (what, doc) in enumerate(TABLE_REGISTERS):
                out.append(f"| `{4 * j:#04x}` | `TABLE<t>_{what}` | rw | {doc} |")
            out.append("")
            continue
        out += ["| offset | name | access | reset | field | bits | meaning |",
                "|---|---|---|---|---|---|---|"]
        for r in regs:
            reset = f"`{r.reset:#x}`" if r.access in ("rw", "w1c") else (
                f"`{rmap.id_values()[r.name]:#x}`" if r.name in rmap.id_values() else "-")
            for k, f in enumerate(r.fields):
                bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
                head = (f"`{r.offset:#05x}` | `{r.name}` | {r.access} | {reset}" if k == 0
                        else " | | |")
                if k:
                    meaning = f.doc
                elif len(r.fields) == 1 and (f.doc in r.doc or f.name == "value"):
                    meaning = r.doc
                else:
                    meaning = f"{r.doc}; {f.name}: {f.doc}"
                out.append(f"| {head} | `{f.name}` | {bits} | {meaning} |")
        out.append("")
    return "\n".join(out) + "\n"

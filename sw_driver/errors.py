"""Errors raised by the Hotline host driver (``docs/driver.md``, "Errors").

Every message names the offending value and where it was found (table, row, position, buffer),
so that a failing training run can be traced to its input without a debugger.

* :class:`TableSpecError` -- a bad table description (``table_rows``, ``dim``).
* :class:`IndexOutOfRangeError` -- a looked-up row outside its table.
* :class:`ScheduleError` -- a schedule and the buffers handed with it disagree.
* :class:`DeviceStateError` -- a call in the wrong state (schedule before freeze, use after
  close, ...).
* :class:`DeviceCommandError` -- the accelerator (or the ``model`` transport's copy of its
  checks) refused or stopped a command: ``ERR_CAUSE`` / ``ERR_COMMAND`` / ``ERR_ADDR``.
* :class:`TransportError` -- the link to the device failed (a simulator that did not build,
  crashed or stopped answering); :class:`DeviceMismatchError` -- the core's ID block
  differs from the driver's :class:`~hotline_spec.config.DeviceConfig`.

The first three are :class:`ValueError` subclasses, the others :class:`RuntimeError`.
"""

__all__ = ["DriverError", "TableSpecError", "IndexOutOfRangeError", "ScheduleError",
           "DeviceStateError", "DeviceCommandError", "TransportError", "DeviceMismatchError"]


class DriverError(Exception):
    """Base class of every error the driver raises on purpose (catch-all for callers)."""


class TableSpecError(DriverError, ValueError):
    """A bad table description: ``table_rows`` that is empty, has a non-integer or
    non-positive entry, more tables than ``2**config.table_bits`` or a table with more than
    ``2**config.row_bits`` rows; or a bad embedding ``dim``. The message names the table and
    the value."""


class IndexOutOfRangeError(DriverError, ValueError):
    """A lookup ``(table, row)`` with ``row`` outside ``0 <= row < table_rows[table]``.

    Attributes ``table``, ``row``, ``position`` (the ``(input, table)`` position in the batch)
    and ``limit`` (``table_rows[table]``) hold the first offending lookup; the message names
    them all.
    """

    def __init__(self, table, row, position, limit, what="sparse"):
        self.table = int(table)
        self.row = int(row)
        self.position = tuple(int(p) for p in position)
        self.limit = int(limit)
        super().__init__(
            f"{what}[{self.position[0]}, {self.position[1]}]: row {self.row} is out of range "
            f"for table {self.table}: must be 0 <= row < {self.limit} "
            f"(table_rows[{self.table}])")


class ScheduleError(DriverError, ValueError):
    """A schedule and the buffers passed with it disagree (wrong shape, dtype, device, too
    small a staging buffer, a schedule from another device, ...). The message names the
    buffer, what it is and what was expected."""


class DeviceStateError(DriverError, RuntimeError):
    """A driver call in the wrong state: ``schedule`` before ``freeze``, ``learn`` while
    frozen, or any call after ``close``. The message names the call and the state."""


class DeviceCommandError(DriverError, RuntimeError):
    """A command the device refused (causes below ``READ_SLVERR``: nothing moved) or stopped
    part-way (bus errors), as ``hotline_spec/commands.py`` defines them.

    Attributes: ``cause`` (:class:`~hotline_spec.commands.ErrorCause`), ``engine``
    (:class:`~hotline_spec.commands.Engine`), ``opcode`` (:class:`~hotline_spec.commands.Opcode`),
    ``sequence`` (the command's sequence number, ``ERR_COMMAND``), ``address``
    (``ERR_ADDR``: the bus address the error names) and ``index`` (the key's position in the
    command's list when the cause names a key -- ``BAD_KEY``, ``BAD_TABLE``,
    ``ROW_OUT_OF_RANGE`` -- else ``None``). ``detail`` is an optional extra clause (the
    offending key, the limit).
    """

    def __init__(self, cause, engine, opcode, sequence, address, index=None, detail=""):
        from hotline_spec.commands import Engine, ErrorCause, Opcode
        self.cause = _enum(ErrorCause, cause)
        self.engine = _enum(Engine, engine)
        self.opcode = _enum(Opcode, opcode)
        self.sequence = int(sequence)
        self.address = int(address)
        self.index = None if index is None else int(index)
        self.detail = detail
        name = lambda e: e.name if hasattr(e, "name") else str(e)
        where = f", key index {self.index}" if self.index is not None else ""
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"device command {name(self.opcode)} (sequence {self.sequence}) failed: "
            f"{name(self.cause)} in {name(self.engine)} at address {self.address:#x}{where}"
            f"{extra}")


def _enum(cls, value):
    try:
        return cls(int(value))
    except ValueError:
        return int(value)


class TransportError(DriverError, RuntimeError):
    """The transport's link to the device failed: the simulator did not build, exited or
    stopped answering, a register access answered an unexpected bus error, ... The message is
    one line and names the log file to read when there is one (``log_path``)."""

    def __init__(self, message, log_path=None):
        self.log_path = None if log_path is None else str(log_path)
        if log_path is not None:
            message = f"{message} (log: {log_path})"
        super().__init__(message)


class DeviceMismatchError(TransportError):
    """The core's ID block (``ID_MAGIC``, ``ID_VERSION``, the ``P_*`` parameters) differs
    from the driver's :class:`~hotline_spec.config.DeviceConfig`; the message names the
    register, the core's value and the expected one."""

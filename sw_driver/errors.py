"""Errors raised by the Hotline host driver (``docs/driver.md``, "Errors").

Every message names the offending value and where it was found (table, row, position, buffer),
so that a failing training run can be traced to its input without a debugger.

* :class:`TableSpecError` -- a bad table description (``table_rows``, ``dim``).
* :class:`IndexOutOfRangeError` -- a looked-up row outside its table.
* :class:`ScheduleError` -- a schedule and the buffers handed with it disagree.
* :class:`DeviceStateError` -- a call in the wrong state (schedule before freeze, use after
  close, ...).

The first three are :class:`ValueError` subclasses, the last a :class:`RuntimeError`.
"""

__all__ = ["DriverError", "TableSpecError", "IndexOutOfRangeError", "ScheduleError",
           "DeviceStateError"]


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

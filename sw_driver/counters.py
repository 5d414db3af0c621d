"""Driver counters (``docs/driver.md``, "Counters")."""

from dataclasses import asdict, dataclass, fields, replace

__all__ = ["Counters"]


@dataclass
class Counters:
    """Running totals of one :class:`~sw_driver.driver.HotlineDevice` since it was opened or
    its counters were last reset. Every field is a sum over the working sets scheduled (or
    gathered / written back):

    ``lookups``
        lookups scheduled (``n_inputs * n_tables`` per working set);
    ``unique``
        distinct keys ``(table, row)`` per working set, summed over working sets
        (``Schedule.n_unique``: distinct hot rows read + ``n_cold``);
    ``hits``
        lookups that hit the hot table (frozen-mode hits);
    ``popular_inputs``
        inputs all of whose lookups hit (spec section 6);
    ``inputs``
        inputs scheduled;
    ``cold_rows``
        entries of the cold lists (``n_cold``, distinct per working set);
    ``bytes_gathered``
        bytes copied host table -> staging by ``gather``;
    ``bytes_written_back``
        bytes copied back to the host table by ``write_back``;
    ``working_sets``
        ``schedule`` calls;
    ``early_ends``
        schedules the de-dup table's bank-capacity rule ended before their inputs ran out
        (``Schedule.ended_early``; docs/spec.md section 7.5).
    """

    lookups: int = 0
    unique: int = 0
    hits: int = 0
    popular_inputs: int = 0
    inputs: int = 0
    cold_rows: int = 0
    bytes_gathered: int = 0
    bytes_written_back: int = 0
    working_sets: int = 0
    early_ends: int = 0

    def as_dict(self):
        """The counters as a plain ``{name: int}`` dict (field order)."""
        return asdict(self)

    def reset(self):
        """Set every counter to zero, in place."""
        for f in fields(self):
            setattr(self, f.name, 0)

    def copy(self):
        """An independent snapshot."""
        return replace(self)

    @property
    def hit_rate(self):
        """``hits / lookups`` (0.0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def popular_fraction(self):
        """``popular_inputs / inputs`` (0.0 before any input)."""
        return self.popular_inputs / self.inputs if self.inputs else 0.0

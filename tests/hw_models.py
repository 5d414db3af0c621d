"""Small simulation models shared by the Amaranth-simulator tests of the device's blocks."""

__all__ = ["table_ram"]


def table_ram(ports, entry_of):
    """An Amaranth-simulator process serving table read ports (``hotline_hw/tables.py``) as
    the register file's table RAM does: the index driven in one cycle, its entry
    ``entry_of(t) = (base, stride, rows)`` on ``entry`` in the next."""
    async def process(ctx):
        async for _, _, *indices in ctx.tick().sample(*[p.table for p in ports]):
            for port, t in zip(ports, indices):
                base, stride, rows = entry_of(t)
                ctx.set(port.entry.base, base)
                ctx.set(port.entry.stride, stride)
                ctx.set(port.entry.rows, rows)
    return process

"""DMA engines of the accelerator: blocks that move data between host memory and the core,
one file each (e.g. :mod:`.row_mover`: :class:`RowMover`, the gather / write-back engine
that copies embedding-table rows between their tables and a contiguous row buffer).
"""

from .row_mover import RowMover

__all__ = ["RowMover"]

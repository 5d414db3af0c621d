"""Table-size presets for the real data sets and scaled-down copies for tests."""

from __future__ import annotations

import math

#: Rows per categorical table (C1..C26) of the Criteo Kaggle (Display Advertising Challenge)
#: set, as used by DLRM; 33,762,577 rows in all.
CRITEO_KAGGLE_TABLE_SIZES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)

#: Rows per Avazu categorical field when one size serves all 21 fields (the hashing trick:
#: values of larger fields share rows). A power of two well inside the accelerator's default
#: 24-bit row field; 21 x 2**20 = 22 M rows, the order of the Criteo Kaggle tables.
AVAZU_DEFAULT_TABLE_SIZE: int = 2**20


def scale_table_sizes(
    sizes: tuple[int, ...], scale: float, min_rows: int = 16
) -> tuple[int, ...]:
    """Scale table sizes by ``scale`` (rounding up), keeping at least ``min(n, min_rows)`` rows.

    Small tables stay small but not degenerate, so a scaled-down preset keeps the shape of the
    original: a few huge tables and many tiny ones.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return tuple(max(math.ceil(n * scale), min(n, min_rows)) for n in sizes)


#: The Criteo Kaggle shape at 1/100 scale (337,760 rows): for tests and quick calibration runs.
CRITEO_KAGGLE_SMALL_TABLE_SIZES: tuple[int, ...] = scale_table_sizes(
    CRITEO_KAGGLE_TABLE_SIZES, 1e-2
)

"""Click-log data for Hotline: real-data readers (Criteo TSV, Avazu CSV, any delimited log
described column by column), streams for logs larger than memory, and a calibrated synthetic
generator, all producing `ClickDataset` (labels, dense features, one row per table).

See docs/data.md for formats, mappings, the synthetic model and how tests find the real data.
"""

from .avazu import parse_avazu, read_avazu
from .criteo import parse_criteo, read_criteo
from .dataset import ClickDataset
from .delimited import (AVAZU_FORMAT, CRITEO_FORMAT, ClickLogFormat, ColumnSpec, FormatSpecError,
                        as_format, parse_click_log, read_click_log)
from .errors import DataFormatError
from .locate import find_shared_data, shared_data_roots
from .popularity import PopularShare, hot_set, lookup_keys, popular_share
from .presets import (
    AVAZU_DEFAULT_TABLE_SIZE,
    CRITEO_KAGGLE_SMALL_TABLE_SIZES,
    CRITEO_KAGGLE_TABLE_SIZES,
    scale_table_sizes,
)
from .stream import (ClickLogLoader, ClickLogStream, SyntheticClickStream, expand_paths,
                     stream_loader)
from .synthetic import (
    CalibrationError,
    CalibrationResult,
    SyntheticClickGenerator,
    SyntheticConfig,
    calibrate,
    criteo_kaggle_generator,
    measure_share,
)
from .tables import MAPPINGS, RawClickLog, TableStats, map_keys, table_stats, table_warnings

__all__ = [
    "AVAZU_DEFAULT_TABLE_SIZE", "AVAZU_FORMAT", "CRITEO_FORMAT", "CRITEO_KAGGLE_SMALL_TABLE_SIZES",
    "CRITEO_KAGGLE_TABLE_SIZES", "MAPPINGS", "CalibrationError", "CalibrationResult",
    "ClickDataset", "ClickLogFormat", "ClickLogLoader", "ClickLogStream", "ColumnSpec",
    "DataFormatError", "FormatSpecError", "PopularShare", "RawClickLog",
    "SyntheticClickGenerator", "SyntheticClickStream", "SyntheticConfig", "TableStats",
    "as_format", "calibrate", "criteo_kaggle_generator", "expand_paths", "find_shared_data",
    "hot_set", "lookup_keys", "map_keys", "measure_share", "parse_avazu", "parse_click_log",
    "parse_criteo", "popular_share", "read_avazu", "read_click_log", "read_criteo",
    "scale_table_sizes", "shared_data_roots", "stream_loader", "table_stats", "table_warnings",
]

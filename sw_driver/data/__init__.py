"""Click-log data for Hotline: real-data readers (Criteo TSV, Avazu CSV) and a calibrated
synthetic generator, all producing `ClickDataset` (labels, dense features, one row per table).

See docs/data.md for formats, mappings, the synthetic model and how tests find the real data.
"""

from .avazu import read_avazu
from .criteo import read_criteo
from .dataset import ClickDataset
from .errors import DataFormatError
from .locate import find_shared_data, shared_data_roots
from .popularity import PopularShare, hot_set, lookup_keys, popular_share
from .presets import (
    AVAZU_DEFAULT_TABLE_SIZE,
    CRITEO_KAGGLE_SMALL_TABLE_SIZES,
    CRITEO_KAGGLE_TABLE_SIZES,
    scale_table_sizes,
)
from .synthetic import (
    CalibrationError,
    CalibrationResult,
    SyntheticClickGenerator,
    SyntheticConfig,
    calibrate,
    criteo_kaggle_generator,
    measure_share,
)

__all__ = [
    "AVAZU_DEFAULT_TABLE_SIZE", "CRITEO_KAGGLE_SMALL_TABLE_SIZES", "CRITEO_KAGGLE_TABLE_SIZES",
    "CalibrationError", "CalibrationResult", "ClickDataset", "DataFormatError", "PopularShare",
    "SyntheticClickGenerator", "SyntheticConfig", "calibrate", "criteo_kaggle_generator",
    "find_shared_data", "hot_set", "lookup_keys", "measure_share", "popular_share",
    "read_avazu", "read_criteo", "scale_table_sizes", "shared_data_roots",
]

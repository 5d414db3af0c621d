"""The PyTorch golden model of the Hotline lookup path: the reference the RTL must match bit
for bit (``docs/spec.md``).

* :mod:`.feistel` -- keys (spec section 2) and the Feistel hash and its inverse (section 3).
* :mod:`.access_logger` -- the EAL tag store: learn and frozen modes (section 4), popular rows
  and the hot-table layout (section 5), the ``dump`` order (section 8).
* :mod:`.learner` -- learn mode for both policies (srrip, lfu): the key-by-key reference and
  the compiled loop the model uses.
* :mod:`.fragmenter` -- the input classifier (section 6) and the fragmenter (section 7).
* :mod:`.dedup` -- the de-dup table's bank rule and where a working set ends (section 7.5).
"""

from .access_logger import EAL, AccessLogger, DumpBeat, LookupResult, meta_name, popular_entries
from .feistel import (feistel_hash, feistel_hash_int, feistel_unhash, feistel_unhash_int,
                      fields_from_hash, hash_fields, hash_from_fields, key_from_fields,
                      make_keys, sparse_keys, split_keys)
from .dedup import dedup_bank, dedup_bucket, dedup_cut, dedup_hash
from .fragmenter import (WorkingSetSchedule, classify_inputs, fragment, fragment_stream,
                         iter_working_sets)

__all__ = ["AccessLogger", "EAL", "DumpBeat", "LookupResult", "meta_name", "popular_entries",
           "feistel_hash", "feistel_unhash", "feistel_hash_int", "feistel_unhash_int",
           "fields_from_hash", "hash_fields", "hash_from_fields", "key_from_fields",
           "make_keys", "sparse_keys", "split_keys",
           "WorkingSetSchedule", "classify_inputs", "fragment", "fragment_stream", "iter_working_sets",
           "dedup_bank", "dedup_bucket", "dedup_cut", "dedup_hash"]

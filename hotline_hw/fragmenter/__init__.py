"""The input classifier and the working-set fragmenter (docs/spec.md sections 6, 7, 7.5).

* :mod:`.classifier` -- :class:`InputClassifier`: which lanes end an input, popular or not.
* :mod:`.dedup_table` -- :class:`DedupTable`: banked, bucketised, linearly probed hash table.
* :mod:`.fragmenter` -- :class:`Fragmenter`: lookups in, the schedule's streams out.
* :mod:`.chain` -- :class:`FragmentChain`: lookup engine -> classifier -> fragmenter.
* :mod:`.layouts` -- the streams' payload layouts.
"""

from .chain import FragmentChain
from .classifier import InputClassifier
from .dedup_table import DedupTable
from .fragmenter import Fragmenter

__all__ = ["FragmentChain", "InputClassifier", "DedupTable", "Fragmenter"]

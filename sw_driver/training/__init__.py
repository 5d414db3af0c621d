"""DLRM training on top of the Hotline driver (``docs/training.md``).

* :mod:`.dlrm` -- the DLRM model (embeddings come in gathered).
* :mod:`.modes` -- embedding storage: ``gpu-only``, ``hybrid``, ``hotline``.
* :mod:`.trainer` -- :class:`Trainer`: one training loop for the three modes (checkpoints,
  re-learning).
* :mod:`.distributed` -- data parallelism over ``torch.distributed``.
* :mod:`.metrics` -- ROC AUC (ranks) and log loss.
* :mod:`.timing` -- per-phase timings (CUDA events / perf_counter).
"""

from .dlrm import DLRM
from .metrics import log_loss, roc_auc
from .modes import MODES, eal_config_for_budget, init_table, table_offsets
from .timing import PhaseTimer
from .trainer import DeviceData, EpochStats, Trainer

__all__ = ["DLRM", "MODES", "DeviceData", "EpochStats", "PhaseTimer", "Trainer",
           "eal_config_for_budget", "init_table", "log_loss", "roc_auc", "table_offsets"]
